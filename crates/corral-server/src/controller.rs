//! The single writer: decisions run one after another on the working state,
//! and every batch of them is committed to the store in **one** transaction
//! (group commit).
//!
//! Callers hand in a closure over [`Tx`]; the controller drains whatever is
//! queued (up to [`MAX_BATCH`]), runs each closure, commits the writes once,
//! publishes them to the readers and only then answers each caller. While one
//! batch is being fsync'd the next one queues up, so throughput grows with
//! load instead of collapsing to one fsync per request. If a commit fails, no
//! caller of that batch gets a success and the working state is reset to the
//! committed one: nothing partial is ever visible or durable.

use std::sync::Arc;
use std::time::Instant;

use corral_core::time::now_us;
use corral_store::{Store, Write};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics as m;
use crate::shared::Shared;
use crate::state::decide::{self, Fleet, Policy, Tx};

/// Most jobs decided and committed together.
pub const MAX_BATCH: usize = 8192;

/// Why a job did not take effect. Nothing of it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    #[error("the store could not commit: {0}")]
    Store(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

type Completion = Box<dyn FnOnce(Result<(), Unavailable>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx, &Fleet) -> Completion + Send>;

/// A handle for submitting decisions. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    queue: mpsc::Sender<Job>,
}

impl Controller {
    /// Starts the writer loop on `rt`. `queue_depth` bounds waiting jobs:
    /// beyond it callers get [`Unavailable::Overloaded`] (→ 503 with `Retry-After`).
    ///
    /// Once `stop` turns true the loop finishes the batch it is committing
    /// and whatever is already queued, then ends and lets go of the store;
    /// the returned handle resolves then (a new server may open the store).
    pub fn start(
        rt: &tokio::runtime::Handle,
        store: Arc<dyn Store>,
        shared: Arc<Shared>,
        policy: Policy,
        queue_depth: usize,
        stop: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(queue_depth);
        let writer = rt.spawn(writer_loop(rx, store, shared, policy, stop));
        (Controller { queue }, writer)
    }

    /// Runs `decide` in the next batch and returns its result once that batch
    /// is durable and visible.
    pub async fn run<R, F>(&self, decide: F) -> Result<R, Unavailable>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx, &Fleet) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |t, f| {
            let r = decide(t, f);
            Box::new(move |res| {
                let _ = tx.send(res.map(|()| r));
            })
        });
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Unavailable::Overloaded,
            mpsc::error::TrySendError::Closed(_) => Unavailable::ShuttingDown,
        })?;
        rx.await.map_err(|_| Unavailable::ShuttingDown)?
    }

    /// Queues `decide` without waiting for it (acks, periodic sweeps): losing
    /// one to a full queue or a failed commit is harmless, it is redone later.
    pub fn submit<F>(&self, decide: F)
    where
        F: FnOnce(&mut Tx, &Fleet) + Send + 'static,
    {
        let job: Job = Box::new(move |t, f| {
            decide(t, f);
            Box::new(|_| {})
        });
        let _ = self.queue.try_send(job);
    }
}

async fn writer_loop(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    policy: Policy,
    mut stop: watch::Receiver<bool>,
) {
    let mut working = shared.committed.read().clone();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    loop {
        let received = tokio::select! {
            biased;
            n = rx.recv_many(&mut jobs, MAX_BATCH) => n,
            _ = stop.wait_for(|s| *s), if !closed => {
                // Refuse new jobs (callers get ShuttingDown); what is queued
                // is still committed, then `recv_many` returns 0.
                rx.close();
                closed = true;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let now_us = now_us();
        let now = now_us / 1000;
        let started = Instant::now();
        let (writes, drained, spent, completions) = {
            let liveness = shared.liveness.read();
            let fleet = Fleet { pools: &shared.pools, net: &shared.net, now_us, liveness: &liveness, policy: &policy };
            let mut tx = Tx::new(&mut working);
            let completions: Vec<Completion> = jobs.drain(..).map(|job| job(&mut tx, &fleet)).collect();
            (coalesce(tx.writes), tx.drained_ms, tx.spent, completions)
        };
        let result = if writes.is_empty() { Ok(writes) } else { commit(&store, writes).await };
        match result {
            Ok(writes) => {
                shared.publish(&writes, now);
                m::record_commit(completions.len(), writes.len(), started.elapsed(), &drained);
                completions.into_iter().for_each(|c| c(Ok(())));
            }
            Err(err) => {
                tracing::error!(%err, jobs = completions.len(), "commit failed; batch rejected");
                // Undo everything the batch did outside the store: the working
                // image goes back to the committed one, the pool members and
                // network slots its placements counted on are free again.
                // Readers never saw it.
                working = shared.committed.read().clone();
                decide::give_back(&shared.pools, &shared.net, &spent);
                m::record_commit_failure();
                completions.into_iter().for_each(|c| c(Err(err.clone())));
            }
        }
    }
}

async fn commit(store: &Arc<dyn Store>, writes: Vec<Write>) -> Result<Vec<Write>, Unavailable> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit(&writes).map(|()| writes))
        .await
        .map_err(|e| Unavailable::Store(e.to_string()))?
        .map_err(|e| Unavailable::Store(e.to_string()))
}

