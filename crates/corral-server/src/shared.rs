//! What the controller publishes after every commit, and what readers see.
//!
//! Readers (REST GETs, pollers, the TTL sweep) only ever see **committed**
//! state: the controller applies a batch's writes here after the store said
//! they are durable. Pollers and `?wait=running` callers are woken from here,
//! by the commit itself rather than by a timer.

use std::collections::HashMap;

use corral_core::api::StateEvent;
use corral_core::{Sandbox, SandboxState};
use corral_store::Write;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, oneshot, watch};

use crate::metrics as m;
use crate::state::decide::{Liveness, NetSlots, PoolView};
use crate::state::State;

pub struct Shared {
    pub committed: RwLock<State>,
    /// Soft liveness per host, written by heartbeats, read by decisions.
    pub liveness: RwLock<HashMap<String, Liveness>>,
    /// Per host: the highest committed outbox seq; long polls wait on it.
    outbox_heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Callers waiting for a sandbox to run or end.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Sandbox>>>>,
    pub events: broadcast::Sender<StateEvent>,
    /// Ready pool sandboxes per host and template, as the scheduler sees them.
    pub pools: PoolView,
    /// Free network slots per host, as the scheduler sees them.
    pub net: NetSlots,
    /// The last pool status each host reported.
    pub pool_status: RwLock<HashMap<String, Vec<corral_proto::v1::PoolStatus>>>,
}

/// A sandbox has settled for `?wait=running` once it runs or has ended.
pub fn settled(state: SandboxState) -> bool {
    state == SandboxState::Running || state.is_terminal()
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            committed: RwLock::new(state),
            liveness: RwLock::new(HashMap::new()),
            outbox_heads: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            events: broadcast::channel(16_384).0,
            pools: PoolView::default(),
            net: NetSlots::default(),
            pool_status: RwLock::new(HashMap::new()),
        }
    }

    /// Applies a committed batch and wakes whoever waits on it.
    pub fn publish(&self, writes: &[Write], now_ms: u64) {
        let mut touched_hosts: Vec<&str> = Vec::new();
        {
            let mut st = self.committed.write();
            st.apply_all(writes);
            for w in writes {
                if let Write::PutOutbox(e) = w {
                    if touched_hosts.last() != Some(&e.host.as_str()) {
                        touched_hosts.push(&e.host);
                    }
                }
            }
            m::set_state_gauges(&st);
            // Only hosts this batch touched can have a new backlog: every
            // outbox change comes with a write of its host's record.
            let mut changed: Vec<&str> = writes
                .iter()
                .filter_map(|w| match w {
                    Write::PutHost(h) => Some(h.id.as_str()),
                    Write::DeleteOutbox { host, .. } => Some(host.as_str()),
                    _ => None,
                })
                .collect();
            changed.sort_unstable();
            changed.dedup();
            for id in changed {
                if let Some(hs) = st.hosts.get(id) {
                    m::set_backlog(id, hs.outbox.len());
                }
            }
        }
        self.wake_pollers(writes, &touched_hosts);
        self.wake_waiters_and_stream(writes, now_ms);
    }

    fn wake_pollers(&self, writes: &[Write], hosts: &[&str]) {
        if hosts.is_empty() {
            return;
        }
        let heads = self.outbox_heads.lock();
        for w in writes {
            if let Write::PutOutbox(e) = w {
                if let Some(tx) = heads.get(&e.host) {
                    tx.send_if_modified(|head| {
                        let newer = e.seq > *head;
                        *head = (*head).max(e.seq);
                        newer
                    });
                }
            }
        }
    }

    fn wake_waiters_and_stream(&self, writes: &[Write], now_ms: u64) {
        let streaming = self.events.receiver_count() > 0;
        let mut waiters = self.waiters.lock();
        for w in writes {
            let Write::PutSandbox(sb) = w else { continue };
            // Only a start report writes a running sandbox.
            if let (SandboxState::Running, Some(started)) = (sb.state, sb.started_at_ms) {
                let secs = started.saturating_sub(sb.created_at_ms) as f64 / 1000.0;
                m::record_start(sb.start_path.as_deref().unwrap_or("cold"), secs);
            }
            if settled(sb.state) {
                for tx in waiters.remove(&sb.id).unwrap_or_default() {
                    let _ = tx.send(sb.clone());
                }
            }
            if streaming {
                let _ = self.events.send(StateEvent {
                    id: sb.id.clone(),
                    state: sb.state,
                    host: sb.host.clone(),
                    end_reason: sb.end_reason,
                    at_ms: now_ms,
                });
            }
        }
    }

    /// A receiver of the host's committed outbox head, for long polls.
    pub fn watch_outbox(&self, host: &str) -> watch::Receiver<u64> {
        let mut heads = self.outbox_heads.lock();
        heads.entry(host.to_string()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Resolves when the sandbox settles; checks the committed state after
    /// registering so a change between create and wait cannot be missed.
    pub fn wait_settled(&self, id: &str) -> oneshot::Receiver<Sandbox> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock();
        match self.committed.read().sandboxes.get(id) {
            Some(sb) if settled(sb.state) => {
                let _ = tx.send(sb.clone());
            }
            _ => waiters.entry(id.to_string()).or_default().push(tx),
        }
        rx
    }

    /// Forgets waiters whose callers gave up (timeouts, closed connections).
    pub fn prune_waiters(&self) {
        self.waiters.lock().retain(|_, v| {
            v.retain(|tx| !tx.is_closed());
            !v.is_empty()
        });
    }
}
