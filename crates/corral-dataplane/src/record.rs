//! What the dataplane remembers of each sandbox, and the conversions between
//! the wire spec and the core one.

use std::collections::BTreeMap;

use corral_core::reconcile::Local;
use corral_core::SandboxSpec;
use serde::{Deserialize, Serialize};

/// The durable record of one known sandbox: its spec and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub spec: SandboxSpec,
    pub status: Status,
}

/// A sandbox's local status. Terminal ones are kept until the server acks the
/// event that reports them, so a crash before the ack re-reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Accepted; being started or running.
    Alive,
    /// Could not be started (reported START_FAILED).
    StartFailed { message: String },
    /// Ended on its own (reported EXITED).
    Exited { message: String },
    /// Killed by the out-of-memory killer (reported EXITED, `oom_killed`).
    OomKilled { message: String },
    /// The server asked to stop it; STOPPED is (about to be) reported.
    Stopping { reason: String },
    /// Stopped and reported.
    Stopped { reason: String },
}

impl Status {
    /// How the full-sync diff sees it.
    pub fn local(&self) -> Local {
        match self {
            Status::Alive => Local::Alive,
            _ => Local::Ended,
        }
    }

    pub fn is_alive(&self) -> bool {
        matches!(self, Status::Alive)
    }
}

/// Converts the wire spec; a missing spec gets the base template and no limits.
pub fn spec_from_proto(spec: Option<corral_proto::v1::SandboxSpec>) -> SandboxSpec {
    let s = spec.unwrap_or_default();
    SandboxSpec {
        template: if s.template.is_empty() {
            "base".to_string()
        } else {
            s.template
        },
        cpu_millis: s.cpu_millis,
        memory_mb: s.memory_mb,
        ttl_s: s.ttl_s,
        env: s.env.into_iter().collect::<BTreeMap<_, _>>(),
        labels: s.labels.into_iter().collect::<BTreeMap<_, _>>(),
        // A mode this host does not know runs as the most restrictive one.
        network: corral_core::NetworkMode::parse(&s.network).unwrap_or_default(),
    }
}
