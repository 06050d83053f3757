//! `cargo bench -p corral-runtime`: cold start (sequential and bursts of 100
//! and 1,000; `isolated` vs `nat` networking interleaved), host memory per
//! idle sandbox, and exec round trip. Prints figures; asserts nothing. Needs
//! root (and nftables for the `nat` rows: a private range and table, no
//! traffic sent).
//!
//! This is also the reference for how a binary must start the spawner:
//! `maybe_run_spawner()` first thing in `main`, before tokio exists.

use std::time::{Duration, Instant};

use corral_runtime::{
    base_template, ExecSpec, NatConfig, NetworkMode, Runtime, RuntimeConfig, SandboxConfig,
    Template,
};

fn main() {
    corral_runtime::maybe_run_spawner();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the runtime benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let root = std::path::PathBuf::from(format!("/var/tmp/corral-bench-{}", std::process::id()));
    let mut cfg = RuntimeConfig::new(root.join("state"));
    cfg.cgroup_parent = format!("corral-bench-{}", std::process::id());
    cfg.id_base = 3_000_000_000;
    cfg.id_slots = 2048;
    if std::path::Path::new("/usr/sbin/nft").exists() {
        let mut nat = NatConfig::new("10.226.0.0/20".parse().expect("range"));
        nat.veth_prefix = "crb".into();
        nat.nft_table = "corral_bench".into();
        nat.enable_forwarding = false;
        cfg.nat = Some(nat);
    }
    let guard = Cleanup(cfg.clone(), root.clone());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    tokio.block_on(run(cfg, &root, quick));
    drop(guard);
}

struct Cleanup(RuntimeConfig, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        corral_runtime::force_cleanup(&self.0);
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn run(cfg: RuntimeConfig, root: &std::path::Path, quick: bool) {
    let template = base_template(&root.join("templates")).expect("base template");
    let rt = Runtime::new(cfg).await.expect("runtime");
    println!(
        "corral-runtime benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    baseline_fork_exec();
    sequential(&rt, &template, if quick { 50 } else { 200 }).await;
    if rt.free_net_slots().is_some() {
        isolated_vs_nat(&rt, &template, if quick { 50 } else { 200 }).await;
    }
    burst(&rt, &template, 100).await;
    if !quick {
        burst(&rt, &template, 1000).await;
    }
    memory(&rt, &template, 100).await;
    exec_round_trip(&rt, &template, if quick { 100 } else { 500 }).await;
    rt.destroy_all().await.expect("destroy all");
}

fn config(t: &Template, id: String) -> SandboxConfig {
    let mut c = t.sandbox_config(id);
    (c.memory_mb, c.pids_max, c.disk_mb, c.cpu_millis) = (256, 256, 64, 1000);
    c
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "{label:<44} n={:<5} p50={:>8.3} ms  p90={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        d.len(),
        pct(&d, 0.5).as_secs_f64() * 1e3,
        pct(&d, 0.9).as_secs_f64() * 1e3,
        pct(&d, 0.99).as_secs_f64() * 1e3,
        d.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn baseline_fork_exec() {
    let d = (0..200)
        .map(|_| {
            let t = Instant::now();
            let _ = std::process::Command::new("/bin/true").status();
            t.elapsed()
        })
        .collect();
    report("baseline: fork/exec /bin/true (sequential)", d);
}

async fn sequential(rt: &Runtime, t: &Template, n: usize) {
    let mut starts = Vec::with_capacity(n);
    let mut destroys = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("seq-{i}");
        let t0 = Instant::now();
        rt.create(config(t, id.clone())).await.expect("create");
        starts.push(t0.elapsed());
        let t1 = Instant::now();
        rt.destroy(&id).await.expect("destroy");
        destroys.push(t1.elapsed());
    }
    report("cold start, sequential (create -> init answers)", starts);
    report("destroy, sequential", destroys);
}

/// Cold starts of `isolated` and `nat` sandboxes alternating, so both see
/// the same load; `nat` adds the veth pair, its addresses and route, and
/// the resolv.conf write.
async fn isolated_vs_nat(rt: &Runtime, t: &Template, n: usize) {
    let (mut iso, mut nat, mut nat_destroy) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        for mode in [NetworkMode::Isolated, NetworkMode::Nat] {
            let id = format!("net-{i}-{mode:?}");
            let mut c = config(t, id.clone());
            c.network = mode;
            let t0 = Instant::now();
            rt.create(c).await.expect("create");
            let took = t0.elapsed();
            let t1 = Instant::now();
            rt.destroy(&id).await.expect("destroy");
            match mode {
                NetworkMode::Isolated => iso.push(took),
                NetworkMode::Nat => {
                    nat.push(took);
                    nat_destroy.push(t1.elapsed());
                }
            }
        }
    }
    // Paired differences cancel load that drifts over the run.
    let mut diff: Vec<f64> = iso
        .iter()
        .zip(&nat)
        .map(|(i, n)| n.as_secs_f64() - i.as_secs_f64())
        .collect();
    diff.sort_by(f64::total_cmp);
    report("cold start, isolated (interleaved with nat)", iso);
    report("cold start, nat (veth + addresses + route)", nat);
    println!(
        "{:<44} n={:<5} p25={:>+8.3} ms  p50={:>+8.3} ms  p75={:>+8.3} ms",
        "cold start, nat minus isolated (paired)",
        diff.len(),
        diff[diff.len() / 4] * 1e3,
        diff[diff.len() / 2] * 1e3,
        diff[diff.len() * 3 / 4] * 1e3
    );
    report("destroy, nat", nat_destroy);
}

/// CPU seconds used so far by this process and by the spawner with its
/// reaped children (the inits and everything they ran): load-independent.
/// Returns (this process, spawner + inits).
fn cpu_seconds(rt: &Runtime) -> (f64, f64) {
    let tick = 100.0; // USER_HZ
    let of = |pid: Option<u32>| -> f64 {
        let Some(pid) = pid else { return 0.0 };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            return 0.0;
        };
        let f: Vec<f64> = after.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
        // utime, stime, cutime, cstime are fields 14..17 (11..14 after the comm).
        f.get(11..15).map_or(0.0, |v| v.iter().sum::<f64>()) / tick
    };
    (of(Some(std::process::id())), of(rt.spawner_pid()))
}

