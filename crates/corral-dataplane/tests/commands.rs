//! Applying commands: batches, duplicates, gaps, removals, full syncs, and
//! event backpressure, against a real dataplane and real processes.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use corral_proto::v1::EventKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_adds_all_start_and_are_acked() {
    let mut h = Harness::new().await;
    h.start(h.config());
    h.bootstrap().await;
    let reg = h.script(|s| s.registers[0].clone());
    assert_eq!(reg.host_id, "host-1");
    assert_eq!(reg.epoch, 0, "a fresh dataplane registers with epoch 0");
    assert_eq!(reg.templates, vec!["base"]);
    assert!(reg
        .capacity
        .is_some_and(|c| c.cpu_millis > 0 && c.memory_mb > 0));
    assert_eq!(
        Some(reg.agent_addr.parse().unwrap()),
        corral_dataplane::read_agent_addr(&h.data_dir)
    );

    let ids = ["sb-a", "sb-b", "sb-c", "sb-d", "sb-e"];
    h.add_running(1, &ids).await;
    for id in ids {
        assert!(h.keeper(id).is_some(), "keeper of {id} is alive");
        assert_eq!(h.script(|s| s.count(EventKind::Started, id)), 1);
        assert!(h.data_dir.join("sandboxes").join(id).is_dir());
    }
    let started = h.script(|s| s.distinct(EventKind::Started));
    assert!(started
        .iter()
        .all(|e| e.start_path == "cold" && e.at_ms > 0));
    let mut seqs: Vec<u64> = started.iter().map(|e| e.seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4, 5],
        "event seqs start at 1 per process"
    );
    h.wait_for("poll after seq 5", |s| {
        s.last_poll()
            .is_some_and(|p| p.epoch == 1 && p.after_seq == 5)
    })
    .await;
    assert_eq!(h.starts().len(), 5);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_skipped_and_a_gap_stops_application() {
    let mut h = Harness::new().await;
    h.start(h.config());
    h.bootstrap().await;
    h.add_running(1, &["sb-1", "sb-2"]).await;
    // A redelivered batch: 1 and 2 are duplicates, 3 is new; an Add for a known id is a no-op.
    h.control.push(batch(vec![
        add(1, "sb-1"),
        add(2, "sb-2"),
        add(3, "sb-3"),
        add(4, "sb-1"),
    ]));
    h.wait_for("sb-3 started", |s| s.acked_kind(EventKind::Started, "sb-3"))
        .await;
    h.wait_for("cursor 4", |s| {
        s.last_poll().is_some_and(|p| p.after_seq == 4)
    })
    .await;
    // A hole: 6 and 7 without 5 apply nothing.
    h.control.push(batch(vec![add(6, "sb-6"), add(7, "sb-7")]));
    h.wait_for("the gap batch consumed", |s| s.responses.is_empty())
        .await;
    h.wait_for("a re-poll from the cursor", |s| {
        s.polls.iter().rev().take(1).all(|p| p.after_seq == 4)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.keeper("sb-6").is_none() && h.keeper("sb-7").is_none(),
        "nothing past a gap is applied"
    );
    h.control.push(batch(vec![add(5, "sb-5"), add(6, "sb-6")]));
    // Starts of one batch run in parallel: either may finish first.
    for id in ["sb-5", "sb-6"] {
        h.wait_for("started", |s| s.acked_kind(EventKind::Started, id))
            .await;
    }
    h.wait_for("cursor 6", |s| {
        s.last_poll().is_some_and(|p| p.after_seq == 6)
    })
    .await;
    let mut starts = h.starts();
    starts.sort();
    assert_eq!(
        starts,
        vec!["sb-1", "sb-2", "sb-3", "sb-5", "sb-6"],
        "each started exactly once"
    );
    assert!(h.script(|s| ["sb-1", "sb-2"]
        .iter()
        .all(|id| s.count(EventKind::Started, id) == 1)));
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_kills_the_whole_group_and_reports_stopped() {
    let mut h = Harness::new().await;
    h.start(h.config());
    h.bootstrap().await;
    h.add_running(1, &["sb-r", "sb-keep"]).await;
    let keeper = h.keeper("sb-r").expect("keeper");
    // Something exec'd in the sandbox that outlives its command.
    let mut agent = h.agent().await;
    let out = agent
        .exec(corral_proto::v1::ExecRequest {
            sandbox_id: "sb-r".into(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "sleep 1000 >/dev/null 2>&1 & echo $!".into(),
            ],
            timeout_ms: 5000,
            ..Default::default()
        })
        .await
        .expect("exec")
        .into_inner();
    let bg: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    assert!(!dead(bg));
    h.control.push(batch(vec![
        remove(3, "sb-r", "deleted"),
        remove(4, "sb-unknown", "ttl_expired"),
    ]));
    h.wait_for("STOPPED", |s| s.acked_kind(EventKind::Stopped, "sb-r"))
        .await;
    let ev = h.script(|s| s.distinct(EventKind::Stopped));
    let r = ev.iter().find(|e| e.sandbox_id == "sb-r").expect("event");
    assert_eq!(r.end_reason, "deleted");
    let u = ev
        .iter()
        .find(|e| e.sandbox_id == "sb-unknown")
        .expect("an unknown id is reported stopped too");
    assert_eq!(u.end_reason, "ttl_expired");
    h.wait_until("keeper and background command dead", || {
        dead(keeper) && dead(bg)
    })
    .await;
    h.wait_until("directory removed", || {
        !h.data_dir.join("sandboxes/sb-r").exists()
    })
    .await;
    assert!(
        h.keeper("sb-keep").is_some(),
        "the other sandbox is untouched"
    );
    assert_eq!(
        h.script(|s| s.count(EventKind::Exited, "sb-r")),
        0,
        "a stop is not an exit"
    );
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_that_dies_is_reported_exited() {
    let mut h = Harness::new().await;
    h.start(h.config());
    h.bootstrap().await;
    h.add_running(1, &["sb-x"]).await;
    let pid = h.keeper("sb-x").expect("keeper");
    // SAFETY: plain kill(2) on our own keeper.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    h.wait_for("EXITED", |s| s.acked_kind(EventKind::Exited, "sb-x"))
        .await;
    let e = h.script(|s| s.distinct(EventKind::Exited))[0].clone();
    assert_eq!(e.end_reason, "exited");
    assert!(e.message.contains("signal 15"), "{}", e.message);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_keeps_wanted_starts_missing_and_stops_unwanted() {
    let mut h = Harness::new().await;
    h.start(h.config());
    h.wait_for("register", |s| !s.registers.is_empty()).await;
    h.control.push(full_sync(1, 7, &["sb-a", "sb-b"]));
    for id in ["sb-a", "sb-b"] {
        h.wait_for("STARTED", |s| s.acked_kind(EventKind::Started, id))
            .await;
    }
    h.wait_for("poll at the synced cursor", |s| {
        s.last_poll()
            .is_some_and(|p| (p.epoch, p.after_seq) == (1, 7))
    })
    .await;
    let a = h.keeper("sb-a").expect("a");
    let b = h.keeper("sb-b").expect("b");
    h.control.push(full_sync(2, 40, &["sb-a", "sb-c"]));
    h.wait_for("c started, b stopped", |s| {
        s.acked_kind(EventKind::Started, "sb-c") && s.acked_kind(EventKind::Stopped, "sb-b")
    })
    .await;
    h.wait_for("poll at the new cursor", |s| {
        s.last_poll()
            .is_some_and(|p| (p.epoch, p.after_seq) == (2, 40))
    })
    .await;
    assert_eq!(
        h.keeper("sb-a"),
        Some(a),
        "a wanted sandbox is never touched"
    );
    assert!(h
        .script(|s| s.count(EventKind::Started, "sb-a") == 1
            && s.count(EventKind::Stopped, "sb-a") == 0));
    h.wait_until("b is dead", || dead(b)).await;
    let mut starts = h.starts();
    starts.sort();
    assert_eq!(starts, vec!["sb-a", "sb-b", "sb-c"]);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_applies_backpressure_and_loses_nothing() {
    let mut h = Harness::new().await;
    let mut config = h.config();
    config.event_buffer = 2;
    h.start(config);
    h.bootstrap().await;
    h.control.script.lock().withhold_acks = true;
    let ids: Vec<String> = (0..6).map(|i| format!("sb-{i}")).collect();
    h.control.push(batch(
        ids.iter()
            .enumerate()
            .map(|(i, id)| add(i as u64 + 1, id))
            .collect(),
    ));
    h.wait_for("two events seen", |s| {
        s.distinct(EventKind::Started).len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.script(|s| s.distinct(EventKind::Started).len()),
        2,
        "a full buffer holds reporters back"
    );
    h.control.script.lock().withhold_acks = false;
    h.wait_for("all started and acked", |s| {
        ids.iter().all(|id| s.acked_kind(EventKind::Started, id))
    })
    .await;
    let started = h.script(|s| s.distinct(EventKind::Started));
    let seqs: HashSet<u64> = started.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=6).collect(), "contiguous seqs, none dropped");
    assert_eq!(
        started
            .iter()
            .map(|e| e.sandbox_id.clone())
            .collect::<HashSet<_>>(),
        ids.into_iter().collect()
    );
    h.stop().await.unwrap();
}
