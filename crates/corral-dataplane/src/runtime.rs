//! The live set of sandboxes and their lifecycles: start (admitted in arrival
//! order), exit, stop, forget. Each sandbox's transitions are serialized by
//! its own lock, so a stop that races a start or an exit is reported once and
//! correctly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use corral_core::SandboxSpec;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{info_span, warn, Instrument};

use crate::apply::{Action, Plan};
use crate::cursor::{Change, CursorStore};
use crate::driver::{Driver, DriverError, ExecOutput, ExecSpec, Started};
use crate::events::{Event, EventBuffer};
use crate::pool::PoolManager;
use crate::record::{Record, Status};
use crate::startslog::StartsLog;
use crate::tasks::TaskSet;
use crate::DataplaneError;

/// How long a stop waits for the driver to confirm the sandbox is gone.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub struct Runtime {
    pub driver: Arc<dyn Driver>,
    pub events: Arc<EventBuffer>,
    pub pools: Arc<PoolManager>,
    pub tasks: TaskSet,
    store: Arc<CursorStore>,
    starts_log: StartsLog,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Every id ever started on this data dir (from `starts.log`).
    started: Mutex<HashSet<String>>,
    start_queue: mpsc::UnboundedSender<String>,
}

pub struct Sandbox {
    pub id: String,
    pub spec: SandboxSpec,
    state: Mutex<State>,
    /// Held across each transition (start, exit handling, stop).
    life: tokio::sync::Mutex<()>,
}

struct State {
    status: Status,
    /// Set once running: turns true when the driver reports the end.
    ended: Option<watch::Receiver<bool>>,
}

impl Sandbox {
    fn new(id: String, record: Record) -> Arc<Self> {
        Arc::new(Sandbox {
            id,
            spec: record.spec,
            state: Mutex::new(State {
                status: record.status,
                ended: None,
            }),
            life: tokio::sync::Mutex::new(()),
        })
    }

    pub fn status(&self) -> Status {
        self.state.lock().status.clone()
    }

    fn record(&self) -> Record {
        Record {
            spec: self.spec.clone(),
            status: self.status(),
        }
    }
}

