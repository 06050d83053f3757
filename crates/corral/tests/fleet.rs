//! Faults on a real multi-host fleet (see `common/fleet.rs`): a server and
//! three dataplanes, each in its own network namespace behind a bridge.
//!
//! - the server SIGKILLed again and again under a stream of creates;
//! - a dataplane SIGKILLed in the middle of a batch;
//! - a host cut off from the network: fenced, then its sandboxes end
//!   `host_lost`; or back within the grace period, and everything carries on;
//! - a dataplane's link down for a moment, or its connections killed, in the
//!   middle of a batch.
//!
//! Each test checks that nothing accepted is lost, nothing starts twice (the
//! dataplanes' start records) and the outbox drains. Durations are printed as
//! figures, never asserted.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use common::fleet::{rig_index, unsupported, Fleet};
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use corral_core::{EndReason, Sandbox, SandboxState};

/// A fleet of `n` dataplanes, or `None` (said why) where a rig cannot be built.
async fn fleet(n: usize, server_args: &[&str]) -> Option<Fleet> {
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Fleet::start(n, server_args).await)
}

/// Waits until every id in `ids` is running or ended; returns them all.
async fn settle(f: &Fleet, ids: &HashSet<String>, limit: Duration) -> HashMap<String, Sandbox> {
    eventually(limit, &format!("{} sandboxes to settle", ids.len()), || async {
        let all = f.all_sandboxes().await?;
        let mine: HashMap<String, Sandbox> =
            all.into_iter().filter(|s| ids.contains(&s.id)).map(|s| (s.id.clone(), s)).collect();
        let settled = mine.values().all(|s| s.state == SandboxState::Running || s.state.is_terminal());
        (mine.len() == ids.len() && settled).then_some(mine)
    })
    .await
}

/// Asserts no id appears twice in `starts`; returns the set.
fn started_at_most_once(starts: &[String]) -> HashSet<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in starts {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "started more than once: {twice:?}");
    seen.into_keys().map(str::to_string).collect()
}

/// Polls `cond` every 2 ms (fast enough to land inside a batch), for up to a minute.
async fn soon(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn drained(f: &Fleet) {
    eventually(Duration::from_secs(30), "the outbox to drain", || async { (f.backlog().await? == 0.0).then_some(()) })
        .await;
}

/// The host most of `sbs` are placed on.
fn busiest_host<'a>(sbs: impl Iterator<Item = &'a Sandbox>) -> String {
    let mut per: HashMap<String, usize> = HashMap::new();
    for s in sbs {
        *per.entry(s.host.clone().unwrap_or_default()).or_default() += 1;
    }
    per.into_iter().max_by_key(|(h, n)| (*n, h.clone())).map(|(h, _)| h).expect("some sandboxes")
}

fn per_host(sbs: &HashMap<String, Sandbox>) -> Vec<(String, usize)> {
    let mut per: HashMap<String, usize> = HashMap::new();
    for s in sbs.values() {
        *per.entry(s.host.clone().unwrap_or_else(|| "-".into())).or_default() += 1;
    }
    let mut v: Vec<_> = per.into_iter().collect();
    v.sort();
    v
}

/// Full syncs so far per host, once each host has had its first one (a new
/// dataplane starts with one; it is recorded asynchronously).
async fn full_syncs(f: &Fleet) -> HashMap<String, u64> {
    eventually(Duration::from_secs(20), "every host's first full sync", || async {
        let hosts = f.client.hosts().await.ok()?.hosts;
        let all = hosts.len() == f.dataplanes.len() && hosts.iter().all(|h| h.host.full_syncs >= 1);
        all.then(|| hosts.into_iter().map(|h| (h.host.id, h.host.full_syncs)).collect())
    })
    .await
}

/// `count` creates of one batch call; every id placed.
async fn batch(f: &Fleet, count: usize) -> Vec<String> {
    f.client.create_batch(count, &CreateSandboxRequest::default()).await.expect("create batch")
}

