//! Conversions between protobuf messages and the core model.

use corral_core::pool::PoolSpec;
use corral_core::{Command, EndReason, OutboxEntry, SandboxSpec};
use corral_proto::v1 as pb;

use crate::state::decide::HostEvent;

pub fn spec_to_pb(s: &SandboxSpec) -> pb::SandboxSpec {
    pb::SandboxSpec {
        template: s.template.clone(),
        cpu_millis: s.cpu_millis,
        memory_mb: s.memory_mb,
        ttl_s: s.ttl_s,
        env: s.env.clone().into_iter().collect(),
        labels: s.labels.clone().into_iter().collect(),
        network: s.network.as_str().to_string(),
    }
}

pub fn command_to_pb(e: &OutboxEntry) -> pb::Command {
    let (seq, c) = (e.seq, &e.command);
    let kind = match c {
        Command::AddSandbox { sandbox_id, spec } => {
            pb::command::Kind::Add(pb::AddSandbox { sandbox_id: sandbox_id.clone(), spec: Some(spec_to_pb(spec)) })
        }
        Command::RemoveSandbox { sandbox_id, reason } => pb::command::Kind::Remove(pb::RemoveSandbox {
            sandbox_id: sandbox_id.clone(),
            reason: reason.as_str().to_string(),
        }),
        Command::SetPool { pool } => pb::command::Kind::SetPool(pb::SetPool { pool: Some(pool_to_pb(pool)) }),
    };
    pb::Command { seq, kind: Some(kind), decided_at_us: e.decided_at_us }
}

pub fn pool_to_pb(p: &PoolSpec) -> pb::PoolSpec {
    let prewarm = p
        .prewarm
        .iter()
        .map(|w| pb::PrewarmWindow { start_ms: w.start_ms, end_ms: w.end_ms, size: w.size })
        .collect();
    pb::PoolSpec { template: p.template.clone(), min: p.min, max: p.max, buffer: p.buffer, prewarm }
}

pub fn parse_end_reason(s: &str) -> Option<EndReason> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// A dataplane event in the server's terms; `None` for kinds it does not know.
pub fn event_from_pb(e: pb::SandboxEvent) -> Option<HostEvent> {
    let sandbox_id = e.sandbox_id;
    match pb::EventKind::try_from(e.kind).ok()? {
        pb::EventKind::Started => {
            let path = (!e.start_path.is_empty()).then_some(e.start_path);
            Some(HostEvent::Started { sandbox_id, path })
        }
        pb::EventKind::StartFailed => {
            let refused = e.end_reason == EndReason::NoCapacity.as_str();
            Some(HostEvent::StartFailed { sandbox_id, message: e.message, refused })
        }
        pb::EventKind::Exited | pb::EventKind::Stopped => {
            let fallback = if e.kind == pb::EventKind::Stopped as i32 { EndReason::Deleted } else { EndReason::Exited };
            let reason = parse_end_reason(&e.end_reason).unwrap_or(fallback);
            Some(HostEvent::Ended { sandbox_id, reason, message: e.message })
        }
        pb::EventKind::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_parse_by_their_contract_names() {
        assert_eq!(parse_end_reason("oom_killed"), Some(EndReason::OomKilled));
        assert_eq!(parse_end_reason("ttl_expired"), Some(EndReason::TtlExpired));
        assert_eq!(parse_end_reason("bogus"), None);
    }

    #[test]
    fn stopped_without_a_reason_means_deleted() {
        let e = pb::SandboxEvent { sandbox_id: "s".into(), kind: pb::EventKind::Stopped as i32, ..Default::default() };
        assert_eq!(
            event_from_pb(e),
            Some(HostEvent::Ended { sandbox_id: "s".into(), reason: EndReason::Deleted, message: String::new() })
        );
    }
}