/// Why a request on a sandbox cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("sandbox {0} is not known on this host")]
    Unknown(String),
    #[error("sandbox {0} is not running")]
    NotRunning(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

pub struct Parts {
    pub driver: Arc<dyn Driver>,
    pub store: Arc<CursorStore>,
    pub starts_log: StartsLog,
    pub started: HashSet<String>,
    pub events: Arc<EventBuffer>,
    pub pools: Arc<PoolManager>,
    pub start_concurrency: usize,
}

/// How a queued start gets its sandbox.
enum StartHow {
    /// Claim this ready pool member; `path` is `warm`, or `wait` when the
    /// start waited for it to finish warming.
    Warm { member: String, path: &'static str },
    /// Cold start, holding a start slot.
    Cold(OwnedSemaphorePermit),
}

impl Runtime {
    /// Builds the runtime and its start dispatcher.
    pub fn new(p: Parts) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = Arc::new(Runtime {
            driver: p.driver,
            events: p.events,
            pools: p.pools,
            tasks: TaskSet::default(),
            store: p.store,
            starts_log: p.starts_log,
            sandboxes: Mutex::new(HashMap::new()),
            started: Mutex::new(p.started),
            start_queue: tx,
        });
        let sem = Arc::new(Semaphore::new(p.start_concurrency));
        rt.tasks.spawn(dispatch(rt.clone(), rx, sem));
        rt
    }

    pub fn get(&self, id: &str) -> Option<Arc<Sandbox>> {
        self.sandboxes.lock().get(id).cloned()
    }

    /// Registers a sandbox loaded from the database or just accepted.
    pub fn insert(&self, id: &str, record: Record) -> Arc<Sandbox> {
        let sb = Sandbox::new(id.to_string(), record);
        self.sandboxes.lock().insert(id.to_string(), sb.clone());
        sb
    }

    /// The records of the given ids that are known.
    pub fn records_of<'a>(&self, ids: impl Iterator<Item = &'a str>) -> BTreeMap<String, Record> {
        let map = self.sandboxes.lock();
        ids.filter_map(|id| map.get(id).map(|sb| (id.to_string(), sb.record())))
            .collect()
    }

    pub fn all_records(&self) -> BTreeMap<String, Record> {
        self.sandboxes
            .lock()
            .iter()
            .map(|(id, sb)| (id.clone(), sb.record()))
            .collect()
    }

    /// Runs `f` with the set of ids ever started here.
    /// Appends a start to `starts.log`. A failure to log does not undo a
    /// running sandbox; it is only reported.
    pub fn log_start(&self, id: &str) {
        if let Err(e) = self.starts_log.append(id) {
            warn!(sandbox_id = %id, "cannot record the start in starts.log: {e}");
        }
    }

    /// Records the start of an adopted sandbox whose spawn the previous
    /// process did not get to log.
    pub fn log_adopted(&self, id: &str) {
        if self.started.lock().insert(id.to_string()) {
            self.log_start(id);
        }
    }

    pub fn with_started<T>(&self, f: impl FnOnce(&HashSet<String>) -> T) -> T {
        f(&self.started.lock())
    }

    pub fn alive_count(&self) -> u64 {
        self.sandboxes
            .lock()
            .values()
            .filter(|sb| sb.status().is_alive())
            .count() as u64
    }

    /// Writes a change, fsynced when `durable`, off the async threads.
    pub async fn persist(&self, change: Change, durable: bool) -> Result<(), DataplaneError> {
        if change.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&change, durable))
            .await
            .map_err(|e| DataplaneError::Internal(format!("store task: {e}")))?
    }

    /// Persists a plan in one durable transaction, then carries it out.
    pub async fn apply(self: &Arc<Self>, plan: Plan) -> Result<(), DataplaneError> {
        let specs: HashMap<String, SandboxSpec> = plan
            .change
            .upsert
            .iter()
            .map(|(id, r)| (id.clone(), r.spec.clone()))
            .collect();
        self.persist(plan.change, true).await?;
        for action in plan.actions {
            self.act(action, &specs).await;
        }
        Ok(())
    }

    async fn act(self: &Arc<Self>, action: Action, specs: &HashMap<String, SandboxSpec>) {
        match action {
            Action::Start(id) => {
                if let Some(spec) = specs.get(&id) {
                    self.insert(
                        &id,
                        Record {
                            spec: spec.clone(),
                            status: Status::Alive,
                        },
                    );
                    self.queue_start(id);
                }
            }
            Action::Stop { id, reason } => self.begin_stop(&id, reason),
            Action::ReportStopped { id, reason } => {
                if let Some(sb) = self.get(&id) {
                    sb.state.lock().status = Status::Stopped {
                        reason: reason.clone(),
                    };
                }
                self.events.push(Event::stopped(&id, &reason)).await;
            }
            Action::ReportGone(id) => {
                warn!(sandbox_id = %id, "asked to start a sandbox that already ran here; reporting it ended");
                self.events
                    .push(Event::exited(&id, "already ran on this host and ended"))
                    .await;
            }
            Action::Forget(id) => self.forget_now(&id),
        }
    }

    pub fn queue_start(&self, id: String) {
        // Counted until the start is done: pool refills wait for user starts.
        self.pools.begin_user_start();
        // The dispatcher only goes away with the runtime.
        if self.start_queue.send(id).is_err() {
            self.pools.end_user_start();
        }
    }

    /// Alive sandboxes plus unclaimed pool members, against `max_sandboxes`:
    /// evicts ready members (in eviction order) to make room for one more
    /// start, or says why there is none.
    fn make_room(&self) -> Result<(), String> {
        let max = self.pools.opts.max_sandboxes;
        // The sandbox being started is already counted as alive.
        let total = self.alive_count() as usize + self.pools.members();
        if total <= max {
            return Ok(());
        }
        let evicted = self.pools.evict(total - max);
        let short = total - max - evicted.len();
        for m in evicted {
            tracing::info!(member = %m, "evicting a ready pool sandbox to make room");
            self.pools.discard_later(m);
        }
        if short > 0 {
            return Err(format!("{} ({max} sandboxes, nothing left to evict)", crate::events::CAPACITY_REFUSAL));
        }
        Ok(())
    }

    /// Marks a sandbox stopping and stops it in the background.
    pub fn begin_stop(self: &Arc<Self>, id: &str, reason: String) {
        let Some(sb) = self.get(id) else { return };
        {
            let mut st = sb.state.lock();
            if st.status.is_alive() {
                st.status = Status::Stopping {
                    reason: reason.clone(),
                };
            }
        }
        let rt = self.clone();
        let span = info_span!("sandbox", id = %id);
        self.tasks
            .spawn(async move { rt.stop_one(sb, reason).await }.instrument(span));
    }

    async fn start_one(self: Arc<Self>, id: String, how: StartHow, sem: Arc<Semaphore>) {
        struct Done<'a>(&'a PoolManager);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.end_user_start();
            }
        }
        let _done = Done(&self.pools);
        let Some(sb) = self.get(&id) else {
            if let StartHow::Warm { member, .. } = how {
                self.pools.discard_later(member);
            }
            return;
        };
        let _life = sb.life.lock().await;
        if !sb.status().is_alive() {
            // Stopped before its turn came; an untouched member goes back.
            if let StartHow::Warm { member, .. } = how {
                self.pools.put_back(&sb.spec.template, member);
            }
            return;
        }
        if !self.started.lock().insert(id.clone()) {
            warn!("refusing to start a sandbox a second time");
            if let StartHow::Warm { member, .. } = how {
                self.pools.put_back(&sb.spec.template, member);
            }
            return;
        }
        let (result, path) = match how {
            StartHow::Warm { member, path } => match self.driver.claim(&member, &id, &sb.spec).await {
                Ok(started) => {
                    self.pools.claimed(&sb.spec.template, &id);
                    (Ok(started), path)
                }
                Err(e) => {
                    warn!(%member, "claim of a pool sandbox failed, starting cold: {e}");
                    self.pools.discard_later(member);
                    let Ok(permit) = sem.acquire_owned().await else { return };
                    (self.cold_start(&sb, permit).await, "cold")
                }
            },
            StartHow::Cold(permit) => (self.cold_start(&sb, permit).await, "cold"),
        };
        match result {
            Ok(started) => {
                // Logged after the spawn: a crash in between leaves a live
                // keeper, which the next boot adopts (and logs) instead of
                // declaring the sandbox gone.
                self.log_start(&id);
                self.watch(&sb, started);
                tracing::debug!(path, "started");
                self.events.push(Event::started(&id, path)).await;
            }
            Err(e) => {
                self.end(
                    &sb,
                    Status::StartFailed {
                        message: e.to_string(),
                    },
                )
                .await
            }
        }
    }

    async fn cold_start(&self, sb: &Sandbox, permit: OwnedSemaphorePermit) -> Result<Started, DriverError> {
        let result = match self.make_room() {
            Ok(()) => self.driver.start(&sb.id, &sb.spec).await,
            Err(m) => Err(DriverError::Unsupported(m)),
        };
        drop(permit);
        result
    }

    /// Watches a running sandbox's end and reports EXITED unless it is being stopped.
    pub fn watch(self: &Arc<Self>, sb: &Arc<Sandbox>, started: Started) {
        let (tx, rx) = watch::channel(false);
        sb.state.lock().ended = Some(rx);
        let rt = self.clone();
        let sb = sb.clone();
        let span = info_span!("sandbox", id = %sb.id);
        self.tasks.spawn(
            async move {
                let how = started.exited.await;
                let _ = tx.send(true);
                let _life = sb.life.lock().await;
                if sb.status().is_alive() {
                    // Kill whatever its commands left behind.
                    let _ = rt.driver.stop(&sb.id).await;
                    let status = if how.oom_killed {
                        Status::OomKilled { message: how.message }
                    } else {
                        Status::Exited { message: how.message }
                    };
                    rt.end(&sb, status).await;
                }
            }
            .instrument(span),
        );
    }

    async fn stop_one(self: Arc<Self>, sb: Arc<Sandbox>, reason: String) {
        let _life = sb.life.lock().await;
        let ended = sb.state.lock().ended.clone();
        if let Some(mut ended) = ended {
            if let Err(e) = self.driver.stop(&sb.id).await {
                warn!("stop: {e}");
            }
            if tokio::time::timeout(STOP_WAIT, ended.wait_for(|e| *e))
                .await
                .is_err()
            {
                warn!("sandbox did not end within {STOP_WAIT:?} of being killed");
            }
        }
        if let Err(e) = self.driver.remove(&sb.id) {
            warn!("remove: {e}");
        }
        self.end(&sb, Status::Stopped { reason }).await;
    }

    /// Records a terminal status and reports the matching event.
    pub async fn end(&self, sb: &Sandbox, status: Status) {
        let event = match &status {
            Status::StartFailed { message } => Event::start_failed(&sb.id, message),
            Status::Exited { message } => Event::exited(&sb.id, message),
            Status::OomKilled { message } => Event::oom_killed(&sb.id, message),
            Status::Stopped { reason } => Event::stopped(&sb.id, reason),
            Status::Alive | Status::Stopping { .. } => return,
        };
        tracing::info!(kind = ?event.kind, message = %event.message, reason = %event.end_reason, "sandbox ended");
        sb.state.lock().status = status.clone();
        self.pools.released(&sb.id);
        let change = Change {
            upsert: vec![(
                sb.id.clone(),
                Record {
                    spec: sb.spec.clone(),
                    status,
                },
            )],
            ..Default::default()
        };
        if let Err(e) = self.persist(change, false).await {
            warn!(sandbox_id = %sb.id, "cannot record the end: {e}");
        }
        self.events.push(event).await;
    }

    /// Forgets sandboxes whose terminal event the server acked.
    pub async fn forget_acked(&self, ids: impl IntoIterator<Item = String>) {
        let mut delete = Vec::new();
        for id in ids {
            let ended = self.get(&id).is_some_and(|sb| {
                matches!(
                    sb.status(),
                    Status::Exited { .. }
                        | Status::OomKilled { .. }
                        | Status::StartFailed { .. }
                        | Status::Stopped { .. }
                )
            });
            if ended {
                self.forget_now(&id);
                delete.push(id);
            }
        }
        if let Err(e) = self
            .persist(
                Change {
                    delete,
                    ..Default::default()
                },
                false,
            )
            .await
        {
            warn!("cannot forget acked sandboxes: {e}");
        }
    }

    fn forget_now(&self, id: &str) {
        self.sandboxes.lock().remove(id);
        if let Err(e) = self.driver.remove(id) {
            warn!(sandbox_id = %id, "remove: {e}");
        }
    }

    /// Stops every alive sandbox and waits for the stops (graceful shutdown).
    pub async fn stop_all(self: &Arc<Self>, reason: &str) {
        let alive: Vec<Arc<Sandbox>> = self
            .sandboxes
            .lock()
            .values()
            .filter(|sb| sb.status().is_alive())
            .cloned()
            .collect();
        let stops = alive.into_iter().map(|sb| {
            sb.state.lock().status = Status::Stopping {
                reason: reason.to_string(),
            };
            self.clone().stop_one(sb, reason.to_string())
        });
        futures::future::join_all(stops).await;
    }

    /// The running sandbox `id`, for exec.
    fn running(&self, id: &str) -> Result<Arc<Sandbox>, AccessError> {
        let sb = self
            .get(id)
            .ok_or_else(|| AccessError::Unknown(id.to_string()))?;
        if sb.status().is_alive() {
            Ok(sb)
        } else {
            Err(AccessError::NotRunning(id.to_string()))
        }
    }

    pub async fn exec(&self, id: &str, req: ExecSpec) -> Result<ExecOutput, AccessError> {
        let sb = self.running(id)?;
        Ok(self.driver.exec(id, &sb.spec, req).await?)
    }

    pub async fn exec_stream(&self, id: &str, req: ExecSpec) -> Result<crate::driver::ExecChunks, AccessError> {
        let sb = self.running(id)?;
        Ok(self.driver.exec_stream(id, &sb.spec, req).await?)
    }

    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>, AccessError> {
        self.get(id)
            .ok_or_else(|| AccessError::Unknown(id.to_string()))?;
        Ok(self.driver.read_file(id, path).await?)
    }

    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<(), AccessError> {
        self.running(id)?;
        Ok(self.driver.write_file(id, path, content, mode).await?)
    }
}