/// Keepers (process-driver sandboxes) still alive for dataplane `i`.
fn live_keepers(f: &Fleet, i: usize) -> HashSet<String> {
    let dir = f.dataplane_dir(i).canonicalize().map(|p| p.display().to_string()).unwrap_or_default();
    let mut ids = HashSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return ids };
    for e in entries.flatten() {
        let Ok(environ) = std::fs::read(e.path().join("environ")) else { continue };
        let vars: Vec<String> = environ.split(|b| *b == 0).map(|kv| String::from_utf8_lossy(kv).into_owned()).collect();
        let ours = vars.iter().any(|kv| kv.strip_prefix("CORRAL_DATAPLANE_DIR=") == Some(dir.as_str()));
        let keeper = vars.iter().any(|kv| kv == "CORRAL_KEEPER=1");
        if ours && keeper {
            if let Some(id) = vars.iter().find_map(|kv| kv.strip_prefix("CORRAL_SANDBOX_ID=")) {
                ids.insert(id.to_string());
            }
        }
    }
    ids
}

async fn echo(f: &Fleet, id: &str, text: &str) {
    let req = ExecRequest { cmd: vec!["echo".into(), text.into()], ..Default::default() };
    let out = f.client.exec(id, &req).await.unwrap_or_else(|e| panic!("exec in {id}: {e}\n{}", f.logs()));
    assert_eq!(out.stdout, format!("{text}\n"));
}

