//! Exact expectations for the server's decisions.

use std::collections::HashMap;

use corral_core::{Command, EndReason, SandboxSpec, SandboxState};
use corral_store::Write;

use super::decide::*;
use super::State;

fn spec() -> SandboxSpec {
    SandboxSpec {
        template: "base".into(),
        cpu_millis: 1000,
        memory_mb: 512,
        ttl_s: 3600,
        ..Default::default()
    }
}

/// Decisions on a working state, as the controller makes them (the store
/// rules' tests replay `log` into a store).
pub(super) struct World {
    pub(super) state: State,
    live: HashMap<String, Liveness>,
    policy: Policy,
    pools: PoolView,
    net: NetSlots,
    now: u64,
    /// Every write made so far, in order.
    pub(super) log: Vec<Write>,
}

impl World {
    pub(super) fn new() -> Self {
        World {
            state: State::default(),
            live: HashMap::new(),
            policy: Policy::default(),
            pools: PoolView::default(),
            net: NetSlots::default(),
            now: 1_000_000,
            log: Vec::new(),
        }
    }

    /// Runs one decision and returns the writes it made.
    pub(super) fn run<R>(&mut self, f: impl FnOnce(&mut Tx, &Fleet) -> R) -> (R, Vec<Write>) {
        let fleet = Fleet { pools: &self.pools, net: &self.net, now_us: self.now * 1000, liveness: &self.live, policy: &self.policy };
        let mut tx = Tx::new(&mut self.state);
        let r = f(&mut tx, &fleet);
        self.log.extend(tx.writes.iter().cloned());
        (r, tx.writes)
    }

    pub(super) fn add_host(&mut self, id: &str) -> u64 {
        self.add_host_max(id, 0)
    }

    /// A host that holds at most `max` sandboxes plus pool members (0: no bound).
    fn add_host_max(&mut self, id: &str, max: u64) -> u64 {
        self.live.insert(id.into(), Liveness { last_seen_ms: self.now, cpu_pct: 0.0 });
        let reg = Registration {
            host_id: id.into(),
            cpu_millis: 2000,
            memory_mb: 4096,
            templates: vec!["base".into()],
            agent_addr: "127.0.0.1:9".into(),
            max_sandboxes: max,
        };
        self.run(|tx, f| register(tx, f, reg)).0.epoch
    }

    /// A heartbeat's pool report, as `(template, ready, min, buffer)`.
    fn set_pools(&mut self, host: &str, pools: &[(&str, i64, u32, u32)]) {
        let view = pools
            .iter()
            .map(|&(t, ready, min, buffer)| (t.to_string(), PoolCounts { ready, warming: 0, min, buffer }))
            .collect();
        self.pools.lock().insert(host.into(), view);
    }

    fn create(&mut self, id: &str) -> CreateOutcome {
        self.run(|tx, f| create(tx, f, id.into(), spec(), None)).0.unwrap()
    }

    fn sb(&self, id: &str) -> &corral_core::Sandbox {
        &self.state.sandboxes[id]
    }

    fn outbox_seqs(&self, host: &str) -> Vec<u64> {
        self.state.hosts[host].outbox.keys().copied().collect()
    }
}

#[test]
fn a_create_is_placed_and_its_command_written_in_the_same_transaction() {
    let mut w = World::new();
    w.add_host("h1");
    let (out, writes) = w.run(|tx, f| create(tx, f, "sb-a".into(), spec(), None));
    let CreateOutcome::Created(sb) = out.unwrap() else { panic!("not created") };
    assert_eq!(sb.state, SandboxState::Enqueued);
    assert_eq!(sb.host.as_deref(), Some("h1"));
    assert!(matches!(&writes[0], Write::PutSandbox(s) if s.state == SandboxState::Enqueued));
    assert!(matches!(&writes[1], Write::PutOutbox(e) if e.seq == 1
        && e.command == Command::AddSandbox { sandbox_id: "sb-a".into(), spec: spec() }));
    assert!(matches!(&writes[2], Write::PutHost(h) if h.last_seq == 1));
    assert_eq!(writes.len(), 3);
}