/// Admits starts strictly in arrival order, `start_concurrency` cold starts
/// at a time. A start whose template has a ready pool member claims it at
/// once (no start slot needed); one whose pool has a member warming waits for
/// it (bounded by the pool wait) off the queue, then starts cold if none came.
async fn dispatch(
    rt: Arc<Runtime>,
    mut queue: mpsc::UnboundedReceiver<String>,
    sem: Arc<Semaphore>,
) {
    while let Some(id) = queue.recv().await {
        let span = info_span!("sandbox", id = %id);
        let (template, network) =
            rt.get(&id).map(|sb| (sb.spec.template.clone(), sb.spec.network)).unwrap_or_default();
        // Pool members are isolated: a `nat` sandbox always starts cold.
        let pooled = network == corral_core::NetworkMode::Isolated;
        if let Some(member) = pooled.then(|| rt.pools.take(&template)).flatten() {
            let task = rt.clone().start_one(id, StartHow::Warm { member, path: "warm" }, sem.clone());
            rt.tasks.spawn(task.instrument(span));
            continue;
        }
        if pooled && rt.pools.may_wait(&template) {
            let rt2 = rt.clone();
            let sem2 = sem.clone();
            rt.tasks.spawn(
                async move {
                    let how = match rt2.pools.take_or_wait(&template).await {
                        Some((member, waited)) => StartHow::Warm { member, path: if waited { "wait" } else { "warm" } },
                        None => match sem2.clone().acquire_owned().await {
                            Ok(permit) => StartHow::Cold(permit),
                            Err(_) => return,
                        },
                    };
                    rt2.start_one(id, how, sem2).await
                }
                .instrument(span),
            );
            continue;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        let task = rt.clone().start_one(id, StartHow::Cold(permit), sem.clone());
        rt.tasks.spawn(task.instrument(span));
    }
}