async fn burst(rt: &Runtime, t: &Template, n: usize) {
    let cpu0 = cpu_seconds(rt);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (rt, cfg) = (rt.clone(), config(t, format!("burst{n}-{i}")));
            tokio::spawn(async move { rt.create(cfg).await.map(|_| t0.elapsed()) })
        })
        .collect();
    let mut done = Vec::with_capacity(n);
    let mut failed = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(d) => done.push(d),
            Err(e) => {
                failed += 1;
                eprintln!("create failed: {e}");
            }
        }
    }
    let all = t0.elapsed();
    report(&format!("burst of {n}: release -> each init answers"), done);
    println!(
        "{:<44} all {n} in {:.3} s = {:.0} sandboxes/s, {failed} failed",
        format!("burst of {n}: throughput"),
        all.as_secs_f64(),
        n as f64 / all.as_secs_f64()
    );
    let t1 = Instant::now();
    let ids = rt.list().await.expect("list");
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.destroy(&id).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("destroy");
    }
    println!(
        "{:<44} {:.3} s",
        format!("burst of {n}: destroy all"),
        t1.elapsed().as_secs_f64()
    );
    let cpu1 = cpu_seconds(rt);
    let (rt_cpu, sp_cpu) = ((cpu1.0 - cpu0.0) / n as f64, (cpu1.1 - cpu0.1) / n as f64);
    let cpu = rt_cpu + sp_cpu;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!(
        "{:<44} {:.2} ms CPU per sandbox created+destroyed (runtime {:.2}, spawner+init {:.2}; kernel workers excluded) = {:.0}/s on {cores} idle cores",
        format!("burst of {n}: cost"),
        cpu * 1e3,
        rt_cpu * 1e3,
        sp_cpu * 1e3,
        cores / cpu
    );
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size of a process in KiB (its fair share of shared pages).
fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn memory(rt: &Runtime, t: &Template, n: usize) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = meminfo("MemAvailable:");
    let slab_before = meminfo("Slab:");
    for i in 0..n {
        rt.create(config(t, format!("idle-{i}")))
            .await
            .expect("create");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = meminfo("MemAvailable:");
    let slab_after = meminfo("Slab:");
    let idle0 = cpu_seconds(rt);
    let inits: Vec<i32> = rt
        .list()
        .await
        .expect("list")
        .iter()
        .map(|id| rt.init_pid(id).expect("pid"))
        .collect();
    let init_ticks = |pids: &[i32]| -> f64 {
        pids.iter()
            .map(|p| {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]).to_string();
                let f: Vec<f64> = after.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
                f.get(11..13).map_or(0.0, |v| v.iter().sum::<f64>()) / 100.0
            })
            .sum()
    };
    let inits0 = init_ticks(&inits);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle1 = cpu_seconds(rt);
    let idle_cpu = (idle1.0 - idle0.0) + (idle1.1 - idle0.1) + (init_ticks(&inits) - inits0);
    println!(
        "{:<44} {:.3} CPU-seconds in 2 s (runtime + spawner + inits)",
        format!("idle CPU, {n} sandboxes"),
        idle_cpu
    );
    let ids = rt.list().await.expect("list");
    let pss: u64 = ids
        .iter()
        .map(|id| pss_kib(rt.init_pid(id).expect("pid")))
        .sum();
    let cg: u64 = ids
        .iter()
        .map(|id| rt.stats(id).expect("stats").memory_bytes)
        .sum();
    println!(
        "{:<44} host MemAvailable -{:.0} KiB/sandbox (kernel slab +{:.0} KiB), init PSS {:.0} KiB, memory cgroup {:.0} KiB",
        format!("idle memory, {n} sandboxes"),
        before.saturating_sub(after) as f64 / n as f64,
        slab_after.saturating_sub(slab_before) as f64 / n as f64,
        pss as f64 / n as f64,
        cg as f64 / 1024.0 / n as f64
    );
    for id in ids {
        rt.destroy(&id).await.expect("destroy");
    }
}

async fn exec_round_trip(rt: &Runtime, t: &Template, n: usize) {
    rt.create(config(t, "exec".into())).await.expect("create");
    let mut d = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let out = rt
            .exec_buffered("exec", ExecSpec::new(["/bin/true"]))
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0);
        d.push(t0.elapsed());
    }
    report("exec /bin/true round trip (socket, sequential)", d);
    let mut d = Vec::with_capacity(n);
    for _ in 0..n / 5 {
        let t0 = Instant::now();
        let out = rt
            .exec_buffered(
                "exec",
                ExecSpec::new(["/usr/bin/python3", "-S", "-c", "pass"]),
            )
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0);
        d.push(t0.elapsed());
    }
    report("exec python3 -S -c pass round trip", d);
    rt.destroy("exec").await.expect("destroy");
}
