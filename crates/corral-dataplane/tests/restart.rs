//! Restarts: the cursor is resumed (no full sync), running keepers are
//! adopted and re-reported, and nothing is ever started twice — after a
//! graceful stop or a crash.

mod common;

use common::*;
use corral_proto::v1::EventKind;

async fn three_running(h: &mut Harness) -> Vec<i32> {
    h.start(h.config());
    h.bootstrap().await;
    h.add_running(1, &["sb-1", "sb-2", "sb-3"]).await;
    h.wait_for("cursor 3", |s| {
        s.last_poll().is_some_and(|p| p.after_seq == 3)
    })
    .await;
    ["sb-1", "sb-2", "sb-3"]
        .iter()
        .map(|id| h.keeper(id).expect("keeper"))
        .collect()
}

/// After a restart: polls resume at (1, 3), keepers are the same processes,
/// each is re-reported STARTED once, and starts.log has no second line.
async fn check_resumed(h: &mut Harness, pids: &[i32]) {
    let polls_before = h.script(|s| s.polls.len());
    h.start(h.config());
    h.wait_for("a poll from the new process", |s| {
        s.polls.len() > polls_before
    })
    .await;
    let first = h.script(|s| s.polls[polls_before].clone());
    assert_eq!(
        (first.epoch, first.after_seq),
        (1, 3),
        "resumes from the persisted cursor"
    );
    let reg = h.script(|s| s.registers.last().cloned().expect("registered"));
    assert_eq!(reg.epoch, 1, "registers with the persisted epoch");
    for id in ["sb-1", "sb-2", "sb-3"] {
        h.wait_for("re-reported STARTED", |s| {
            s.count(EventKind::Started, id) == 2
        })
        .await;
    }
    let now: Vec<i32> = ["sb-1", "sb-2", "sb-3"]
        .iter()
        .map(|id| h.keeper(id).expect("keeper"))
        .collect();
    assert_eq!(now, pids, "the same keepers, adopted");
    assert_eq!(h.starts().len(), 3, "no sandbox started twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_resumes_and_adopts() {
    let mut h = Harness::new().await;
    let pids = three_running(&mut h).await;
    h.stop().await.unwrap();
    assert!(
        pids.iter().all(|&p| !dead(p)),
        "a graceful stop leaves sandboxes running"
    );
    check_resumed(&mut h, &pids).await;

    // Adopted sandboxes are fully managed: removable, and their exits are seen.
    h.control.push(batch(vec![remove(4, "sb-1", "deleted")]));
    h.wait_for("STOPPED", |s| s.acked_kind(EventKind::Stopped, "sb-1"))
        .await;
    h.wait_until("adopted keeper killed", || dead(pids[0]))
        .await;
    // SAFETY: plain kill(2) on the test's own keeper.
    unsafe { libc::kill(pids[1], libc::SIGKILL) };
    h.wait_for("EXITED of an adopted keeper", |s| {
        s.acked_kind(EventKind::Exited, "sb-2")
    })
    .await;
    let mut agent = h.agent().await;
    let out = agent
        .exec(corral_proto::v1::ExecRequest {
            sandbox_id: "sb-3".into(),
            cmd: vec!["true".into()],
            ..Default::default()
        })
        .await
        .expect("exec in an adopted sandbox");
    assert_eq!(out.into_inner().exit_code, 0);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_resumes_adopts_and_reports_what_died_meanwhile() {
    let mut h = Harness::new().await;
    let pids = three_running(&mut h).await;
    h.crash().await;
    check_resumed(&mut h, &pids).await;
    h.crash().await;
    // A keeper that dies while no dataplane watches is reported on the next start.
    // SAFETY: plain kill(2) on the test's own keeper.
    unsafe { libc::kill(pids[2], libc::SIGKILL) };
    h.wait_until("keeper gone", || dead(pids[2])).await;
    h.start(h.config());
    h.wait_for("EXITED while down", |s| {
        s.acked_kind(EventKind::Exited, "sb-3")
    })
    .await;
    let e = h.script(|s| {
        s.distinct(EventKind::Exited)
            .into_iter()
            .find(|e| e.sandbox_id == "sb-3")
            .expect("event")
    });
    assert_eq!(e.message, "process gone while the dataplane was down");
    h.wait_for("others re-reported", |s| {
        s.count(EventKind::Started, "sb-1") == 3
    })
    .await;
    assert_eq!(h.starts().len(), 3, "still nothing started twice");
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sandboxes_on_shutdown_stops_and_reports_them() {
    let mut h = Harness::new().await;
    let pids = three_running(&mut h).await;
    h.stop().await.unwrap();
    let mut config = h.config();
    config.stop_sandboxes_on_shutdown = true;
    h.start(config);
    for id in ["sb-1", "sb-2", "sb-3"] {
        h.wait_for("re-reported STARTED", |s| {
            s.count(EventKind::Started, id) == 2
        })
        .await;
    }
    h.stop().await.unwrap();
    assert!(pids.iter().all(|&p| dead(p)), "every keeper stopped");
    for id in ["sb-1", "sb-2", "sb-3"] {
        assert!(
            h.script(|s| s.acked_kind(EventKind::Stopped, id)),
            "STOPPED of {id} flushed before exit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_made_keepers_with_no_record_are_killed_at_start() {
    let mut h = Harness::new().await;
    std::fs::create_dir_all(&h.data_dir).unwrap();
    let stray = std::process::Command::new("/bin/sleep")
        .arg("infinity")
        .env("CORRAL_DATAPLANE_DIR", &h.data_dir)
        .env("CORRAL_SANDBOX_ID", "sb-half-made")
        .env("CORRAL_KEEPER", "1")
        .spawn()
        .expect("spawn stray");
    let pid = stray.id() as i32;
    // Reap it in the background so its death is visible as a missing pid.
    std::thread::spawn(move || {
        let mut stray = stray;
        let _ = stray.wait();
    });
    h.start(h.config());
    h.bootstrap().await;
    h.wait_until("stray killed", || dead(pid)).await;
    assert!(h.starts().is_empty());
    h.stop().await.unwrap();
}