#[test]
fn seqs_increase_by_one_per_host() {
    let mut w = World::new();
    w.add_host("h1");
    for i in 0..5 {
        w.create(&format!("sb-{i}"));
    }
    assert_eq!(w.outbox_seqs("h1"), vec![1, 2, 3, 4, 5]);
    assert_eq!(w.state.hosts["h1"].host.last_seq, 5);
}

#[test]
fn creates_spread_over_idle_hosts() {
    let mut w = World::new();
    w.add_host("h1");
    w.add_host("h2");
    for i in 0..4 {
        w.create(&format!("sb-{i}"));
    }
    assert_eq!(w.state.hosts["h1"].live.len(), 2);
    assert_eq!(w.state.hosts["h2"].live.len(), 2);
}

#[test]
fn the_same_idempotency_key_returns_the_first_sandbox() {
    let mut w = World::new();
    w.add_host("h1");
    let first = w.run(|tx, f| create(tx, f, "sb-1".into(), spec(), Some("k".into()))).0.unwrap();
    let (again, writes) = w.run(|tx, f| create(tx, f, "sb-2".into(), spec(), Some("k".into())));
    let CreateOutcome::Created(a) = first else { panic!() };
    assert_eq!(again.unwrap(), CreateOutcome::Replayed(a));
    assert!(writes.is_empty(), "a replay writes nothing");
    let mut other = spec();
    other.memory_mb = 1024;
    let (conflict, writes) = w.run(|tx, f| create(tx, f, "sb-3".into(), other, Some("k".into())));
    assert_eq!(conflict, Err(DecideError::KeyConflict("k".into())));
    assert!(writes.is_empty());
    assert_eq!(w.state.sandboxes.len(), 1);
}

#[test]
fn without_hosts_a_create_waits_then_ends_no_capacity() {
    let mut w = World::new();
    let CreateOutcome::Created(sb) = w.create("sb-1") else { panic!() };
    assert_eq!(sb.state, SandboxState::Pending);
    w.now += w.policy.pending_timeout_ms - 1;
    w.run(tick);
    assert_eq!(w.sb("sb-1").state, SandboxState::Pending);
    w.now += 2;
    w.run(tick);
    assert_eq!(w.sb("sb-1").state, SandboxState::Failed);
    assert_eq!(w.sb("sb-1").end_reason, Some(EndReason::NoCapacity));
}

#[test]
fn a_registering_host_takes_the_pending_queue_in_order() {
    let mut w = World::new();
    w.create("sb-1");
    w.now += 1;
    w.create("sb-2");
    w.add_host("h1");
    assert_eq!(w.sb("sb-1").state, SandboxState::Enqueued);
    assert_eq!(w.sb("sb-2").state, SandboxState::Enqueued);
    let cmds: Vec<_> = w.state.hosts["h1"].outbox.values().map(|e| e.command.sandbox_id().unwrap_or_default().to_string()).collect();
    assert_eq!(cmds, vec!["sb-1", "sb-2"]);
    assert!(w.state.pending.is_empty());
}