#[test]
fn rig_names_map_back_to_their_rig() {
    assert_eq!(rig_index("crl-br7"), Some(7));
    assert_eq!(rig_index("crl-12-dp3"), Some(12));
    assert_eq!(rig_index("crl-250-v0"), Some(250));
    assert_eq!(rig_index("crl-0-srv"), None);
    assert_eq!(rig_index("crl-251-srv"), None);
    assert_eq!(rig_index("eth0"), None);
    assert_eq!(rig_index("crl-x"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_sigkilled_ten_times_under_a_stream_of_creates_loses_nothing() {
    const N: usize = 1200;
    const KILLS: usize = 10;
    const WORKERS: usize = 24;
    let Some(mut f) = fleet(3, &[]).await else { return };
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    // Every create carries an idempotency key and is retried until it gets a
    // 2xx: a create committed just before a kill, whose answer was lost,
    // comes back as the same sandbox.
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, next, acked, retries) = (f.client.clone(), next.clone(), acked.clone(), retries.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= N {
                        return ids;
                    }
                    let req = CreateSandboxRequest { idempotency_key: Some(format!("stream-{i}")), ..Default::default() };
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let sb = loop {
                        match client.create(&req, false).await {
                            Ok(sb) => break sb,
                            Err(e) => {
                                assert!(Instant::now() < deadline, "create {i} never succeeded: {e}");
                                retries.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    };
                    acked.fetch_add(1, Ordering::SeqCst);
                    ids.push(sb.id);
                }
            })
        })
        .collect();

    // Kill at random points of the stream, each after at least one more create
    // was acknowledged since the last restart.
    let mut rng = fastrand::Rng::new();
    let seed = rng.get_seed();
    let mut thresholds: Vec<usize> = (0..KILLS).map(|_| rng.usize(N / 20..N - N / 10)).collect();
    thresholds.sort_unstable();
    let mut kills = 0;
    let mut crash_points = Vec::new();
    for t in thresholds {
        let since = acked.load(Ordering::SeqCst);
        soon("more creates to be acknowledged", || acked.load(Ordering::SeqCst) >= t.max(since + 1)).await;
        f.kill_server();
        kills += 1;
        // The store as the crash left it already satisfies every invariant.
        let (ok, report) = f.check_store();
        assert!(ok, "after kill {kills} the store breaks an invariant:\n{report}");
        crash_points.push(report.trim().to_string());
        tokio::time::sleep(Duration::from_millis(rng.u64(0..150))).await;
        f.start_server();
    }
    let mut ids = HashSet::new();
    for w in workers {
        ids.extend(w.await.expect("worker"));
    }
    let streamed = began.elapsed();
    assert_eq!(ids.len(), N, "one sandbox per idempotency key");
    f.wait_hosts_alive().await;

    let sbs = settle(&f, &ids, Duration::from_secs(120)).await;
    let mut running = 0;
    for sb in sbs.values() {
        if sb.state == SandboxState::Running {
            running += 1;
        } else {
            assert!(sb.end_reason.is_some(), "{} ended without a reason: {sb:?}", sb.id);
        }
    }
    let everything = f.all_sandboxes().await.expect("list");
    assert_eq!(everything.len(), N, "retries were replayed, never created twice");
    let started = started_at_most_once(&f.all_starts());
    for sb in sbs.values().filter(|s| s.state == SandboxState::Running) {
        assert!(started.contains(&sb.id), "{} runs but no host recorded starting it", sb.id);
    }
    drained(&f).await;
    eprintln!(
        "{kills} server SIGKILLs survived (seed {seed}) while streaming {N} creates from {WORKERS} clients in {streamed:.1?}; \
         {} retried requests; {N} creates checked: {running} running, {} ended with a reason; per host {:?}",
        retries.load(Ordering::SeqCst),
        N - running,
        per_host(&sbs)
    );
    eprintln!("corral server check at each crash point:\n  {}", crash_points.join("\n  "));
    assert_eq!(kills, KILLS);
    assert_eq!(running, N, "a server crash ends no sandbox");

    f.kill_server();
    let (ok, report) = f.check_store();
    eprintln!("corral server check: {}", report.trim());
    assert!(ok, "the store breaks an invariant:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dataplane_sigkilled_mid_batch_resumes_on_the_rig() {
    const N: usize = 600;
    let Some(mut f) = fleet(3, &[]).await else { return };
    let syncs_before = full_syncs(&f).await;
    let ids = batch(&f, N).await;
    let placed = f.all_sandboxes().await.expect("list");
    let victim = busiest_host(placed.iter());
    let v = f.index_of(&victim);
    soon("the victim to be mid-batch", || f.starts_of(v).len() >= 10).await;
    f.kill_dataplane(v);
    let before_kill: HashSet<String> = f.starts_of(v).into_iter().collect();
    f.start_dataplane(v);

    let ids: HashSet<String> = ids.into_iter().collect();
    let sbs = settle(&f, &ids, Duration::from_secs(120)).await;
    let running = sbs.values().filter(|s| s.state == SandboxState::Running).count();
    let on_victim = sbs.values().filter(|s| s.host.as_deref() == Some(victim.as_str())).count();
    eprintln!(
        "{victim} killed after {} of its {on_victim} starts; {running} of {N} running after its restart; per host {:?}",
        before_kill.len(),
        per_host(&sbs)
    );
    started_at_most_once(&f.all_starts());
    assert_eq!(running, N, "a dataplane crash ends no sandbox");
    let log = f.dataplanes[v].as_ref().expect("restarted").log_text();
    let adopted = log.matches("adopted a running sandbox").count();
    assert!(adopted > 0, "the restarted dataplane adopted what it found running");
    let ours: HashSet<String> =
        sbs.values().filter(|s| s.host.as_deref() == Some(victim.as_str())).map(|s| s.id.clone()).collect();
    assert_eq!(live_keepers(&f, v), ours, "{victim} runs exactly its sandboxes: nothing half-made or stray is left");
    eprintln!("{victim} adopted {adopted} sandboxes that outlived it");
    let syncs_after = full_syncs(&f).await;
    assert_eq!(syncs_after[&victim], syncs_before[&victim], "the restart resumed from its cursor, no full sync");
    drained(&f).await;
    // One it started before the crash was adopted and still answers, across the rig.
    let adopted = before_kill.iter().next().expect("a start before the kill");
    echo(&f, adopted, "adopted").await;
}

/// A host cut off for good: fenced after its lease, its sandboxes end
/// `host_lost` after the grace period, new creates avoid it; when it comes
/// back (new epoch) a full sync stops what it still ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_host_is_fenced_and_its_sandboxes_end_host_lost() {
    let Some(f) = fleet(3, &["--lease-ms", "2000", "--host-lost-grace-ms", "3000"]).await else { return };
    let first: HashSet<String> = batch(&f, 60).await.into_iter().collect();
    let sbs = settle(&f, &first, Duration::from_secs(60)).await;
    let victim = busiest_host(sbs.values());
    let v = f.index_of(&victim);
    let victim_ids: HashSet<String> =
        sbs.values().filter(|s| s.host.as_deref() == Some(victim.as_str())).map(|s| s.id.clone()).collect();

    // A stream of creates across the partition, each with the moment it was sent.
    let stop = Arc::new(AtomicBool::new(false));
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop) = (f.client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let sb = client.create(&CreateSandboxRequest::default(), false).await.expect("create");
                    sent.push((at, sb));
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = Instant::now();
    f.rig.link_down(v + 1);
    eventually(Duration::from_secs(30), "the cut-off host to be fenced", || async {
        (!f.host(&victim).await?.alive).then_some(())
    })
    .await;
    let fenced_at = Instant::now();
    let fenced = cut.elapsed();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for b in burst {
        sent.extend(b.await.expect("burst"));
    }
    let after_fence: Vec<&Sandbox> = sent.iter().filter(|(at, _)| *at > fenced_at).map(|(_, sb)| sb).collect();
    assert!(!after_fence.is_empty(), "creates were sent after the fence");
    for sb in &after_fence {
        assert_ne!(sb.host.as_deref(), Some(victim.as_str()), "{} was placed on the fenced host", sb.id);
    }

    let lost = eventually(Duration::from_secs(60), "the cut-off host's sandboxes to end", || async {
        let all = f.all_sandboxes().await?;
        let ended = all.iter().filter(|s| victim_ids.contains(&s.id) && s.state.is_terminal()).count();
        (ended == victim_ids.len()).then(|| cut.elapsed())
    })
    .await;
    let burst_ids: HashSet<String> = sent.iter().map(|(_, sb)| sb.id.clone()).collect();
    let everything: HashSet<String> = first.union(&burst_ids).cloned().collect();
    let sbs = settle(&f, &everything, Duration::from_secs(60)).await;
    for sb in sbs.values() {
        if sb.host.as_deref() == Some(victim.as_str()) {
            assert_eq!(sb.end_reason, Some(EndReason::HostLost), "{} on the lost host: {sb:?}", sb.id);
            assert_eq!(sb.state, SandboxState::Failed);
        } else {
            assert_eq!(sb.state, SandboxState::Running, "{} on a healthy host: {sb:?}", sb.id);
        }
    }
    eprintln!(
        "partition of {victim}: removed from scheduling after {fenced:.2?} (lease 2 s), its {} sandboxes \
         host_lost after {lost:.2?} (+ grace 3 s); {} creates during the partition, {} after the fence, none on it",
        victim_ids.len(),
        sent.len(),
        after_fence.len()
    );

    // It comes back: a new epoch, so a full sync stops what it still runs.
    assert!(!live_keepers(&f, v).is_empty(), "the cut-off host still runs its sandboxes");
    f.rig.link_up(v + 1);
    eventually(Duration::from_secs(60), "the returning host to stop its lost sandboxes", || async {
        let alive = f.host(&victim).await?.alive;
        (alive && live_keepers(&f, v).is_empty()).then_some(())
    })
    .await;
    started_at_most_once(&f.all_starts());
    drained(&f).await;
}

