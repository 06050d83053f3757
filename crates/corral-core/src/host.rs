//! The durable record of a host (one dataplane).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the server remembers of a host across restarts. Liveness (last
/// heartbeat, usage) is soft state kept in memory only: after a server restart
/// every host simply gets a fresh lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: String,
    /// Changes when the server loses track of what the host has applied (a new
    /// registration after the host was forgotten); a dataplane holding another
    /// epoch gets a full sync.
    pub epoch: u64,
    /// Highest outbox seq ever issued to this host (0 = none).
    pub last_seq: u64,
    /// Highest seq the dataplane confirmed applying; entries up to it are deleted.
    pub acked_seq: u64,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub templates: Vec<String>,
    /// Where the dataplane serves exec and files for its sandboxes.
    pub agent_addr: String,
    pub registered_at_ms: u64,
    /// How many full syncs this host has needed; a resuming restart adds none.
    #[serde(default)]
    pub full_syncs: u64,
    /// Sandboxes plus idle pool members the host holds at most (0: no bound);
    /// past it the scheduler only sends warm claims or makes room by
    /// evicting idle pool members.
    #[serde(default)]
    pub max_sandboxes: u64,
}