#[test]
fn an_ack_deletes_the_prefix_and_marks_starting() {
    let mut w = World::new();
    let epoch = w.add_host("h1");
    for i in 1..=3 {
        w.create(&format!("sb-{i}"));
    }
    w.now += 7;
    let (_, writes) = w.run(|tx, f| {
        ack(tx, f, "h1", epoch, 2);
        assert_eq!(tx.drained_ms, vec![7, 7]);
    });
    assert!(writes.contains(&Write::DeleteOutbox { host: "h1".into(), through_seq: 2 }));
    assert_eq!(w.outbox_seqs("h1"), vec![3]);
    assert_eq!(w.state.hosts["h1"].host.acked_seq, 2);
    assert_eq!(w.sb("sb-1").state, SandboxState::Starting);
    assert_eq!(w.sb("sb-2").state, SandboxState::Starting);
    assert_eq!(w.sb("sb-3").state, SandboxState::Enqueued);
    // Repeated, stale, future and wrong-epoch acks change nothing.
    for (e, s) in [(epoch, 2), (epoch, 1), (epoch, 9), (epoch + 1, 3)] {
        let (_, writes) = w.run(|tx, f| ack(tx, f, "h1", e, s));
        assert!(writes.is_empty(), "ack ({e}, {s}) wrote {writes:?}");
    }
}

#[test]
fn start_and_exit_events_drive_the_state() {
    let mut w = World::new();
    w.add_host("h1");
    w.create("sb-1");
    w.create("sb-2");
    w.run(|tx, f| host_events(tx, f, "h1", vec![HostEvent::Started { sandbox_id: "sb-1".into(), path: None }]));
    assert_eq!(w.sb("sb-1").state, SandboxState::Running);
    assert_eq!(w.sb("sb-1").started_at_ms, Some(w.now));
    let (_, writes) = w.run(|tx, f| host_events(tx, f, "h1", vec![HostEvent::Started { sandbox_id: "sb-1".into(), path: None }]));
    assert!(writes.is_empty(), "a repeated start report is a no-op");
    let (_, writes) = w.run(|tx, f| host_events(tx, f, "h2", vec![HostEvent::Started { sandbox_id: "sb-2".into(), path: None }]));
    assert!(writes.is_empty(), "reports from another host are ignored");
    w.run(|tx, f| {
        host_events(
            tx,
            f,
            "h1",
            vec![
                HostEvent::Ended { sandbox_id: "sb-1".into(), reason: EndReason::OomKilled, message: "oom".into() },
                HostEvent::StartFailed { sandbox_id: "sb-2".into(), message: "no such template".into(), refused: false },
            ],
        )
    });
    assert_eq!((w.sb("sb-1").state, w.sb("sb-1").end_reason), (SandboxState::Terminated, Some(EndReason::OomKilled)));
    assert_eq!((w.sb("sb-2").state, w.sb("sb-2").end_reason), (SandboxState::Failed, Some(EndReason::StartFailed)));
    assert_eq!(w.sb("sb-2").message.as_deref(), Some("no such template"));
    assert!(w.state.hosts["h1"].live.is_empty());
    assert_eq!(w.state.hosts["h1"].allocated_cpu_millis, 0);
}

#[test]
fn delete_goes_through_stopping_and_ends_with_its_reason() {
    let mut w = World::new();
    w.add_host("h1");
    w.create("sb-1");
    w.run(|tx, f| host_events(tx, f, "h1", vec![HostEvent::Started { sandbox_id: "sb-1".into(), path: None }]));
    let (sb, _) = w.run(|tx, f| stop(tx, f, "sb-1", EndReason::Deleted));
    let sb = sb.unwrap();
    assert_eq!((sb.state, sb.end_reason), (SandboxState::Stopping, Some(EndReason::Deleted)));
    let last = w.state.hosts["h1"].outbox.values().last().unwrap().command.clone();
    assert_eq!(last, Command::RemoveSandbox { sandbox_id: "sb-1".into(), reason: EndReason::Deleted });
    // The host reports the stop with its own wording; the staged reason wins.
    w.run(|tx, f| {
        host_events(
            tx,
            f,
            "h1",
            vec![HostEvent::Ended { sandbox_id: "sb-1".into(), reason: EndReason::Exited, message: String::new() }],
        )
    });
    assert_eq!((w.sb("sb-1").state, w.sb("sb-1").end_reason), (SandboxState::Terminated, Some(EndReason::Deleted)));
    let (again, writes) = w.run(|tx, f| stop(tx, f, "sb-1", EndReason::Deleted));
    assert_eq!(again.unwrap().state, SandboxState::Terminated);
    assert!(writes.is_empty(), "deleting twice changes nothing");
    let (missing, _) = w.run(|tx, f| stop(tx, f, "nope", EndReason::Deleted));
    assert_eq!(missing, Err(DecideError::NotFound("nope".into())));
}