/// A host cut off for less than the grace period: fenced (no new work), then
/// back with everything it ran, no full sync, nothing started twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_back_within_the_grace_period_carries_on() {
    let Some(f) = fleet(3, &["--lease-ms", "2000", "--host-lost-grace-ms", "30000"]).await else { return };
    let first: HashSet<String> = batch(&f, 60).await.into_iter().collect();
    let sbs = settle(&f, &first, Duration::from_secs(60)).await;
    let syncs_before = full_syncs(&f).await;
    let victim = busiest_host(sbs.values());
    let v = f.index_of(&victim);
    let victim_ids: Vec<String> =
        sbs.values().filter(|s| s.host.as_deref() == Some(victim.as_str())).map(|s| s.id.clone()).collect();

    let cut = Instant::now();
    f.rig.link_down(v + 1);
    eventually(Duration::from_secs(30), "the cut-off host to be fenced", || async {
        (!f.host(&victim).await?.alive).then_some(())
    })
    .await;
    let fenced = cut.elapsed();
    let mut during = HashSet::new();
    for _ in 0..20 {
        let sb = f.client.create(&CreateSandboxRequest::default(), false).await.expect("create");
        assert_ne!(sb.host.as_deref(), Some(victim.as_str()), "{} was placed on the fenced host", sb.id);
        during.insert(sb.id);
    }
    f.rig.link_up(v + 1);
    let back = Instant::now();
    eventually(Duration::from_secs(60), "the host to be alive again", || async {
        f.host(&victim).await?.alive.then_some(())
    })
    .await;
    let back_after = back.elapsed();

    let everything: HashSet<String> = first.union(&during).cloned().collect();
    let sbs = settle(&f, &everything, Duration::from_secs(60)).await;
    for sb in sbs.values() {
        assert_eq!(sb.state, SandboxState::Running, "{}: {sb:?}", sb.id);
    }
    let syncs_after = full_syncs(&f).await;
    assert_eq!(syncs_after[&victim], syncs_before[&victim], "it resumed on its epoch, no full sync");
    started_at_most_once(&f.all_starts());
    assert_eq!(live_keepers(&f, v), victim_ids.iter().cloned().collect(), "it still runs exactly its sandboxes");
    echo(&f, &victim_ids[0], "still here").await;
    drained(&f).await;
    eprintln!(
        "{victim} cut off: fenced after {fenced:.2?}, cut for {:.2?}, alive again {back_after:.2?} after the link came back",
        back.duration_since(cut)
    );
}

