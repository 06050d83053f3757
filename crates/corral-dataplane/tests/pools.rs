//! Warm pools end to end: a real dataplane against the scripted Control
//! server. Claims, refill, cold fallback, single use and restart run on the
//! native driver (skipped when not root or no spawner binary is built);
//! eviction order and settings persistence run on the sim driver.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use corral_dataplane::{DataplaneConfig, NativeConfig, NativeDriver, PoolConf, SimDriver};
use corral_proto::v1::{
    command, AddSandbox, Command, EventKind, ExecRequest, PoolSpec, PoolStatus, ReadFileRequest, SandboxSpec,
    SetPool, WriteFileRequest,
};

fn set_pool(seq: u64, template: &str, min: u32, max: u32, buffer: u32) -> Command {
    Command {
        seq,
        kind: Some(command::Kind::SetPool(SetPool {
            pool: Some(PoolSpec { template: template.into(), min, max, buffer, ..Default::default() }),
        })),
        decided_at_us: 0,
    }
}

fn add_t(seq: u64, id: &str, template: &str) -> Command {
    let mut s = spec();
    s.template = template.into();
    s.env.insert("FOO".into(), "bar".into());
    Command {
        seq,
        kind: Some(command::Kind::Add(AddSandbox { sandbox_id: id.into(), spec: Some::<SandboxSpec>(s) })),
        decided_at_us: 0,
    }
}

fn pool<'a>(s: &'a Script, template: &str) -> Option<&'a PoolStatus> {
    s.pools.iter().find(|p| p.template == template)
}

fn start_path(s: &Script, id: &str) -> Option<String> {
    s.distinct(EventKind::Started).into_iter().rev().find(|e| e.sandbox_id == id).map(|e| e.start_path)
}

async fn wait_long(h: &Harness, what: &str, secs: u64, cond: impl Fn(&Script) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond(&h.control.script.lock()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; pools: {:?}", h.script(|s| s.pools.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- native fixture

/// The runtime dir and cgroup parent of one test; removes every sandbox,
/// cgroup and dir on drop, even when the test panics.
struct NativeEnv {
    _dir: tempfile::TempDir,
    rt_cfg: corral_runtime::RuntimeConfig,
    native: NativeConfig,
}

impl Drop for NativeEnv {
    fn drop(&mut self) {
        corral_runtime::force_cleanup(&self.rt_cfg);
    }
}

/// A binary that runs the runtime's spawner: `$CORRAL_SPAWNER_EXE`, or
/// `corral-runtime-helper` / `corral` next to this test's `deps` dir (cargo
/// and nextest build them with the workspace).
fn spawner_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CORRAL_SPAWNER_EXE") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    ["corral-runtime-helper", "corral"].iter().map(|n| profile_dir.join(n)).find(|p| p.is_file())
}

async fn native_env(name: &str) -> Option<(NativeEnv, Arc<NativeDriver>)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP {name}: not root (the native driver needs root)");
        return None;
    }
    let Some(exe) = spawner_exe() else {
        eprintln!("SKIP {name}: no spawner binary (build corral-runtime-helper or set CORRAL_SPAWNER_EXE)");
        return None;
    };
    let dir = tempfile::Builder::new().prefix(&format!("corral-pool-{name}-")).tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut native = NativeConfig::new(dir.path().join("rt"));
    native.cgroup_parent = format!("corral-test-pool-{name}-{}", std::process::id());
    native.spawner_exe = Some(exe);
    native.disk_mb = 64;
    let mut rt_cfg = corral_runtime::RuntimeConfig::new(native.runtime_dir.join("state"));
    rt_cfg.cgroup_parent = native.cgroup_parent.clone();
    let env = NativeEnv { _dir: dir, rt_cfg, native };
    let driver = Arc::new(NativeDriver::new(env.native.clone()).await.expect("native driver"));
    Some((env, driver))
}

/// The claim map as the claims log records it.
fn claims(env: &NativeEnv) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(env.native.runtime_dir.join("claims.log")).unwrap_or_default();
    corral_dataplane::driver::claims::replay(&text)
}

fn runtime_id(env: &NativeEnv, sandbox_id: &str) -> String {
    claims(env).get(sandbox_id).cloned().expect("claim recorded")
}

