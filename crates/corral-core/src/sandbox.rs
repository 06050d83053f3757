//! The sandbox record and its state machine.
//!
//! ```text
//! pending → enqueued → starting → running → stopping → terminated
//!      \________\__________\__________\__________\____→ failed
//! ```
//! Every accepted sandbox ends `running` or in a terminal state with an
//! [`EndReason`]; [`SandboxState::can_become`] is the single place that says
//! which moves are legal, so a late or duplicated event can never move a
//! sandbox backwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Its own network namespace with loopback only.
    #[default]
    Isolated,
    /// Loopback plus `eth0`, one end of a veth pair on its host, routed out
    /// through the host's masquerading NAT. Needs a free network slot there.
    Nat,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 2] = [Self::Isolated, Self::Nat];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Isolated => "isolated",
            Self::Nat => "nat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user asks for. Stored verbatim with the sandbox and sent to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxSpec {
    pub template: String,
    pub cpu_millis: u32,
    pub memory_mb: u32,
    pub ttl_s: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `isolated` (records written before the field existed) or `nat`.
    #[serde(default)]
    pub network: NetworkMode,
}

/// What an empty create request resolves to (the documented REST defaults).
impl Default for SandboxSpec {
    fn default() -> Self {
        use crate::validate::{DEFAULT_CPU_MILLIS, DEFAULT_MEMORY_MB, DEFAULT_TEMPLATE, DEFAULT_TTL_S};
        SandboxSpec {
            template: DEFAULT_TEMPLATE.to_string(),
            cpu_millis: DEFAULT_CPU_MILLIS as u32,
            memory_mb: DEFAULT_MEMORY_MB as u32,
            ttl_s: DEFAULT_TTL_S as u32,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            network: NetworkMode::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Accepted and durable, waiting for a host.
    Pending,
    /// A host was chosen and an `AddSandbox` command is in its outbox.
    Enqueued,
    /// The host's dataplane acknowledged the command and is starting it.
    Starting,
    Running,
    /// A stop was decided; the host has not confirmed it yet.
    Stopping,
    Terminated,
    Failed,
}

impl SandboxState {
    pub const ALL: [SandboxState; 7] = [
        Self::Pending,
        Self::Enqueued,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Terminated,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Enqueued => "enqueued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
    }

    /// Whether the host is (or is about to be) running this sandbox: what a
    /// full sync of the host's desired state contains.
    pub fn is_wanted_on_host(self) -> bool {
        matches!(self, Self::Enqueued | Self::Starting | Self::Running)
    }

    /// The legal moves. Forward only; anything may fail or end, nothing leaves
    /// a terminal state.
    pub fn can_become(self, next: SandboxState) -> bool {
        use SandboxState::*;
        match (self, next) {
            (a, _) if a.is_terminal() => false,
            (_, Terminated | Failed) => true,
            (Pending, Enqueued) => true,
            (Enqueued, Starting | Running | Stopping) => true,
            (Starting, Running | Stopping) => true,
            (Running, Stopping) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sandbox stopped being `running` (or never got there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Deleted,
    TtlExpired,
    Exited,
    OomKilled,
    StartFailed,
    NoCapacity,
    HostLost,
    Evicted,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::TtlExpired => "ttl_expired",
            Self::Exited => "exited",
            Self::OomKilled => "oom_killed",
            Self::StartFailed => "start_failed",
            Self::NoCapacity => "no_capacity",
            Self::HostLost => "host_lost",
            Self::Evicted => "evicted",
        }
    }

    /// The terminal state a sandbox ending for this reason lands in: failures
    /// of the platform are `failed`, everything asked for or natural is
    /// `terminated`.
    pub fn terminal_state(self) -> SandboxState {
        match self {
            Self::StartFailed | Self::NoCapacity | Self::HostLost => SandboxState::Failed,
            _ => SandboxState::Terminated,
        }
    }
}

/// The durable record of one sandbox, also its REST representation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub state: SandboxState,
    /// The host it was placed on, once scheduled.
    pub host: Option<String>,
    /// Set when the sandbox ends; while `stopping`, the reason it is stopping for.
    pub end_reason: Option<EndReason>,
    #[serde(flatten)]
    pub spec: SandboxSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A human-readable detail for failures (start error, exit status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// When the TTL ends it; fixed at creation.
    pub expires_at_ms: u64,
    /// How it started: `warm` (claimed a ready pool member), `wait` (waited
    /// for a member that was warming) or `cold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_path: Option<String>,
    /// The host that refused it for lack of room; it is placed elsewhere once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerouted_from: Option<String>,
    /// Who created it: a fingerprint of the API token (`sha256:` and 16 hex
    /// digits), or `anonymous` on an open server. Never the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Sandbox {
    pub fn new(id: String, spec: SandboxSpec, idempotency_key: Option<String>, now_ms: u64) -> Self {
        let expires_at_ms = now_ms.saturating_add(u64::from(spec.ttl_s) * 1000);
        Sandbox {
            id,
            state: SandboxState::Pending,
            host: None,
            end_reason: None,
            spec,
            idempotency_key,
            message: None,
            created_at_ms: now_ms,
            started_at_ms: None,
            ended_at_ms: None,
            expires_at_ms,
            start_path: None,
            rerouted_from: None,
            owner: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SandboxState::*;

    #[test]
    fn states_only_move_forward() {
        assert!(Pending.can_become(Enqueued));
        assert!(Enqueued.can_become(Starting));
        assert!(Enqueued.can_become(Running), "a fast start may skip the starting report");
        assert!(Starting.can_become(Running));
        assert!(Running.can_become(Stopping));
        assert!(Stopping.can_become(Terminated));
        assert!(Pending.can_become(Failed));
        assert!(!Running.can_become(Starting));
        assert!(!Running.can_become(Enqueued));
        assert!(!Stopping.can_become(Running), "a late start report must not revive a stopping sandbox");
        assert!(!Terminated.can_become(Failed));
        assert!(!Failed.can_become(Running));
    }

    #[test]
    fn names_round_trip() {
        for st in SandboxState::ALL {
            assert_eq!(SandboxState::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{}\"", st.as_str()));
        }
        assert_eq!(SandboxState::parse("bogus"), None);
        assert_eq!(serde_json::to_string(&EndReason::TtlExpired).unwrap(), "\"ttl_expired\"");
        for m in NetworkMode::ALL {
            assert_eq!(NetworkMode::parse(m.as_str()), Some(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(NetworkMode::parse("bridge"), None);
    }

    #[test]
    fn specs_stored_before_the_network_field_are_isolated() {
        let old = r#"{"template":"base","cpu_millis":1000,"memory_mb":512,"ttl_s":60}"#;
        let spec: SandboxSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.network, NetworkMode::Isolated);
    }

    #[test]
    fn platform_failures_are_failed_and_the_rest_terminated() {
        assert_eq!(EndReason::StartFailed.terminal_state(), Failed);
        assert_eq!(EndReason::NoCapacity.terminal_state(), Failed);
        assert_eq!(EndReason::HostLost.terminal_state(), Failed);
        assert_eq!(EndReason::Deleted.terminal_state(), Terminated);
        assert_eq!(EndReason::TtlExpired.terminal_state(), Terminated);
        assert_eq!(EndReason::Exited.terminal_state(), Terminated);
    }
}