#[test]
fn a_pending_sandbox_is_deleted_at_once() {
    let mut w = World::new();
    w.create("sb-1");
    let (sb, writes) = w.run(|tx, f| stop(tx, f, "sb-1", EndReason::Deleted));
    assert_eq!(sb.unwrap().state, SandboxState::Terminated);
    assert_eq!(writes.len(), 1);
    assert!(w.state.pending.is_empty());
}

#[test]
fn ttl_expiry_stops_with_ttl_expired() {
    let mut w = World::new();
    w.add_host("h1");
    w.create("sb-1");
    w.now += 3_599_999;
    w.live.get_mut("h1").unwrap().last_seen_ms = w.now;
    w.run(tick);
    assert_eq!(w.sb("sb-1").state, SandboxState::Enqueued);
    w.now += 1;
    w.run(tick);
    assert_eq!((w.sb("sb-1").state, w.sb("sb-1").end_reason), (SandboxState::Stopping, Some(EndReason::TtlExpired)));
}

#[test]
fn a_full_sync_wants_live_sandboxes_and_finishes_stopping_ones() {
    let mut w = World::new();
    w.add_host("h1");
    for i in 1..=3 {
        w.create(&format!("sb-{i}"));
    }
    w.run(|tx, f| stop(tx, f, "sb-2", EndReason::Deleted)).0.unwrap();
    let desired: Vec<String> = desired_on_host(&w.state, "h1").into_iter().map(|(id, _)| id).collect();
    assert_eq!(desired, vec!["sb-1", "sb-3"]);
    let stopping = stopping_on_host(&w.state, "h1");
    assert_eq!(stopping, vec!["sb-2"]);
    w.create("sb-4");
    w.run(|tx, f| stop(tx, f, "sb-4", EndReason::Deleted)).0.unwrap();
    w.run(|tx, f| full_sync_sent(tx, f, "h1", &stopping));
    assert_eq!(w.sb("sb-4").state, SandboxState::Stopping, "stopped after the sync was taken: still stopping");
    assert_eq!((w.sb("sb-2").state, w.sb("sb-2").end_reason), (SandboxState::Terminated, Some(EndReason::Deleted)));
    assert_eq!(w.state.hosts["h1"].host.full_syncs, 1);
}

#[test]
fn a_host_past_its_lease_gets_no_work_and_after_grace_loses_its_sandboxes() {
    let mut w = World::new();
    let epoch = w.add_host("h1");
    w.create("sb-1");
    w.now += w.policy.lease_ms + 1;
    let CreateOutcome::Created(sb) = w.create("sb-2") else { panic!() };
    assert_eq!(sb.state, SandboxState::Pending, "an expired host gets no new work");
    w.now += w.policy.host_lost_grace_ms;
    w.run(tick);
    assert_eq!((w.sb("sb-1").state, w.sb("sb-1").end_reason), (SandboxState::Failed, Some(EndReason::HostLost)));
    let host = &w.state.hosts["h1"].host;
    assert!(host.epoch > epoch, "a returning host must full-sync");
    assert!(w.state.hosts["h1"].outbox.is_empty());
}