/// Drops every put that a later put of the same record overwrites in the same
/// batch (a burst to one host rewrites its record once per create). Deletes
/// stay in place, so the result leaves the store exactly as the full list would.
pub fn coalesce(writes: Vec<Write>) -> Vec<Write> {
    use std::collections::HashMap;
    let key = |w: &Write| -> Option<(u8, String)> {
        match w {
            Write::PutSandbox(sb) => Some((0, sb.id.clone())),
            Write::PutHost(h) => Some((1, h.id.clone())),
            _ => None,
        }
    };
    let mut last: HashMap<(u8, String), usize> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        if let Some(k) = key(w) {
            last.insert(k, i);
        }
    }
    writes
        .into_iter()
        .enumerate()
        .filter(|(i, w)| key(w).is_none_or(|k| last.get(&k) == Some(i)))
        .map(|(_, w)| w)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::{Host, Sandbox, SandboxSpec, SandboxState};

    fn sb(id: &str, state: SandboxState) -> Sandbox {
        let spec = SandboxSpec {
            template: "base".into(),
            cpu_millis: 1,
            memory_mb: 1,
            ttl_s: 1,
            ..Default::default()
        };
        let mut s = Sandbox::new(id.into(), spec, None, 0);
        s.state = state;
        s
    }

    fn host(seq: u64) -> Host {
        Host {
            id: "h".into(),
            epoch: 1,
            last_seq: seq,
            acked_seq: 0,
            cpu_millis: 1,
            memory_mb: 1,
            templates: vec![],
            agent_addr: String::new(),
            registered_at_ms: 0,
            full_syncs: 0,
            max_sandboxes: 0,
        }
    }

    #[test]
    fn coalesce_keeps_the_last_put_of_each_record_and_every_delete() {
        let writes = vec![
            Write::PutSandbox(sb("a", SandboxState::Pending)),
            Write::PutHost(host(1)),
            Write::PutSandbox(sb("b", SandboxState::Pending)),
            Write::PutHost(host(2)),
            Write::DeleteSandbox("b".into()),
            Write::PutSandbox(sb("a", SandboxState::Enqueued)),
        ];
        assert_eq!(
            coalesce(writes),
            vec![
                Write::PutSandbox(sb("b", SandboxState::Pending)),
                Write::PutHost(host(2)),
                Write::DeleteSandbox("b".into()),
                Write::PutSandbox(sb("a", SandboxState::Enqueued)),
            ]
        );
    }

    /// A batch the store refuses leaves no trace: callers get the store
    /// error, the read model and the working image stay as committed, and
    /// the warm slot the placement counted on is free again.
    #[tokio::test]
    async fn a_refused_commit_rolls_back_the_image_the_warm_slots_and_the_network_slots() {
        use crate::state::decide::{create, register, Liveness, PoolCounts, Registration};
        use corral_store::{FaultyStore, MemoryStore};

        let inner = Arc::new(MemoryStore::new());
        let store = Arc::new(FaultyStore::new(inner.clone()));
        let faults = store.faults();
        let shared = Arc::new(Shared::new(crate::state::State::default()));
        let (_stop, stop) = watch::channel(false);
        let (ctl, _writer) =
            Controller::start(&tokio::runtime::Handle::current(), store, shared.clone(), Policy::default(), 16, stop);
        let reg = Registration {
            host_id: "h".into(),
            cpu_millis: 4000,
            memory_mb: 4096,
            templates: vec!["base".into()],
            agent_addr: String::new(),
            max_sandboxes: 0,
        };
        ctl.run(move |tx, f| register(tx, f, reg)).await.unwrap();
        shared.liveness.write().insert("h".into(), Liveness { last_seen_ms: now_us() / 1000, cpu_pct: 0.0 });
        let three_ready = PoolCounts { ready: 3, ..Default::default() };
        shared.pools.lock().insert("h".into(), [("base".to_string(), three_ready)].into());
        shared.net.lock().insert("h".into(), 2);
        let spec = sb("x", SandboxState::Pending).spec;
        let committed_before = inner.load().unwrap();

        faults.fail_next(1);
        let s1 = spec.clone();
        let refused = ctl.run(move |tx, f| create(tx, f, "sb-1".into(), s1, Some("k".into()))).await;
        assert!(matches!(refused, Err(Unavailable::Store(_))), "{refused:?}");
        assert_eq!(shared.pools.lock()["h"]["base"].ready, 3, "the warm slot is free again");
        assert!(shared.committed.read().sandboxes.is_empty());
        assert_eq!(inner.load().unwrap().sandboxes, committed_before.sandboxes);
        assert_eq!(inner.load().unwrap().outbox, committed_before.outbox);

        faults.fail_next(1);
        let nat = SandboxSpec { network: corral_core::NetworkMode::Nat, ..spec.clone() };
        let refused = ctl.run(move |tx, f| create(tx, f, "sb-n".into(), nat, None)).await;
        assert!(matches!(refused, Err(Unavailable::Store(_))), "{refused:?}");
        assert_eq!(shared.net.lock()["h"], 2, "the network slot is free again");

        // The same key is new to the working image: the retry creates.
        let placed = ctl.run(move |tx, f| create(tx, f, "sb-2".into(), spec, Some("k".into()))).await.unwrap().unwrap();
        let crate::state::decide::CreateOutcome::Created(sb) = placed else { panic!("a replay of a refused create") };
        assert_eq!((sb.id.as_str(), sb.host.as_deref(), sb.state), ("sb-2", Some("h"), SandboxState::Enqueued));
        assert_eq!(shared.pools.lock()["h"]["base"].ready, 2);
        assert_eq!(shared.committed.read().hosts["h"].outbox.len(), 1);
    }

    /// Stopping commits what is queued (a held commit included), then
    /// refuses new jobs and lets go of the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_commits_what_is_queued_then_refuses_and_releases_the_store() {
        use corral_store::{FaultyStore, MemoryStore};

        let inner = Arc::new(MemoryStore::new());
        let store = Arc::new(FaultyStore::new(inner.clone()));
        let faults = store.faults();
        let shared = Arc::new(Shared::new(crate::state::State::default()));
        let (stop_tx, stop) = watch::channel(false);
        let (ctl, writer) = Controller::start(
            &tokio::runtime::Handle::current(),
            store.clone(),
            shared,
            Policy::default(),
            16,
            stop,
        );
        let pool = |t: &str| corral_core::pool::PoolSpec { template: t.into(), min: 0, max: 1, buffer: 0, prewarm: vec![] };
        faults.pause();
        let (a, b) = (pool("a"), pool("b"));
        let held = tokio::spawn({
            let ctl = ctl.clone();
            async move { ctl.run(move |tx, f| decide::set_pool(tx, f, a)).await }
        });
        while faults.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // Polled once, the job is in the queue behind the held commit.
        let mut queued = Box::pin(ctl.run(move |tx, f| decide::set_pool(tx, f, b)));
        assert!(futures::poll!(&mut queued).is_pending());
        stop_tx.send(true).unwrap();
        faults.resume();
        assert!(held.await.unwrap().is_ok());
        assert!(queued.await.is_ok());
        writer.await.unwrap();
        let late = ctl.run(move |tx, f| decide::set_pool(tx, f, pool("c"))).await;
        assert_eq!(late.err(), Some(Unavailable::ShuttingDown));
        let names: Vec<_> = inner.load().unwrap().pools.into_iter().map(|p| p.template).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(Arc::strong_count(&store), 1, "the writer let go of the store");
    }
}
