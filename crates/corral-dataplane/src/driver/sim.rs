//! A hollow driver for scale tests (like Kubernetes' kubemark): "starts" a
//! sandbox by waiting a configurable delay, runs no process, and answers exec
//! with a canned result. Everything around it — cursor, ordered apply, events,
//! heartbeats, the long poll — is the real dataplane, so many simulated hosts
//! in one process load the server exactly as many real hosts would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corral_core::SandboxSpec;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{BoxFuture, Discovered, Driver, DriverError, ExecOutput, ExecSpec, Exit, Started};

/// What every exec answers (looks like `node -v`, so the default readiness
/// check of `corral bench` passes).
pub const CANNED_STDOUT: &str = "v20.0.0-sim\n";

pub struct SimDriver {
    start_delay: Duration,
    /// Running sandboxes: sending (or dropping) ends them.
    running: Mutex<HashMap<String, oneshot::Sender<&'static str>>>,
    /// Unclaimed pool members (a prewarm takes `start_delay`, a claim nothing).
    members: Mutex<std::collections::HashSet<String>>,
    member_seq: std::sync::atomic::AtomicU64,
}

impl SimDriver {
    pub fn new(start_delay: Duration) -> Self {
        SimDriver {
            start_delay,
            running: Mutex::new(HashMap::new()),
            members: Mutex::new(Default::default()),
            member_seq: Default::default(),
        }
    }

    pub fn running(&self) -> usize {
        self.running.lock().len()
    }

    /// Unclaimed pool members.
    pub fn members(&self) -> usize {
        self.members.lock().len()
    }

    fn run(&self, id: &str) -> Started {
        let (tx, rx) = oneshot::channel();
        self.running.lock().insert(id.to_string(), tx);
        let exited: BoxFuture<'static, Exit> =
            Box::pin(async move { Exit::plain(rx.await.unwrap_or("simulated sandbox dropped")) });
        Started { exited }
    }
}

impl Driver for SimDriver {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn start<'a>(&'a self, id: &'a str, _spec: &'a SandboxSpec) -> BoxFuture<'a, Result<Started, DriverError>> {
        Box::pin(async move {
            if !self.start_delay.is_zero() {
                tokio::time::sleep(self.start_delay).await;
            }
            Ok(self.run(id))
        })
    }

    fn supports_pools(&self) -> bool {
        true
    }

    fn prewarm<'a>(&'a self, _template: &'a str) -> BoxFuture<'a, Result<String, DriverError>> {
        Box::pin(async move {
            if !self.start_delay.is_zero() {
                tokio::time::sleep(self.start_delay).await;
            }
            let n = self.member_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("wp-sim-{n}");
            self.members.lock().insert(id.clone());
            Ok(id)
        })
    }

    fn claim<'a>(
        &'a self,
        member: &'a str,
        sandbox_id: &'a str,
        _spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<Started, DriverError>> {
        Box::pin(async move {
            if !self.members.lock().remove(member) {
                return Err(DriverError::NotFound(member.to_string()));
            }
            Ok(self.run(sandbox_id))
        })
    }

    fn discard<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            self.members.lock().remove(member);
            Ok(())
        })
    }

    /// Nothing survives a simulated host's restart.
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, DriverError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn adopt(&self, id: &str, _found: &Discovered) -> Result<Started, DriverError> {
        Err(DriverError::NotFound(id.to_string()))
    }

    fn kill_stray(&self, _found: &Discovered) {}

    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            match self.running.lock().remove(id) {
                Some(tx) => {
                    let _ = tx.send("stopped");
                    Ok(())
                }
                None => Err(DriverError::NotFound(id.to_string())),
            }
        })
    }

    fn remove(&self, _id: &str) -> Result<(), DriverError> {
        Ok(())
    }

    fn exec<'a>(&'a self, id: &'a str, _spec: &'a SandboxSpec, _req: ExecSpec) -> BoxFuture<'a, Result<ExecOutput, DriverError>> {
        Box::pin(async move {
            let began = Instant::now();
            if !self.running.lock().contains_key(id) {
                return Err(DriverError::NotFound(id.to_string()));
            }
            Ok(ExecOutput { exit_code: 0, stdout: CANNED_STDOUT.as_bytes().to_vec(), duration: began.elapsed(), ..Default::default() })
        })
    }

    fn read_file<'a>(&'a self, _id: &'a str, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>, DriverError>> {
        Box::pin(async move { Err(DriverError::Missing(format!("{path}: simulated sandboxes have no files"))) })
    }

    fn write_file<'a>(&'a self, _id: &'a str, _path: &'a str, _content: Vec<u8>, _mode: u32) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Runs `hosts` simulated hosts in this process until `shutdown`: host ids
/// `sim-0`, `sim-1`, …, each a complete dataplane ([`crate::run_with_driver`])
/// with its own data dir `<base.data_dir>/sim-<i>`, its own connection, poll
/// loop and heartbeat, and a [`SimDriver`] that starts after `start_delay`.
pub async fn run_hosts(
    base: crate::DataplaneConfig,
    hosts: usize,
    start_delay: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::DataplaneError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..hosts {
        let mut c = base.clone();
        c.host_id = format!("sim-{i}");
        c.data_dir = base.data_dir.join(format!("sim-{i}"));
        // Simulated starts are timers, not CPU work: no reason to queue them.
        c.start_concurrency = c.start_concurrency.max(1024);
        let mut rx = stop_rx.clone();
        let driver = std::sync::Arc::new(SimDriver::new(start_delay));
        tasks.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            crate::run_with_driver(c, driver, stop).await
        });
    }
    tracing::info!(hosts, ?start_delay, "simulated hosts started");
    tokio::pin!(shutdown);
    let mut first_error = None;
    tokio::select! {
        _ = &mut shutdown => {}
        Some(r) = tasks.join_next() => {
            first_error = Some(match r {
                Ok(Err(e)) => e,
                Ok(Ok(())) => crate::DataplaneError::Internal("a simulated host stopped".into()),
                Err(e) => crate::DataplaneError::Internal(e.to_string()),
            });
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_after_the_delay_answers_exec_and_stops() {
        let d = SimDriver::new(Duration::from_millis(20));
        let spec = crate::record::spec_from_proto(None);
        let began = Instant::now();
        let started = d.start("a", &spec).await.expect("start");
        assert!(began.elapsed() >= Duration::from_millis(20));
        assert_eq!(d.running(), 1);
        let req = ExecSpec { argv: vec!["node".into()], env: Default::default(), cwd: String::new(), timeout: Duration::from_secs(1), stdin: Vec::new() };
        let out = d.exec("a", &spec, req.clone()).await.expect("exec");
        assert_eq!((out.exit_code, out.stdout.as_slice()), (0, CANNED_STDOUT.as_bytes()));
        d.stop("a").await.expect("stop");
        assert_eq!(started.exited.await.message, "stopped");
        assert!(matches!(d.exec("a", &spec, req).await, Err(DriverError::NotFound(_))));
        assert!(d.discover().await.expect("discover").is_empty());
    }
}
