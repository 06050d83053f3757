//! The server's working state and the pure decisions made on it.
//!
//! [`State`] is an in-memory image of everything in the store plus indexes
//! (per-host outboxes and live sets, the TTL and pending queues, counts by
//! state). It changes only by [`State::apply`]ing the same [`Write`]s that are
//! committed to the store, so the store and the image cannot drift apart.
//! The decisions in [`decide`] read a `State` and return the writes that carry
//! them out; they do no I/O, which is what makes them testable with exact
//! expectations.

pub mod decide;
pub mod invariants;
pub mod quota;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use corral_core::{Host, OutboxEntry, Sandbox, SandboxState};
use corral_store::{Snapshot, Write};

/// A host and what the server tracks about it.
#[derive(Debug, Clone)]
pub struct HostState {
    pub host: Host,
    /// Committed, unacknowledged commands by seq.
    pub outbox: BTreeMap<u64, OutboxEntry>,
    /// Sandboxes placed here that have not ended.
    pub live: BTreeSet<String>,
    pub allocated_cpu_millis: u64,
    pub allocated_memory_mb: u64,
}

impl HostState {
    fn new(host: Host) -> Self {
        HostState { host, outbox: BTreeMap::new(), live: BTreeSet::new(), allocated_cpu_millis: 0, allocated_memory_mb: 0 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub sandboxes: HashMap<String, Sandbox>,
    pub by_idempotency_key: HashMap<String, String>,
    pub hosts: BTreeMap<String, HostState>,
    /// Live sandboxes by `(expires_at_ms, id)`: the TTL queue.
    pub expiry: BTreeSet<(u64, String)>,
    /// `pending` sandboxes by `(created_at_ms, id)`: the queue waiting for capacity.
    pub pending: BTreeSet<(u64, String)>,
    /// Warm-pool bounds by template.
    pub pools: BTreeMap<String, corral_core::pool::PoolSpec>,
    /// Live (non-terminal) sandboxes by owner (token fingerprint).
    pub live_by_owner: HashMap<String, usize>,
    counts: [u64; SandboxState::ALL.len()],
}

fn state_index(s: SandboxState) -> usize {
    SandboxState::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl State {
    /// Rebuilds the image from a store snapshot.
    pub fn from_snapshot(snap: Snapshot) -> Self {
        let mut st = State::default();
        // Hosts first: sandbox and outbox indexes hang off them.
        for h in snap.hosts {
            st.apply(&Write::PutHost(h));
        }
        for sb in snap.sandboxes {
            st.apply(&Write::PutSandbox(sb));
        }
        for e in snap.outbox {
            st.apply(&Write::PutOutbox(e));
        }
        for p in snap.pools {
            st.apply(&Write::PutPool(p));
        }
        st
    }

    pub fn apply_all(&mut self, writes: &[Write]) {
        for w in writes {
            self.apply(w);
        }
    }

    pub fn apply(&mut self, w: &Write) {
        match w {
            Write::PutSandbox(sb) => {
                if let Some(old) = self.sandboxes.remove(&sb.id) {
                    self.unindex(&old);
                }
                self.index(sb);
                self.sandboxes.insert(sb.id.clone(), sb.clone());
            }
            Write::DeleteSandbox(id) => {
                if let Some(old) = self.sandboxes.remove(id) {
                    self.unindex(&old);
                }
            }
            Write::PutHost(h) => match self.hosts.get_mut(&h.id) {
                Some(hs) => hs.host = h.clone(),
                None => {
                    self.hosts.insert(h.id.clone(), HostState::new(h.clone()));
                }
            },
            Write::DeleteHost(id) => {
                self.hosts.remove(id);
            }
            Write::PutOutbox(e) => {
                if let Some(hs) = self.hosts.get_mut(&e.host) {
                    hs.outbox.insert(e.seq, e.clone());
                }
            }
            Write::DeleteOutbox { host, through_seq } => {
                if let Some(hs) = self.hosts.get_mut(host) {
                    hs.outbox = hs.outbox.split_off(&(through_seq + 1));
                }
            }
            Write::PutPool(p) => {
                self.pools.insert(p.template.clone(), p.clone());
            }
        }
    }

    fn index(&mut self, sb: &Sandbox) {
        self.counts[state_index(sb.state)] += 1;
        if let Some(key) = &sb.idempotency_key {
            self.by_idempotency_key.insert(key.clone(), sb.id.clone());
        }
        if sb.state.is_terminal() {
            return;
        }
        if let Some(owner) = &sb.owner {
            *self.live_by_owner.entry(owner.clone()).or_default() += 1;
        }
        self.expiry.insert((sb.expires_at_ms, sb.id.clone()));
        if sb.state == SandboxState::Pending {
            self.pending.insert((sb.created_at_ms, sb.id.clone()));
        }
        if let Some(hs) = sb.host.as_ref().and_then(|h| self.hosts.get_mut(h)) {
            hs.live.insert(sb.id.clone());
            hs.allocated_cpu_millis += u64::from(sb.spec.cpu_millis);
            hs.allocated_memory_mb += u64::from(sb.spec.memory_mb);
        }
    }

    fn unindex(&mut self, sb: &Sandbox) {
        self.counts[state_index(sb.state)] -= 1;
        if let Some(key) = &sb.idempotency_key {
            self.by_idempotency_key.remove(key);
        }
        if sb.state.is_terminal() {
            return;
        }
        if let Some(owner) = &sb.owner {
            if let Some(n) = self.live_by_owner.get_mut(owner) {
                *n -= 1;
                if *n == 0 {
                    self.live_by_owner.remove(owner);
                }
            }
        }
        self.expiry.remove(&(sb.expires_at_ms, sb.id.clone()));
        if sb.state == SandboxState::Pending {
            self.pending.remove(&(sb.created_at_ms, sb.id.clone()));
        }
        if let Some(hs) = sb.host.as_ref().and_then(|h| self.hosts.get_mut(h)) {
            if hs.live.remove(&sb.id) {
                hs.allocated_cpu_millis -= u64::from(sb.spec.cpu_millis);
                hs.allocated_memory_mb -= u64::from(sb.spec.memory_mb);
            }
        }
    }

    /// Live sandboxes `owner` holds.
    pub fn live_owned_by(&self, owner: &str) -> usize {
        self.live_by_owner.get(owner).copied().unwrap_or(0)
    }

    /// How many sandboxes are in `state`.
    pub fn count(&self, state: SandboxState) -> u64 {
        self.counts[state_index(state)]
    }

    /// Committed commands not yet acknowledged, over all hosts.
    pub fn outbox_backlog(&self) -> u64 {
        self.hosts.values().map(|h| h.outbox.len() as u64).sum()
    }

    /// Whether any host offers `template`.
    pub fn template_offered(&self, template: &str) -> bool {
        self.hosts.values().any(|h| h.host.templates.iter().any(|t| t == template))
    }
}

#[cfg(test)]
mod tests;
