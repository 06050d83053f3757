//! The rules hold on every store real decisions produce, and each broken
//! store is reported under exactly the rule it breaks.

use corral_core::{Command, EndReason, OutboxEntry, SandboxSpec, SandboxState};
use corral_store::{MemoryStore, Snapshot, Store};

use super::{check, Violation};
use crate::state::decide::*;
use crate::state::tests::World;

fn spec() -> SandboxSpec {
    SandboxSpec {
        template: "base".into(),
        cpu_millis: 100,
        memory_mb: 64,
        ttl_s: 3600,
        ..Default::default()
    }
}

fn on_host(w: &World, host: &str) -> Vec<String> {
    w.state.hosts[host].live.iter().cloned().collect()
}

/// Two hosts; on `h1` everything acknowledged, one sandbox running, one
/// stopping, one exited; on `h2` everything still enqueued.
fn decided() -> Snapshot {
    let mut w = World::new();
    w.add_host("h1");
    w.add_host("h2");
    for i in 0..8 {
        let key = (i % 2 == 0).then(|| format!("key-{i}"));
        w.run(|tx, f| create(tx, f, format!("sb-{i}"), spec(), key)).0.expect("create");
    }
    assert!(on_host(&w, "h1").len() >= 3 && !on_host(&w, "h2").is_empty(), "placement spreads over both hosts");
    let h1 = w.state.hosts["h1"].host.clone();
    w.run(|tx, f| ack(tx, f, "h1", h1.epoch, h1.last_seq));
    let on_h1 = on_host(&w, "h1");
    let started = on_h1.iter().map(|id| HostEvent::Started { sandbox_id: id.clone(), path: None }).collect();
    w.run(|tx, f| host_events(tx, f, "h1", started));
    w.run(|tx, f| stop(tx, f, &on_h1[0], EndReason::Deleted)).0.expect("stop");
    let exited = HostEvent::Ended { sandbox_id: on_h1[1].clone(), reason: EndReason::Exited, message: String::new() };
    w.run(|tx, f| host_events(tx, f, "h1", vec![exited]));
    // Committed in order, as the controller would have, batch by batch.
    let store = MemoryStore::new();
    store.commit(&w.log).expect("memory commit");
    store.load().expect("load")
}

fn rules(v: &[Violation]) -> Vec<&'static str> {
    v.iter().map(|v| v.rule).collect()
}

fn find(snap: &mut Snapshot, state: SandboxState) -> &mut corral_core::Sandbox {
    snap.sandboxes.iter_mut().find(|s| s.state == state).expect("a sandbox in that state")
}

#[test]
fn a_store_made_by_decisions_breaks_no_rule() {
    let snap = decided();
    let states: Vec<SandboxState> = snap.sandboxes.iter().map(|s| s.state).collect();
    for s in [SandboxState::Enqueued, SandboxState::Running, SandboxState::Stopping, SandboxState::Terminated] {
        assert!(states.contains(&s), "the fixture has a {s} sandbox");
    }
    assert_eq!(check(&snap), vec![]);
    assert_eq!(check(&Snapshot::default()), vec![], "an empty store is consistent");
}

#[test]
fn an_ended_sandbox_without_a_reason_is_reported() {
    let mut snap = decided();
    let sb = find(&mut snap, SandboxState::Terminated);
    sb.end_reason = None;
    let id = sb.id.clone();
    let v = check(&snap);
    assert_eq!(
        v,
        vec![Violation { rule: "sandbox-end", subject: id.clone(), detail: "terminated without an end_reason".into() }]
    );
    assert_eq!(v[0].to_string(), format!("sandbox-end: {id}: terminated without an end_reason"));
}

#[test]
fn a_reason_that_does_not_match_the_state_is_reported() {
    let mut snap = decided();
    find(&mut snap, SandboxState::Terminated).end_reason = Some(EndReason::HostLost);
    assert_eq!(rules(&check(&snap)), vec!["sandbox-end"]);
}

#[test]
fn a_running_sandbox_on_an_unknown_host_is_reported() {
    let mut snap = decided();
    find(&mut snap, SandboxState::Running).host = Some("gone".into());
    assert_eq!(rules(&check(&snap)), vec!["sandbox-host"]);
}

#[test]
fn a_pending_sandbox_with_a_host_is_reported() {
    let mut snap = decided();
    let sb = find(&mut snap, SandboxState::Running);
    sb.state = SandboxState::Pending;
    assert_eq!(rules(&check(&snap)), vec!["sandbox-host"]);
}

#[test]
fn a_shared_idempotency_key_is_reported() {
    let mut snap = decided();
    let key = snap.sandboxes.iter().find_map(|s| s.idempotency_key.clone()).expect("a keyed sandbox");
    let other = snap.sandboxes.iter_mut().find(|s| s.idempotency_key.is_none()).expect("an unkeyed sandbox");
    other.idempotency_key = Some(key);
    assert_eq!(rules(&check(&snap)), vec!["idempotency-key"]);
}

#[test]
fn an_outbox_row_of_an_unknown_host_is_reported() {
    let mut snap = decided();
    let mut row = snap.outbox[0].clone();
    row.host = "ghost".into();
    snap.outbox.push(row);
    let v = check(&snap);
    assert_eq!(rules(&v), vec!["outbox-host"]);
    assert!(v[0].subject.starts_with("ghost/"), "{v:?}");
}

#[test]
fn a_gap_in_a_hosts_outbox_is_reported() {
    let mut snap = decided();
    let h2: Vec<&OutboxEntry> = snap.outbox.iter().filter(|e| e.host == "h2").collect();
    assert!(!h2.is_empty());
    let first = h2[0].seq;
    // Losing h2's first command leaves a gap and an enqueued sandbox without one.
    snap.outbox.retain(|e| !(e.host == "h2" && e.seq == first));
    let v = check(&snap);
    assert_eq!(rules(&v), vec!["outbox-seq", "enqueued-command"], "{v:?}");
    assert!(v[0].detail.contains(&format!("missing [{first}]")), "{}", v[0]);
}

#[test]
fn an_acknowledged_row_that_was_not_deleted_is_reported() {
    let mut snap = decided();
    let h1 = snap.hosts.iter().find(|h| h.id == "h1").expect("h1").clone();
    let ended = find(&mut snap, SandboxState::Terminated).id.clone();
    let mut row = snap.outbox.iter().find(|e| e.host == "h2").expect("a row").clone();
    row.host = "h1".into();
    row.seq = h1.acked_seq;
    // A command that is fine in itself, at a seq the host already acknowledged.
    row.command = Command::RemoveSandbox { sandbox_id: ended, reason: EndReason::Deleted };
    snap.outbox.push(row);
    let v = check(&snap);
    assert_eq!(rules(&v), vec!["outbox-seq"], "{v:?}");
    assert!(v[0].detail.contains(&format!("unexpected [{}]", h1.acked_seq)), "{}", v[0]);
}

#[test]
fn a_remove_for_a_running_sandbox_is_reported() {
    let mut snap = decided();
    let stopping = find(&mut snap, SandboxState::Stopping);
    stopping.state = SandboxState::Running;
    stopping.end_reason = None;
    assert_eq!(rules(&check(&snap)), vec!["outbox-command"]);
}

#[test]
fn an_ack_beyond_the_last_seq_is_reported() {
    let mut snap = decided();
    let h1 = snap.hosts.iter_mut().find(|h| h.id == "h1").expect("h1");
    h1.acked_seq = h1.last_seq + 1;
    assert_eq!(rules(&check(&snap)), vec!["host-seq"]);
}