async fn exec(h: &Harness, id: &str, script: &str) -> String {
    let out = h
        .agent()
        .await
        .exec(ExecRequest { sandbox_id: id.into(), cmd: vec!["/bin/sh".into(), "-c".into(), script.into()], ..Default::default() })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_warm_claims_refill_and_fall_back_to_cold() {
    let Some((_env, driver)) = native_env("warm").await else { return };
    let mut h = Harness::new().await;
    let mut config = h.config();
    config.pool_wait_ms = 0; // beyond the pool: cold at once (the wait path has its own test)
    h.start_with(config, driver);
    h.bootstrap().await;
    h.control.push(batch(vec![set_pool(1, "base", 10, 0, 0)]));
    wait_long(&h, "10 ready members", 120, |s| pool(s, "base").is_some_and(|p| p.ready == 10 && p.target == 10)).await;

    let ids: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    h.control.push(batch(ids.iter().enumerate().map(|(i, id)| add_t(2 + i as u64, id, "base")).collect()));
    for id in &ids {
        h.wait_for("STARTED", |s| s.count(EventKind::Started, id) == 1).await;
    }
    h.script(|s| {
        for id in &ids {
            assert_eq!(start_path(s, id).as_deref(), Some("warm"), "{id}");
        }
    });
    // Bound to its tenant: hostname, env.
    assert_eq!(exec(&h, "w3", "cat /proc/sys/kernel/hostname; echo $FOO").await, "w3\nbar\n");
    // The pool refills behind the claims.
    wait_long(&h, "refill to 10", 120, |s| pool(s, "base").is_some_and(|p| p.ready == 10 && p.allocated == 10)).await;

    // More claims than ready members: the rest start cold and still run.
    let more: Vec<String> = (0..15).map(|i| format!("x{i}")).collect();
    h.control.push(batch(more.iter().enumerate().map(|(i, id)| add_t(12 + i as u64, id, "base")).collect()));
    for id in &more {
        wait_long(&h, "STARTED", 60, |s| s.count(EventKind::Started, id) == 1).await;
    }
    let (warm, cold) = h.script(|s| {
        let paths: Vec<String> = more.iter().map(|id| start_path(s, id).unwrap()).collect();
        (paths.iter().filter(|p| *p == "warm").count(), paths.iter().filter(|p| *p == "cold").count())
    });
    assert!(warm >= 10 && cold >= 1 && warm + cold == 15, "warm {warm}, cold {cold}");
    assert_eq!(h.script(|s| s.distinct(EventKind::StartFailed).len()), 0);
    assert_eq!(exec(&h, "x14", "cat /proc/sys/kernel/hostname").await, "x14\n");
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_released_sandbox_is_never_reused_and_restart_adopts_claims() {
    let Some((env, driver)) = native_env("single").await else { return };
    let mut h = Harness::new().await;
    let mut config = h.config();
    config.pool_wait_ms = 0;
    h.start_with(config.clone(), driver);
    h.bootstrap().await;
    h.control.push(batch(vec![set_pool(1, "base", 2, 0, 0)]));
    wait_long(&h, "2 ready", 60, |s| pool(s, "base").is_some_and(|p| p.ready == 2)).await;

    h.control.push(batch(vec![add_t(2, "a", "base")]));
    h.wait_for("a started", |s| s.count(EventKind::Started, "a") == 1).await;
    assert_eq!(h.script(|s| start_path(s, "a")).as_deref(), Some("warm"));
    let mut agent = h.agent().await;
    agent
        .write_file(WriteFileRequest { sandbox_id: "a".into(), path: "/tmp/secret".into(), content: b"a's".to_vec(), mode: 0 })
        .await
        .expect("write");
    let rt_a = runtime_id(&env, "a");
    h.control.push(batch(vec![remove(3, "a", "deleted")]));
    h.wait_for("a stopped", |s| s.count(EventKind::Stopped, "a") == 1).await;
    assert!(!env.native.runtime_dir.join("state").join(&rt_a).exists(), "a's runtime state (writable layer) is gone");
    assert!(!claims(&env).contains_key("a"), "a's claim is released");

    wait_long(&h, "2 ready again", 60, |s| pool(s, "base").is_some_and(|p| p.ready == 2)).await;
    h.control.push(batch(vec![add_t(4, "b", "base")]));
    h.wait_for("b started", |s| s.count(EventKind::Started, "b") == 1).await;
    assert_eq!(h.script(|s| start_path(s, "b")).as_deref(), Some("warm"));
    let rt_b = runtime_id(&env, "b");
    assert_ne!(rt_a, rt_b);
    let read = agent.read_file(ReadFileRequest { sandbox_id: "b".into(), path: "/tmp/secret".into() }).await;
    assert_eq!(read.expect_err("b must not see a's file").code(), tonic::Code::NotFound);
    wait_long(&h, "2 ready before the crash", 60, |s| pool(s, "base").is_some_and(|p| p.ready == 2 && p.warming == 0)).await;

    // Restart: a new process (and runtime) on the same dirs. The claimed
    // sandbox is adopted; the unclaimed members are destroyed; the persisted
    // setting refills the pool with fresh ones.
    let claimed: Vec<String> = claims(&env).into_values().collect();
    let left: Vec<String> = std::fs::read_dir(env.native.runtime_dir.join("pool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|m| !claimed.contains(m))
        .collect();
    assert_eq!(left.len(), 2, "unclaimed members: {left:?}");
    h.crash().await;
    let driver = Arc::new(NativeDriver::new(env.native.clone()).await.expect("native driver"));
    h.start_with(config, driver);
    wait_long(&h, "b adopted", 30, |s| s.registers.len() == 2 && s.events.iter().any(|e| e.generation == 2 && e.event.sandbox_id == "b" && e.event.kind == EventKind::Started as i32)).await;
    assert_eq!(exec(&h, "b", "cat /proc/sys/kernel/hostname; echo $FOO").await, "b\nbar\n");
    // The adopted claim counts as allocated again, and is reported as warm.
    wait_long(&h, "fresh members", 60, |s| {
        s.registers.len() == 2 && pool(s, "base").is_some_and(|p| p.ready == 2 && p.allocated == 1)
    })
    .await;
    let state = env.native.runtime_dir.join("state");
    wait_long(&h, "old members destroyed", 30, |_| left.iter().all(|m| !state.join(m).exists())).await;
    assert_eq!(runtime_id(&env, "b"), rt_b);
    h.stop().await.unwrap();
}

/// Runtime ids of the members the pool dir marks (claimed ones included).
fn marked_members(env: &NativeEnv) -> Vec<String> {
    std::fs::read_dir(env.native.runtime_dir.join("pool"))
        .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_idle_at_low_priority_and_a_stopping_shutdown_leaves_none_behind() {
    let Some((env, driver)) = native_env("drain").await else { return };
    let mut h = Harness::new().await;
    let mut config = h.config();
    config.pool_wait_ms = 0;
    config.stop_sandboxes_on_shutdown = true;
    h.start_with(config, driver.clone());
    h.bootstrap().await;
    h.control.push(batch(vec![set_pool(1, "base", 4, 0, 0)]));
    wait_long(&h, "4 ready", 60, |s| pool(s, "base").is_some_and(|p| p.ready == 4)).await;
    h.control.push(batch(vec![add_t(2, "c", "base")]));
    h.wait_for("c started", |s| s.count(EventKind::Started, "c") == 1).await;
    let claimed = runtime_id(&env, "c");
    let weight = |id: &str| driver.runtime().limits(id).unwrap().cpu_weight;
    // Made at the lowest CPU weight (v1 2, v2 1); the claim lifts it to the
    // default (1024, 100). Hosts without a cpu controller report neither.
    if let Some(w) = weight(&claimed) {
        assert!(matches!(w, 100 | 1024), "claimed: {w}");
        for m in marked_members(&env).iter().filter(|m| **m != claimed) {
            if let Ok(l) = driver.runtime().limits(m) {
                assert!(matches!(l.cpu_weight, Some(1 | 2)), "member {m}: {l:?}");
            }
        }
    }
    h.stop().await.unwrap();
    // Members (ready or still warming) and the claimed sandbox are all gone.
    let state = env.native.runtime_dir.join("state");
    let left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| state.join(n).is_dir())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(marked_members(&env).is_empty(), "pool markers left: {:?}", marked_members(&env));
    h.script(|s| assert_eq!(s.count(EventKind::Stopped, "c"), 1));
}

// ---- sim driver: policy end to end, no isolation needed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_host_evicts_ready_members_in_order_and_never_an_allocated_one() {
    let mut h = Harness::new().await;
    let driver = Arc::new(SimDriver::new(Duration::ZERO));
    let mut config: DataplaneConfig = h.config();
    config.max_sandboxes = 5;
    // p: both ready members are above min (class "above min"); q: both at
    // or below min (the last class).
    config.pools = vec![PoolConf::parse("p=0:2:2").unwrap(), PoolConf::parse("q=2:2:0").unwrap()];
    h.start_with(config, driver.clone());
    h.bootstrap().await;
    let ready = |s: &Script, t: &str| pool(s, t).map(|p| p.ready);
    h.wait_for("pools ready", |s| ready(s, "p") == Some(2) && ready(s, "q") == Some(2)).await;

    h.control.push(batch(vec![add_t(1, "alloc", "p")]));
    h.wait_for("alloc started", |s| s.count(EventKind::Started, "alloc") == 1).await;
    assert_eq!(h.script(|s| start_path(s, "alloc")).as_deref(), Some("warm"));
    h.wait_for("p refilled", |s| ready(s, "p") == Some(2) && ready(s, "q") == Some(2) && pool(s, "p").unwrap().allocated == 1).await;

    // Cold starts of a template without a pool, each needing one slot.
    let expect = [(2, 1, 2), (3, 0, 2), (4, 0, 1), (5, 0, 0)];
    for (seq, p_ready, q_ready) in expect {
        let id = format!("r{seq}");
        h.control.push(batch(vec![add_t(seq, &id, "r")]));
        h.wait_for("cold start", |s| s.count(EventKind::Started, &id) == 1).await;
        assert_eq!(h.script(|s| start_path(s, &id)).as_deref(), Some("cold"));
        h.wait_for("eviction seen", |s| ready(s, "p") == Some(p_ready) && ready(s, "q") == Some(q_ready)).await;
    }
    // Nothing left to evict: the start fails, the allocated sandbox lives on.
    h.control.push(batch(vec![add_t(6, "r6", "r")]));
    h.wait_for("start failed", |s| s.count(EventKind::StartFailed, "r6") == 1).await;
    let failed = h.script(|s| s.distinct(EventKind::StartFailed)[0].message.clone());
    assert!(failed.contains("capacity"), "{failed}");
    h.script(|s| {
        assert_eq!(s.count(EventKind::Stopped, "alloc") + s.count(EventKind::Exited, "alloc"), 0);
    });
    assert_eq!(driver.running(), 5);
    assert_eq!(driver.members(), 0);
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waits_for_a_member_that_is_warming_and_says_so() {
    let mut h = Harness::new().await;
    let mut config = h.config();
    config.pool_wait_ms = 10_000;
    config.pools = vec![PoolConf::parse("p=1").unwrap()];
    // Each prewarm (and cold start) takes a second: long enough to see.
    h.start_with(config, Arc::new(SimDriver::new(Duration::from_secs(1))));
    h.bootstrap().await;
    h.wait_for("1 ready", |s| pool(s, "p").is_some_and(|p| p.ready == 1)).await;
    h.control.push(batch(vec![add_t(1, "a", "p")]));
    h.wait_for("a started", |s| s.count(EventKind::Started, "a") == 1).await;
    // The claim set off a refill; a start arriving meanwhile waits for it
    // rather than paying a cold start of its own.
    h.wait_for("the refill warming", |s| pool(s, "p").is_some_and(|p| p.warming == 1)).await;
    h.control.push(batch(vec![add_t(2, "b", "p")]));
    h.wait_for("b started", |s| s.count(EventKind::Started, "b") == 1).await;
    assert_eq!(h.script(|s| (start_path(s, "a"), start_path(s, "b"))), (Some("warm".into()), Some("wait".into())));
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_settings_survive_a_restart_and_a_full_sync_replaces_them() {
    let mut h = Harness::new().await;
    let config = h.config();
    h.start_with(config.clone(), Arc::new(SimDriver::new(Duration::from_millis(5))));
    h.bootstrap().await;
    h.control.push(batch(vec![set_pool(1, "p", 3, 5, 1)]));
    h.wait_for("3 ready", |s| pool(s, "p").is_some_and(|p| p.ready == 3 && p.target == 3)).await;
    h.stop().await.unwrap();

    let driver = Arc::new(SimDriver::new(Duration::from_millis(5)));
    h.start_with(config, driver.clone());
    h.wait_for("3 ready after restart", |s| s.registers.len() == 2 && pool(s, "p").is_some_and(|p| p.ready == 3)).await;
    // A full sync lists every setting in force: none.
    h.control.push(full_sync(1, 1, &[]));
    h.wait_for("pool gone", |s| pool(s, "p").is_none()).await;
    h.wait_until("members discarded", || driver.members() == 0).await;
    h.stop().await.unwrap();
}

// ---- figures (not assertions): `cargo test -p corral-dataplane --test pools
// bench_native_pool -- --ignored --nocapture` as root. CORRAL_BENCH_CLAIMS
// (default 500) warm claims; CORRAL_BENCH_NODE (default 0 = skip) members
// then claimed in one burst, each running `/usr/bin/node -v` first.

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn prewarm_n(driver: &Arc<NativeDriver>, n: usize) -> (Vec<String>, Duration) {
    use corral_dataplane::Driver;
    use futures::StreamExt;
    let t0 = Instant::now();
    let members: Vec<String> = futures::stream::iter(0..n)
        .map(|_| {
            let d = driver.clone();
            async move { d.prewarm("base").await.expect("prewarm") }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    (members, t0.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures; run with --ignored --nocapture as root"]
async fn bench_native_pool() {
    use corral_dataplane::Driver;
    let Some((_env, driver)) = native_env("bench").await else { return };
    let n = env_n("CORRAL_BENCH_CLAIMS", 500);
    let (members, took) = prewarm_n(&driver, n).await;
    println!("prewarmed {n} members in {took:?} ({:.1}/s, concurrency 4)", n as f64 / took.as_secs_f64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mem: u64 = members.iter().map(|m| driver.runtime().stats(m).unwrap().memory_bytes).sum();
    println!("memory held by the ready pool: {:.2} MiB per member (cgroup memory usage), {:.1} MiB for {n}", mem as f64 / n as f64 / 1048576.0, mem as f64 / 1048576.0);
    let mut spec = corral_core::SandboxSpec {
        template: "base".into(),
        cpu_millis: 500,
        memory_mb: 128,
        ttl_s: 600,
        ..Default::default()
    };
    spec.env.insert("FOO".into(), "bar".into());
    // Where a claim's time goes (on a few members claimed below anyway).
    let (mut lim, mut host) = (Vec::new(), Vec::new());
    for m in members.iter().take(50) {
        let t0 = Instant::now();
        driver.runtime().update_limits(m, 500, 128).unwrap();
        lim.push(t0.elapsed());
        let t0 = Instant::now();
        driver.runtime().set_hostname(m, "x").unwrap();
        host.push(t0.elapsed());
    }
    lim.sort();
    host.sort();
    println!("  update_limits p50 {:?} p99 {:?}; set_hostname p50 {:?} p99 {:?}", pct(&lim, 0.5), pct(&lim, 0.99), pct(&host, 0.5), pct(&host, 0.99));
    let mut lat = Vec::with_capacity(n);
    for (i, m) in members.iter().enumerate() {
        let id = format!("claim-{i}");
        let t0 = Instant::now();
        let started = driver.claim(m, &id, &spec).await.expect("claim");
        lat.push(t0.elapsed());
        drop(started);
    }
    lat.sort();
    println!(
        "warm claim on the host (driver.claim: limits + hostname + claim record), {n} claims: p50 {:?} p99 {:?} max {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[n - 1]
    );
    for i in 0..n {
        let _ = driver.stop(&format!("claim-{i}")).await;
    }

    let burst = env_n("CORRAL_BENCH_NODE", 0);
    if burst == 0 {
        return;
    }
    let (members, took) = prewarm_n(&driver, burst).await;
    println!("prewarmed {burst} members in {took:?}");
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in members.into_iter().enumerate() {
        let (d, spec, sem) = (driver.clone(), spec.clone(), sem.clone());
        tasks.spawn(async move {
            let id = format!("node-{i}");
            d.claim(&m, &id, &spec).await.expect("claim");
            let _permit = sem.acquire().await.unwrap();
            let req = corral_dataplane::driver::ExecSpec {
                argv: vec!["/usr/bin/node".into(), "-v".into()],
                env: Default::default(),
                cwd: String::new(),
                timeout: Duration::from_secs(60),
                stdin: Vec::new(),
            };
            let out = d.exec(&id, &spec, req).await.expect("exec");
            assert_eq!(out.exit_code, 0);
            t0.elapsed()
        });
    }
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        done.push(r.unwrap());
    }
    done.sort();
    println!(
        "{burst} claims + `node -v` as first command (16 execs at once): all done in {:?} (p50 {:?}, p99 {:?})",
        t0.elapsed(),
        pct(&done, 0.5),
        pct(&done, 0.99)
    );
}