#[test]
fn the_image_rebuilt_from_the_store_equals_the_working_one() {
    let mut w = World::new();
    w.add_host("h1");
    w.create("sb-1");
    w.create("sb-2");
    w.run(|tx, f| host_events(tx, f, "h1", vec![HostEvent::Started { sandbox_id: "sb-1".into(), path: None }]));
    let store = corral_store::MemoryStore::new();
    let mut all = Vec::new();
    let mut replay = World::new();
    replay.add_host("h1");
    // Re-run the same history, collecting writes, into a store.
    for id in ["sb-1", "sb-2"] {
        let (_, ws) = replay.run(|tx, f| create(tx, f, id.into(), spec(), None));
        all.extend(ws);
    }
    let reg_writes: Vec<Write> =
        replay.state.hosts.values().map(|h| Write::PutHost(h.host.clone())).collect();
    corral_store::Store::commit(&store, &reg_writes).unwrap();
    corral_store::Store::commit(&store, &all).unwrap();
    let rebuilt = State::from_snapshot(corral_store::Store::load(&store).unwrap());
    assert_eq!(rebuilt.outbox_backlog(), 2);
    assert_eq!(rebuilt.count(SandboxState::Enqueued), 2);
    assert_eq!(rebuilt.hosts["h1"].live.len(), 2);
    assert_eq!(rebuilt.hosts["h1"].allocated_cpu_millis, 2000);
}

#[test]
fn warm_slots_steer_placement_and_each_decision_takes_one() {
    let mut w = World::new();
    w.add_host("h1");
    w.add_host("h2");
    w.set_pools("h2", &[("base", 2, 0, 0)]);
    for i in 0..3 {
        w.create(&format!("sb-{i}"));
    }
    // Two go where the warm slots are; the third, with none left, spreads.
    assert_eq!(w.sb("sb-0").host.as_deref(), Some("h2"));
    assert_eq!(w.sb("sb-1").host.as_deref(), Some("h2"));
    assert_eq!(w.sb("sb-2").host.as_deref(), Some("h1"));
    assert_eq!(w.pools.lock()["h2"]["base"].ready, 0);
}

#[test]
fn a_full_host_gets_only_warm_claims_while_another_has_room() {
    let mut w = World::new();
    w.add_host_max("full", 2);
    w.add_host_max("roomy", 100);
    // "full" holds 2 ready members of base: no free slot, but a claim needs none.
    w.set_pools("full", &[("base", 2, 2, 0)]);
    w.set_pools("roomy", &[]);
    for i in 0..3 {
        w.create(&format!("sb-{i}"));
    }
    assert_eq!(w.sb("sb-0").host.as_deref(), Some("full"), "warm slots dominate");
    assert_eq!(w.sb("sb-1").host.as_deref(), Some("full"));
    assert_eq!(w.sb("sb-2").host.as_deref(), Some("roomy"), "no member left and no slot: a free host, no eviction");
}

#[test]
fn the_vacuum_evicts_the_cheapest_idle_member_and_never_overbooks() {
    let mut w = World::new();
    // "a": 2 slots, both held by members of "p" at its min (the last class).
    // "b": 3 slots, held by members of "q" (min 0, buffer 1): surplus first.
    w.add_host_max("a", 2);
    w.add_host_max("b", 3);
    w.set_pools("a", &[("p", 2, 2, 0)]);
    w.set_pools("b", &[("q", 3, 0, 1)]);
    let hosts: Vec<String> = (0..7)
        .map(|i| {
            let id = format!("sb-{i}");
            w.create(&id);
            w.sb(&id).host.clone().unwrap_or_else(|| "pending".into())
        })
        .collect();
    // b gives up its surplus (2 above buffer, then 1 above min), then a its
    // protected members; then nothing is left and the create waits.
    assert_eq!(hosts, ["b", "b", "b", "a", "a", "pending", "pending"]);
    assert_eq!(w.pools.lock()["b"]["q"].ready, 0);
    assert_eq!(w.pools.lock()["a"]["p"].ready, 0);
    assert_eq!(w.sb("sb-6").state, SandboxState::Pending);
}

