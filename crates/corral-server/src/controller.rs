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
use tokio::sync::{mpsc, oneshot};

use crate::metrics as m;
use crate::shared::Shared;
use crate::state::decide::{Fleet, Policy, Tx};

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
    pub fn start(
        rt: &tokio::runtime::Handle,
        store: Arc<dyn Store>,
        shared: Arc<Shared>,
        policy: Policy,
        queue_depth: usize,
    ) -> Self {
        let (queue, rx) = mpsc::channel(queue_depth);
        rt.spawn(writer_loop(rx, store, shared, policy));
        Controller { queue }
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

async fn writer_loop(mut rx: mpsc::Receiver<Job>, store: Arc<dyn Store>, shared: Arc<Shared>, policy: Policy) {
    let mut working = shared.committed.read().clone();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let now_us = now_us();
        let now = now_us / 1000;
        let started = Instant::now();
        let (writes, drained, completions) = {
            let liveness = shared.liveness.read();
            let fleet = Fleet { warm: &shared.warm, net: &shared.net, now_us, liveness: &liveness, policy: &policy };
            let mut tx = Tx::new(&mut working);
            let completions: Vec<Completion> = jobs.drain(..).map(|job| job(&mut tx, &fleet)).collect();
            (coalesce(tx.writes), tx.drained_ms, completions)
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
                working = shared.committed.read().clone();
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
            env: Default::default(),
            labels: Default::default(),
            network: Default::default(),
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
}
