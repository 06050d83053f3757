//! The vocabulary of changes: a batch of whole-record writes.
//!
//! Writes carry complete records rather than field updates so that applying a
//! batch is trivially idempotent and the same list can update both the store
//! and the server's read model.

use corral_core::pool::PoolSpec;
use corral_core::{Host, OutboxEntry, Sandbox};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    PutSandbox(Sandbox),
    /// Forget a sandbox entirely (retention of ended sandboxes is over).
    DeleteSandbox(String),
    PutHost(Host),
    DeleteHost(String),
    PutOutbox(OutboxEntry),
    /// Delete the host's outbox entries with `seq <= through_seq` (acknowledged).
    DeleteOutbox { host: String, through_seq: u64 },
    /// Set a template's warm-pool bounds.
    PutPool(PoolSpec),
}

/// Everything a store holds.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub sandboxes: Vec<Sandbox>,
    pub hosts: Vec<Host>,
    /// Sorted by `(host, seq)`.
    pub outbox: Vec<OutboxEntry>,
    pub pools: Vec<PoolSpec>,
}
