//! The Corral dataplane: one per host. It long-polls the server's outbox for
//! commands, applies them in order exactly once (persisting its cursor in a
//! small redb database so a restart resumes instead of resyncing), runs
//! sandboxes through a [`Driver`], reports their lifecycle events through a
//! bounded, ack-driven buffer, and serves exec/files on them over the Agent
//! gRPC service.
//!
//! Entry point: [`run`] (or [`run_with_driver`]). Layout of the data dir:
//!
//! ```text
//! <data_dir>/dataplane.redb     cursor (epoch, applied_seq) + one record per known sandbox
//! <data_dir>/starts.log         one line per sandbox id, appended before it is spawned
//! <data_dir>/agent.addr         host:port the Agent service is bound to (see `read_agent_addr`)
//! <data_dir>/sandboxes/<id>/    each sandbox's private working directory (process driver)
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod adopt;
mod agent;
mod apply;
mod backoff;
mod config;
mod cursor;
pub mod driver;
mod error;
mod events;
#[doc(hidden)]
pub mod fuzz;
mod heartbeat;
pub mod latency;
mod link;
mod poll;
pub mod pool;
mod record;
mod runtime;
mod startslog;
mod tasks;
mod usage;

pub use config::{default_host_id, DataplaneConfig};
pub use driver::native::{local_templates, NativeConfig, NativeDriver};
pub use driver::process::ProcessDriver;
pub use driver::sim::SimDriver;
pub use driver::{Driver, DriverError};
pub use error::DataplaneError;
pub use pool::PoolConf;

use cursor::CursorStore;
use events::EventBuffer;
use link::Link;
use runtime::{Parts, Runtime};
use startslog::StartsLog;
use tasks::AbortOnDrop;

/// The file in the data dir holding the bound Agent address (`host:port`).
pub const AGENT_ADDR_FILE: &str = "agent.addr";
/// How long a graceful shutdown keeps trying to deliver buffered events.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a shutdown that stops everything waits for pool members still being made.
const POOL_DRAIN_PATIENCE: Duration = Duration::from_secs(10);
/// The end reason of sandboxes stopped because their dataplane shuts down.
const SHUTDOWN_REASON: &str = "evicted";

