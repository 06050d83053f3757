//! Commands the server sends to a host's dataplane through the outbox.

use serde::{Deserialize, Serialize};

use crate::sandbox::{EndReason, SandboxSpec};

/// One instruction for one host. Each is applied at most once, in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Start this sandbox (emitted exactly once per sandbox, when it is placed).
    AddSandbox { sandbox_id: String, spec: SandboxSpec },
    /// Stop and remove this sandbox.
    RemoveSandbox { sandbox_id: String, reason: EndReason },
    /// Keep a warm pool of this template with these bounds.
    SetPool { pool: crate::pool::PoolSpec },
}

impl Command {
    /// The sandbox the command is about, if any.
    pub fn sandbox_id(&self) -> Option<&str> {
        match self {
            Command::AddSandbox { sandbox_id, .. } | Command::RemoveSandbox { sandbox_id, .. } => Some(sandbox_id),
            Command::SetPool { .. } => None,
        }
    }
}

/// A command waiting in a host's outbox, keyed by `(host, seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub host: String,
    pub seq: u64,
    pub command: Command,
    /// When the decision that wrote it was made (its transaction commits
    /// right after); the drain-latency clock.
    pub committed_at_ms: u64,
    /// The same instant in microseconds, sent to the dataplane so that
    /// decision → received latency can be measured.
    #[serde(default)]
    pub decided_at_us: u64,
}