#[test]
fn nat_creates_go_only_where_network_slots_are_and_each_takes_one() {
    let mut w = World::new();
    w.add_host("h1");
    w.add_host("h2");
    w.net.lock().insert("h1".into(), 0);
    w.net.lock().insert("h2".into(), 2);
    // Warm slots on h1 do not draw a nat sandbox (pool members are isolated).
    w.set_pools("h1", &[("base", 5, 0, 0)]);
    let nat = SandboxSpec { network: corral_core::NetworkMode::Nat, ..spec() };
    for i in 0..3 {
        w.run(|tx, f| create(tx, f, format!("nat-{i}"), nat.clone(), None)).0.unwrap();
    }
    assert_eq!(w.sb("nat-0").host.as_deref(), Some("h2"));
    assert_eq!(w.sb("nat-1").host.as_deref(), Some("h2"));
    assert_eq!(w.sb("nat-2").state, SandboxState::Pending, "no host has a network slot left");
    assert_eq!(w.net.lock()["h2"], 0);
    assert_eq!(w.pools.lock()["h1"]["base"].ready, 5, "nat placements take no warm slot");
    // Isolated creates ignore network slots altogether.
    w.create("iso-0");
    assert_eq!(w.sb("iso-0").host.as_deref(), Some("h1"));
    assert_eq!(w.pools.lock()["h1"]["base"].ready, 4);
}

#[test]
fn pool_settings_are_stored_and_sent_to_hosts_with_the_template() {
    use corral_core::pool::PoolSpec;
    let mut w = World::new();
    w.add_host("h1");
    w.add_host("h2");
    w.state.hosts.get_mut("h2").unwrap().host.templates = vec!["other".into()];
    let pool = PoolSpec { template: "base".into(), min: 2, max: 10, buffer: 3, prewarm: Vec::new() };
    let (_, writes) = w.run(|tx, f| set_pool(tx, f, pool.clone()));
    assert_eq!(w.state.pools["base"], pool);
    let sent: Vec<_> = w.state.hosts["h1"].outbox.values().map(|e| e.command.clone()).collect();
    assert_eq!(sent, vec![Command::SetPool { pool: pool.clone() }]);
    assert!(w.state.hosts["h2"].outbox.is_empty(), "a host without the template gets nothing");
    assert!(writes.contains(&Write::PutPool(pool.clone())));
    let (_, again) = w.run(|tx, f| set_pool(tx, f, pool.clone()));
    assert!(again.is_empty(), "unchanged settings write nothing");
}

#[test]
fn a_refused_create_is_rerouted_once_then_fails() {
    let mut w = World::new();
    w.add_host("h1");
    w.add_host("h2");
    w.create("sb-1");
    let first = w.sb("sb-1").host.clone().unwrap();
    let refuse = |host: String| {
        move |tx: &mut Tx, f: &Fleet| {
            let ev = HostEvent::StartFailed { sandbox_id: "sb-1".into(), message: "host at capacity".into(), refused: true };
            host_events(tx, f, &host, vec![ev])
        }
    };
    w.run(refuse(first.clone()));
    let sb = w.sb("sb-1").clone();
    assert_eq!(sb.state, SandboxState::Enqueued);
    assert_ne!(sb.host.as_deref(), Some(first.as_str()), "placed on the other host");
    assert_eq!(sb.rerouted_from.as_deref(), Some(first.as_str()));
    let second = sb.host.clone().unwrap();
    w.run(refuse(second));
    assert_eq!((w.sb("sb-1").state, w.sb("sb-1").end_reason), (SandboxState::Failed, Some(EndReason::StartFailed)));
}

#[test]
fn a_refusal_with_nowhere_else_to_go_waits_pending() {
    let mut w = World::new();
    w.add_host("h1");
    w.create("sb-1");
    w.run(|tx, f| {
        let ev = HostEvent::StartFailed { sandbox_id: "sb-1".into(), message: "host at capacity".into(), refused: true };
        host_events(tx, f, "h1", vec![ev])
    });
    assert_eq!(w.sb("sb-1").state, SandboxState::Pending);
    assert!(w.state.hosts["h1"].live.is_empty());
    w.run(tick);
    assert_eq!(w.sb("sb-1").state, SandboxState::Pending, "never back to the host that refused it");
}