/// Runs the dataplane with the `process` driver until `shutdown` resolves
/// (then returns `Ok`) or a fatal error occurs (the cursor database fails).
pub async fn run(
    config: DataplaneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataplaneError> {
    let data_dir = prepare_data_dir(&config.data_dir)?;
    let driver = Arc::new(ProcessDriver::new(&data_dir));
    run_with_driver(config, driver, shutdown).await
}

/// Creates the data dir and returns its canonical path (what drivers mark
/// their processes with).
pub fn prepare_data_dir(dir: &Path) -> Result<PathBuf, DataplaneError> {
    std::fs::create_dir_all(dir).map_err(|e| DataplaneError::io("create", dir, e))?;
    dir.canonicalize()
        .map_err(|e| DataplaneError::io("resolve", dir, e))
}

/// The Agent address the dataplane on `data_dir` bound, once it has.
pub fn read_agent_addr(data_dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(data_dir.join(AGENT_ADDR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Like [`run`], with any driver.
pub async fn run_with_driver(
    config: DataplaneConfig,
    driver: Arc<dyn Driver>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataplaneError> {
    config.validate()?;
    let data_dir = prepare_data_dir(&config.data_dir)?;
    let _ = std::fs::remove_file(data_dir.join(AGENT_ADDR_FILE));
    raise_fd_limit();
    let db_path = data_dir.join("dataplane.redb");
    let store = tokio::task::spawn_blocking(move || CursorStore::open(&db_path))
        .await
        .map_err(|e| DataplaneError::Internal(e.to_string()))??;
    let store = Arc::new(store);
    let (cursor, records) = store.load()?;
    let stored_pools = store.load_pools()?;
    let starts_log = StartsLog::open(&data_dir)?;
    let started = starts_log.load()?;
    tracing::info!(
        driver = driver.name(),
        epoch = cursor.epoch,
        seq = cursor.seq,
        known = records.len(),
        "dataplane starting"
    );
    let events = Arc::new(EventBuffer::new(config.event_buffer));
    let pools = pool::PoolManager::new(
        driver.clone(),
        pool::PoolOptions {
            wait: Duration::from_millis(config.pool_wait_ms),
            max_sandboxes: config.max_sandboxes,
            refill_concurrency: config.pool_refill_concurrency,
            presets: config.pools.clone(),
        },
    );
    pools.load(stored_pools);
    let parts = Parts {
        pools: pools.clone(),
        driver,
        store,
        starts_log,
        started,
        events,
        start_concurrency: config.start_concurrency,
    };
    let rt = Runtime::new(parts);
    let _abort = AbortOnDrop(&rt.tasks);
    let boot_events = adopt::boot(&rt, records).await?;
    // Unclaimed pool members of an earlier process are destroyed, not
    // adopted (their settings may have changed); the pools refill.
    match rt.driver.discover_members().await {
        Ok(members) => {
            if !members.is_empty() {
                tracing::info!(count = members.len(), "destroying pool sandboxes left unclaimed");
            }
            let driver = rt.driver.clone();
            rt.tasks.spawn(async move {
                for m in members {
                    if let Err(e) = driver.discard(&m).await {
                        tracing::warn!(member = %m, "discard pool member: {e}");
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot list leftover pool sandboxes: {e}"),
    }
    {
        let rt2 = rt.clone();
        rt.tasks.spawn(pool::refill_loop(pools, move || rt2.alive_count()));
    }

    let (listener, agent_addr) = agent::bind(config.agent_listen).await?;
    let agent_task = AbortHandle(tokio::spawn(agent::serve(
        rt.clone(),
        listener,
        config.join_token.clone(),
        std::future::pending(),
    )));
    write_agent_addr(&data_dir, agent_addr)?;
    tracing::info!(%agent_addr, "agent service listening");

    let link = Arc::new(Link::new(config.clone(), agent_addr, cursor)?);
    rt.tasks
        .spawn(heartbeat::heartbeat_loop(link.clone(), rt.clone()));
    let work = async {
        link.register().await;
        for event in boot_events {
            rt.events.push(event).await;
        }
        poll::poll_loop(link.clone(), rt.clone()).await
    };
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        r = work => r,
    };
    if result.is_ok() {
        graceful(&config, &rt).await;
    }
    drop(agent_task);
    result
}

/// After the shutdown signal: optionally stop everything, then give the
/// heartbeat a moment to deliver what is buffered.
async fn graceful(config: &DataplaneConfig, rt: &Arc<Runtime>) {
    tracing::info!(
        stop_sandboxes = config.stop_sandboxes_on_shutdown,
        "dataplane shutting down"
    );
    if config.stop_sandboxes_on_shutdown {
        rt.pools.discard_all(POOL_DRAIN_PATIENCE).await;
        rt.stop_all(SHUTDOWN_REASON).await;
    }
    rt.driver.on_shutdown().await;
    let deadline = Instant::now() + FLUSH_TIMEOUT;
    while !rt.events.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !rt.events.is_empty() {
        tracing::warn!(
            pending = rt.events.len(),
            "shutting down with unacknowledged events"
        );
    }
}

fn write_agent_addr(data_dir: &Path, addr: SocketAddr) -> Result<(), DataplaneError> {
    let tmp = data_dir.join(format!("{AGENT_ADDR_FILE}.tmp"));
    let dst = data_dir.join(AGENT_ADDR_FILE);
    std::fs::write(&tmp, format!("{addr}\n")).map_err(|e| DataplaneError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| DataplaneError::io("rename", &dst, e))
}

/// Every sandbox holds a couple of descriptors (pidfd, child handle): lift
/// the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortHandle<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortHandle<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
