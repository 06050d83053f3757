//! Crashes: the server SIGKILLed in the middle of a burst, and the dataplane
//! SIGKILLed with sandboxes running. Nothing accepted is lost, nothing starts
//! twice, and a restarted dataplane resumes without a full resync.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster};
use corral_core::api::CreateSandboxRequest;
use corral_core::SandboxState;
use tokio::sync::Barrier;

const N: usize = 1000;

/// A new dataplane starts with one full sync (it has no epoch yet); its
/// count is recorded asynchronously, so wait for it before comparing.
async fn first_full_sync(c: &Cluster) -> u64 {
    eventually(Duration::from_secs(10), "the first full sync to be recorded", || async {
        let n = c.client.hosts().await.ok()?.hosts.first()?.host.full_syncs;
        (n >= 1).then_some(n)
    })
    .await
}

fn assert_started_at_most_once(c: &Cluster) -> HashSet<String> {
    let starts = c.starts();
    let mut seen = HashMap::new();
    for id in &starts {
        *seen.entry(id.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "started more than once: {twice:?}");
    seen.into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_burst_loses_nothing_and_starts_nothing_twice() {
    let mut c = Cluster::split().await;
    let barrier = Arc::new(Barrier::new(N + 1));
    let accepted = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (client, barrier, accepted) = (c.client.clone(), barrier.clone(), accepted.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let r = client.create(&CreateSandboxRequest::default(), false).await;
                if r.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                r
            })
        })
        .collect();
    barrier.wait().await;
    // Kill once part of the burst is acknowledged, with the rest in flight.
    eventually(Duration::from_secs(60), "part of the burst to be accepted", || async {
        (accepted.load(Ordering::SeqCst) >= N / 4).then_some(())
    })
    .await;
    c.server.as_mut().unwrap().kill9();

    let mut ok_ids = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(sb) => ok_ids.push(sb.id),
            Err(_) => failed += 1,
        }
    }
    eprintln!("burst: {} acknowledged before the kill, {failed} failed with it", ok_ids.len());
    assert!(!ok_ids.is_empty() && ok_ids.len() < N, "the kill landed mid-burst ({} ok)", ok_ids.len());

    c.start_server();
    c.wait_ready().await;
    for id in &ok_ids {
        let sb = eventually(Duration::from_secs(60), &format!("{id} to settle"), || async {
            let sb = c.client.get(id).await.ok()?;
            (sb.state == SandboxState::Running || sb.state.is_terminal()).then_some(sb)
        })
        .await;
        assert!(
            sb.state == SandboxState::Running || sb.end_reason.is_some(),
            "{id} ended without a reason: {sb:?}"
        );
    }
    let started = assert_started_at_most_once(&c);
    for id in &ok_ids {
        assert!(started.contains(id), "{id} was acknowledged but never started");
    }
    eventually(Duration::from_secs(20), "the outbox to drain", || async { (c.backlog().await? == 0.0).then_some(()) })
        .await;
    c.server.as_mut().unwrap().kill9();
    let (ok, report) = common::fleet::check_store(&c.server_dir());
    assert!(ok, "the store breaks an invariant:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_dataplane_resumes_from_its_cursor_and_keeps_its_sandboxes() {
    let mut c = Cluster::split().await;
    let ids = c.client.create_batch(50, &CreateSandboxRequest::default()).await.unwrap();
    eventually(Duration::from_secs(30), "50 running", || async { (c.count_in("running").await? == 50).then_some(()) })
        .await;
    let syncs_before = first_full_sync(&c).await;

    c.dataplane.as_mut().unwrap().kill9();
    // Work queued while the dataplane is down is delivered after it resumes.
    let more = c.client.create_batch(10, &CreateSandboxRequest::default()).await.unwrap();
    c.client.delete(&ids[0]).await.unwrap();
    c.start_dataplane();

    eventually(Duration::from_secs(30), "59 running after the restart", || async {
        (c.count_in("running").await? == 59).then_some(())
    })
    .await;
    for id in ids.iter().skip(1).chain(&more) {
        assert_eq!(c.client.get(id).await.unwrap().state, SandboxState::Running);
    }
    let gone = eventually(Duration::from_secs(30), "the deleted one to end", || async {
        c.client.get(&ids[0]).await.ok().filter(|sb| sb.state.is_terminal())
    })
    .await;
    assert_eq!(gone.end_reason, Some(corral_core::EndReason::Deleted));
    let host = &c.client.hosts().await.unwrap().hosts[0];
    assert_eq!(host.host.full_syncs, syncs_before, "the restart resumed without a full resync");
    assert_started_at_most_once(&c);
    // The adopted sandboxes still work.
    let out = c.client.exec(&ids[1], &corral_core::api::ExecRequest { cmd: vec!["echo".into(), "still here".into()], ..Default::default() }).await.unwrap();
    assert_eq!(out.stdout, "still here\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dataplane_killed_mid_burst_resumes_and_every_sandbox_settles() {
    let mut c = Cluster::split().await;
    let syncs_before = first_full_sync(&c).await;
    let ids = c.client.create_batch(N, &CreateSandboxRequest::default()).await.unwrap();
    // Kill it while it is part-way through starting the batch.
    eventually(Duration::from_secs(60), "the dataplane to be mid-batch", || async {
        let n = c.starts().len();
        (n >= N / 10).then_some(())
    })
    .await;
    c.dataplane.as_mut().unwrap().kill9();
    let started_before_kill = c.starts().len();
    c.start_dataplane();

    let mut running = 0;
    for id in &ids {
        let sb = eventually(Duration::from_secs(120), &format!("{id} to settle"), || async {
            let sb = c.client.get(id).await.ok()?;
            (sb.state == SandboxState::Running || sb.state.is_terminal()).then_some(sb)
        })
        .await;
        if sb.state == SandboxState::Running {
            running += 1;
        } else {
            assert!(sb.end_reason.is_some(), "{id} ended without a reason: {sb:?}");
        }
    }
    eprintln!("killed after {started_before_kill} starts; {running} of {N} running after the restart");
    assert_started_at_most_once(&c);
    let host = &c.client.hosts().await.unwrap().hosts[0];
    assert_eq!(host.host.full_syncs, syncs_before, "the restart resumed from the persisted cursor");
    assert_eq!(running, N, "a dataplane crash ends no sandbox");
}