/// How a dataplane loses its server for a moment.
#[derive(Debug, Clone, Copy)]
enum Disconnect {
    /// Its link goes down for this long.
    LinkDown(Duration),
    /// Its TCP connection to the server is killed this many times, each
    /// time once it has re-dialled.
    KillConnections(usize),
}

/// A dataplane disconnected while it starts a batch keeps starting, and
/// reports everything once it is back: every sandbox runs, none twice, no
/// full sync, and it runs exactly its own.
async fn disconnected_mid_batch(how: Disconnect) {
    const N: usize = 600;
    let Some(f) = fleet(3, &[]).await else { return };
    let syncs_before = full_syncs(&f).await;
    let ids: HashSet<String> = batch(&f, N).await.into_iter().collect();
    let placed = f.all_sandboxes().await.expect("list");
    let victim = busiest_host(placed.iter());
    let v = f.index_of(&victim);
    soon("the victim to be mid-batch", || f.starts_of(v).len() >= 10).await;
    let at_cut = f.starts_of(v).len();
    let mut killed = 0;
    match how {
        Disconnect::LinkDown(d) => {
            f.rig.link_down(v + 1);
            tokio::time::sleep(d).await;
            f.rig.link_up(v + 1);
        }
        Disconnect::KillConnections(times) => {
            for _ in 0..times {
                // Each round kills the connection the dataplane re-dialled after the last.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let n = f.rig.kill_connections(v + 1);
                    if n > 0 {
                        killed += n;
                        break;
                    }
                    assert!(Instant::now() < deadline, "the dataplane never reconnected");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let sbs = settle(&f, &ids, Duration::from_secs(120)).await;
    let running = sbs.values().filter(|s| s.state == SandboxState::Running).count();
    eprintln!(
        "{victim} disconnected ({how:?}, {killed} connections killed) after {at_cut} starts; {running} of {N} running; per host {:?}",
        per_host(&sbs)
    );
    if let Disconnect::KillConnections(times) = how {
        assert!(killed >= times, "{killed} connections killed");
    }
    assert_eq!(running, N, "a short disconnection ends no sandbox");
    started_at_most_once(&f.all_starts());
    let ours: HashSet<String> =
        sbs.values().filter(|s| s.host.as_deref() == Some(victim.as_str())).map(|s| s.id.clone()).collect();
    assert_eq!(live_keepers(&f, v), ours, "{victim} runs exactly its sandboxes");
    let syncs_after = full_syncs(&f).await;
    assert_eq!(syncs_after[&victim], syncs_before[&victim], "no full sync after the reconnection");
    drained(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dataplane_cut_off_mid_batch_loses_nothing() {
    disconnected_mid_batch(Disconnect::LinkDown(Duration::from_millis(1500))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dataplane_whose_connections_are_killed_mid_batch_loses_nothing() {
    disconnected_mid_batch(Disconnect::KillConnections(3)).await;
}
