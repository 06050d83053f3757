//! Scale beyond one machine, by simulation: a real server and one process of
//! `N` hollow hosts (`corral dataplane --driver sim --hosts N`), both started
//! from the `corral` binary on loopback, then:
//!
//! 1. a burst of single creates through REST from many clients at once
//!    → creates accepted per second (each answer means committed, fsynced);
//! 2. outbox drain: burst start → every host has acked its commands
//!    (`corral_outbox_backlog` back to 0);
//! 3. decision → host-received latency of the burst's commands, from the
//!    HdrHistograms every simulated host saves (`received_latency.hdr`);
//! 4. batch creates up to `live` sandboxes, then the server's RSS and CPU
//!    sampled while they all stay alive.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_core::api::CreateSandboxRequest;
use serde::{Deserialize, Serialize};

use crate::sample::{self, Sample};
use crate::BenchError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimConfig {
    pub binary: PathBuf,
    pub hosts: usize,
    pub burst: usize,
    /// Concurrent REST clients during the burst.
    pub clients: usize,
    pub live: usize,
    pub start_delay_ms: u64,
    /// How long to sample the server with `live` sandboxes.
    pub sample_s: u64,
    pub data_dir: PathBuf,
    /// Where the simulated hosts keep their state. Real hosts fsync on their
    /// own disks; putting the simulated ones on tmpfs keeps a thousand host
    /// fsyncs from queueing behind (and in front of) the server's on one disk.
    pub hosts_data_dir: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimResult {
    pub hosts_ready_after_ms: f64,
    pub creates_accepted_per_s: f64,
    pub burst_accept_ms: f64,
    pub burst_failed: usize,
    pub outbox_drained_after_ms: Option<f64>,
    pub received_p50_ms: f64,
    pub received_p99_ms: f64,
    pub received_max_ms: f64,
    pub received_count: u64,
    pub live_reached: usize,
    pub fill_ms: f64,
    pub server_rss_mb: f64,
    pub server_cpu_pct: f64,
    pub hosts_rss_mb: f64,
    pub hosts_cpu_pct: f64,
    pub samples: Vec<Sample>,
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind", "127.0.0.1:0", e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| BenchError::io("bind", "127.0.0.1:0", e))
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Proc, BenchError> {
    let out = std::fs::File::create(log).map_err(|e| BenchError::io("create", log, e))?;
    let err = out.try_clone().map_err(|e| BenchError::io("open", log, e))?;
    let child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| BenchError::io("spawn", bin, e))?;
    Ok(Proc(child))
}

/// The value of the sample line that starts with `series` exactly.
fn labelled(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn metric(client: &Client, name: &str) -> Option<f64> {
    corral_client::metric_sum(&client.metrics().await.ok()?, name)
}

pub async fn run(cfg: &SimConfig) -> Result<SimResult, BenchError> {
    let (api, grpc) = (free_port()?, free_port()?);
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| BenchError::io("create", &cfg.data_dir, e))?;
    let d = |s: &str| cfg.data_dir.join(s).display().to_string();
    // Loopback only, for one run: no tokens needed.
    let server_args: Vec<String> = ["server", "--insecure-no-auth", "--data-dir", &d("server"), "--listen", &format!("127.0.0.1:{api}"), "--grpc-listen", &format!("127.0.0.1:{grpc}")]
        .map(String::from)
        .to_vec();
    let server = spawn(&cfg.binary, &server_args, &cfg.data_dir.join("server.log"))?;
    let hosts_args: Vec<String> = vec![
        "dataplane".into(), "--driver".into(), "sim".into(), "--hosts".into(), cfg.hosts.to_string(),
        "--sim-start-ms".into(), cfg.start_delay_ms.to_string(), "--server".into(), format!("http://127.0.0.1:{grpc}"),
        "--data-dir".into(), cfg.hosts_data_dir.display().to_string(),
    ];
    let client = Client::new(&format!("http://127.0.0.1:{api}"), None).map_err(|e| BenchError::Config(e.to_string()))?;
    let began = Instant::now();
    let hosts = spawn(&cfg.binary, &hosts_args, &cfg.data_dir.join("hosts.log"))?;
    let mut r = SimResult::default();
    wait_hosts(&client, cfg.hosts).await?;
    r.hosts_ready_after_ms = began.elapsed().as_secs_f64() * 1000.0;
    let roles = vec![("server".to_string(), server.0.id() as i32), ("hosts".to_string(), hosts.0.id() as i32)];
    let sampler = sample::Sampler::start(roles, Instant::now(), Duration::from_secs(1));
    burst(&client, cfg, &mut r).await;
    r.received_count = received(cfg, &mut r).await;
    fill(&client, cfg, &mut r).await?;
    tokio::time::sleep(Duration::from_secs(cfg.sample_s)).await;
    r.samples = sampler.finish();
    let window_from = r.samples.last().map(|s| s.t_ms - cfg.sample_s as f64 * 1000.0).unwrap_or(0.0);
    let avg = |role: &str, f: &dyn Fn(&Sample) -> f64| {
        let v: Vec<f64> = r.samples.iter().filter(|s| s.role == role && s.t_ms >= window_from).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    r.server_rss_mb = avg("server", &|s| s.rss_mb);
    r.server_cpu_pct = avg("server", &|s| s.cpu_pct);
    r.hosts_rss_mb = avg("hosts", &|s| s.rss_mb);
    r.hosts_cpu_pct = avg("hosts", &|s| s.cpu_pct);
    drop(hosts);
    drop(server);
    Ok(r)
}

async fn wait_hosts(client: &Client, n: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(h) = client.hosts().await {
            if h.hosts.iter().filter(|h| h.alive).count() >= n {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Config(format!("{n} simulated hosts did not all register within 300 s")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `burst` single creates from `clients` concurrent clients; then waits for
/// the outbox to drain.
async fn burst(client: &Client, cfg: &SimConfig, r: &mut SimResult) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let began = Instant::now();
    let workers = (0..cfg.clients.max(1)).map(|_| {
        let (client, next, total) = (client.clone(), next.clone(), cfg.burst);
        tokio::spawn(async move {
            let mut failed = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                if client.create(&CreateSandboxRequest::default(), false).await.is_err() {
                    failed += 1;
                }
            }
            failed
        })
    });
    let failed: Vec<_> = futures::future::join_all(workers).await;
    r.burst_failed = failed.into_iter().map(|f| f.unwrap_or(0)).sum();
    let accept = began.elapsed();
    r.burst_accept_ms = accept.as_secs_f64() * 1000.0;
    r.creates_accepted_per_s = (cfg.burst - r.burst_failed) as f64 / accept.as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if metric(client, "corral_outbox_backlog").await == Some(0.0) {
            r.outbox_drained_after_ms = Some(began.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Merges every simulated host's received-latency histogram (after their
/// next periodic save).
async fn received(cfg: &SimConfig, r: &mut SimResult) -> u64 {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut all = crate::hdr::new_histogram();
    for i in 0..cfg.hosts {
        let p = cfg.hosts_data_dir.join(format!("sim-{i}")).join("received_latency.hdr");
        if let Ok(h) = crate::hdr::load(&p) {
            let _ = all.add(&h);
        }
    }
    let (p50, p99, max) = crate::hdr::quantiles_ms(&all);
    (r.received_p50_ms, r.received_p99_ms, r.received_max_ms) = (p50, p99, max);
    all.len()
}

/// Batch creates until `live` sandboxes exist, then waits until they run.
async fn fill(client: &Client, cfg: &SimConfig, r: &mut SimResult) -> Result<(), BenchError> {
    let began = Instant::now();
    let mut made = cfg.burst - r.burst_failed;
    while made < cfg.live {
        let n = (cfg.live - made).min(5_000);
        match client.create_batch(n, &CreateSandboxRequest::default()).await {
            Ok(ids) => made += ids.len(),
            Err(e) => return Err(BenchError::Config(format!("batch create at {made}: {e}"))),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = client.metrics().await.unwrap_or_default();
        let running = labelled(&text, "corral_sandboxes{state=\"running\"}").unwrap_or(0.0) as usize;
        r.live_reached = running;
        if running >= cfg.live || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    r.fill_ms = began.elapsed().as_secs_f64() * 1000.0;
    Ok(())
}

pub fn table(cfg: &SimConfig, r: &SimResult) -> String {
    let drained = r.outbox_drained_after_ms.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "not within 300 s".into());
    format!(
        "simulated fleet: {} hosts (start delay {} ms, state in {}), {} cores\n\
         \x20 hosts registered after         {:.1} s\n\
         \x20 creates accepted               {:.0}/s  ({} creates, {} clients, {:.2} s, {} failed)\n\
         \x20 outbox drained after           {drained} (from burst start)\n\
         \x20 decision → host received       p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})\n\
         \x20 live sandboxes                 {} (filled in {:.1} s)\n\
         \x20 server with them               RSS {:.0} MB, CPU {:.1}% of a core (mean over {} s)\n\
         \x20 {} sim hosts (one process)   RSS {:.0} MB, CPU {:.1}%\n",
        cfg.hosts, cfg.start_delay_ms, cfg.hosts_data_dir.display(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        r.hosts_ready_after_ms / 1000.0, r.creates_accepted_per_s, cfg.burst, cfg.clients, r.burst_accept_ms / 1000.0, r.burst_failed,
        r.received_p50_ms, r.received_p99_ms, r.received_max_ms, r.received_count,
        r.live_reached, r.fill_ms / 1000.0, r.server_rss_mb, r.server_cpu_pct, cfg.sample_s,
        cfg.hosts, r.hosts_rss_mb, r.hosts_cpu_pct,
    )
}