#[test]
fn a_full_pending_queue_refuses_creates_and_writes_nothing() {
    let mut w = World::new();
    w.policy.max_pending = 2;
    w.create("sb-1");
    w.create("sb-2");
    let (r, writes) = w.run(|tx, f| create(tx, f, "sb-3".into(), spec(), None));
    assert_eq!(r, Err(DecideError::QueueFull(2)));
    assert!(writes.is_empty());
    w.add_host("h1");
    assert!(matches!(w.create("sb-4"), CreateOutcome::Created(_)), "with room again, creates are accepted");
}

type Outcomes = Result<Vec<Result<CreateOutcome, DecideError>>, DecideError>;

fn owned(w: &mut World, owner: &str, max: usize, items: &[(&str, Option<&str>)]) -> (Outcomes, Vec<Write>) {
    let items: Vec<NewSandbox> = items.iter().map(|(id, k)| (id.to_string(), spec(), k.map(str::to_string))).collect();
    let quota = crate::state::quota::Quota { owner, max_live: Some(max) };
    w.run(|tx, f| create_owned(tx, f, quota, items))
}

#[test]
fn a_token_over_its_live_limit_is_refused_whole_and_ending_one_frees_room() {
    let mut w = World::new(); // no hosts: creates stay pending, and stopping one ends it at once
    let (r, _) = owned(&mut w, "sha256:a", 2, &[("sb-1", None), ("sb-2", Some("k"))]);
    assert!(r.unwrap().iter().all(|c| matches!(c, Ok(CreateOutcome::Created(sb)) if sb.owner.as_deref() == Some("sha256:a"))));
    assert_eq!(w.state.live_owned_by("sha256:a"), 2);

    let (r, writes) = owned(&mut w, "sha256:a", 2, &[("sb-3", None)]);
    assert_eq!(r.unwrap_err(), DecideError::OverQuota(crate::state::quota::OverQuota { live: 2, asking: 1, limit: 2 }));
    assert!(writes.is_empty(), "a refused create writes nothing");
    let (r, _) = owned(&mut w, "sha256:a", 2, &[("sb-4", Some("k"))]);
    assert!(matches!(r.unwrap()[0], Ok(CreateOutcome::Replayed(ref sb)) if sb.id == "sb-2"), "a replay adds nothing");

    let (r, writes) = owned(&mut w, "sha256:b", 2, &[("sb-5", None), ("sb-6", None), ("sb-7", None)]);
    assert!(r.is_err() && writes.is_empty(), "a batch past the limit is refused whole");
    assert_eq!(w.state.live_owned_by("sha256:b"), 0);

    w.run(|tx, f| stop(tx, f, "sb-1", EndReason::Deleted)).0.unwrap();
    assert_eq!(w.state.live_owned_by("sha256:a"), 1);
    let (r, _) = owned(&mut w, "sha256:a", 2, &[("sb-8", None)]);
    assert!(matches!(r.unwrap()[0], Ok(CreateOutcome::Created(_))));
    assert_eq!(w.state.sandboxes.len(), 3);
}

#[test]
fn owners_are_counted_again_from_a_snapshot() {
    let mut w = World::new();
    owned(&mut w, "sha256:a", 5, &[("sb-1", None), ("sb-2", None)]).0.unwrap();
    w.run(|tx, f| stop(tx, f, "sb-1", EndReason::Deleted)).0.unwrap();
    let snap = corral_store::Snapshot {
        sandboxes: w.state.sandboxes.values().cloned().collect(),
        ..Default::default()
    };
    assert_eq!(State::from_snapshot(snap).live_owned_by("sha256:a"), 1);
}
