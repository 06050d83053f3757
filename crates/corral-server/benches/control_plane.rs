//! Control-plane figures on loopback, with a real server (redb store with
//! fsync, REST, gRPC) and a minimal host that long-polls like a dataplane but
//! starts nothing, so what is measured is the server and the protocol:
//!
//! 1. creates accepted per second through the REST API (many clients at once);
//! 2. decision → host-received latency of each `AddSandbox`, unloaded
//!    (sequential creates) and during the burst;
//! 3. how long a 1,000-command backlog takes to reach the host and be acked.
//!
//! `cargo bench -p corral-server --bench control_plane`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_core::api::CreateSandboxRequest;
use corral_core::time::now_us;
use corral_proto::v1 as pb;
use corral_proto::v1::control_client::ControlClient;
use corral_server::{Server, ServerConfig};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

const BURST: usize = 20_000;
const CONCURRENCY: usize = 256;
const SEQUENTIAL: usize = 2_000;
const BACKLOG: usize = 1_000;

/// The simulated host: its cursor, a switch to pause polling, and latencies.
struct Host {
    cursor: AtomicU64,
    paused: AtomicBool,
    /// Set by the host once it has stopped polling (no poll in flight).
    parked: AtomicBool,
    latency_us: Mutex<Histogram<u64>>,
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.expect("bind");
    let (http, grpc) = (server.http_addr(), server.grpc_addr());
    tokio::spawn(server.serve(std::future::pending()));

    let host = Arc::new(Host {
        cursor: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        parked: AtomicBool::new(false),
        latency_us: Mutex::new(Histogram::new(3).unwrap()),
    });
    // The host runs on a runtime of its own, as a separate dataplane process
    // would, so it is not queued behind the load generator's tasks.
    let host_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let epoch = register(&format!("http://{grpc}")).await;
    {
        let (url, host) = (format!("http://{grpc}"), host.clone());
        std::thread::spawn(move || host_rt.block_on(poll_loop(url, epoch, host)));
    }
    let client = Client::new(&format!("http://{http}"), None).unwrap();

    // 2a. Unloaded latency: one create at a time.
    for _ in 0..SEQUENTIAL {
        client.create(&CreateSandboxRequest::default(), false).await.expect("create");
    }
    wait_cursor(&host, SEQUENTIAL as u64).await;
    let unloaded = std::mem::replace(&mut *host.latency_us.lock(), Histogram::new(3).unwrap());

    // 1 + 2b. Throughput and latency under a burst.
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        let (client, permit) = (client.clone(), sem.clone().acquire_owned().await.unwrap());
        tasks.push(tokio::spawn(async move {
            let r = client.create(&CreateSandboxRequest::default(), false).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("create");
    }
    let accept = started.elapsed();
    wait_cursor(&host, (SEQUENTIAL + BURST) as u64).await;
    let loaded = std::mem::replace(&mut *host.latency_us.lock(), Histogram::new(3).unwrap());

    // 3. A backlog built while the host is away, drained when it polls again.
    host.paused.store(true, Ordering::SeqCst);
    while !host.parked.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client.create_batch(BACKLOG, &CreateSandboxRequest::default()).await.expect("batch");
    let target = (SEQUENTIAL + BURST + BACKLOG) as u64;
    let resumed = Instant::now();
    host.paused.store(false, Ordering::SeqCst);
    wait_cursor(&host, target).await;
    let received = resumed.elapsed();
    loop {
        let hosts = client.hosts().await.unwrap();
        if hosts.hosts.iter().all(|h| h.outbox_backlog == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let acked = resumed.elapsed();

    println!("control plane on loopback (redb with fsync, 1 simulated host)");
    println!("  creates accepted:        {:.0}/s  ({BURST} creates, {CONCURRENCY} clients, {accept:.2?})",
        BURST as f64 / accept.as_secs_f64());
    report("decision → received, sequential", &unloaded);
    report("decision → received, burst", &loaded);
    println!("  {BACKLOG}-command backlog: all received after {received:.2?}, all acked after {acked:.2?}");
    let metrics = client.metrics().await.unwrap_or_default();
    let per = |name: &str| {
        let sum = corral_client::metric_sum(&metrics, &format!("{name}_sum")).unwrap_or(0.0);
        let count = corral_client::metric_sum(&metrics, &format!("{name}_count")).unwrap_or(1.0);
        (sum / count, count)
    };
    let (commit_s, commits) = per("corral_commit_seconds");
    let (jobs, _) = per("corral_commit_jobs");
    println!("  group commits: {commits:.0}, mean {:.2} ms each, mean {jobs:.1} decisions each", commit_s * 1e3);
}

fn report(what: &str, h: &Histogram<u64>) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {what:<32} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        ms(0.5), ms(0.99), h.max() as f64 / 1000.0, h.len()
    );
}

async fn register(url: &str) -> u64 {
    let mut ctl = ControlClient::connect(url.to_string()).await.expect("connect");
    let req = pb::RegisterRequest {
        host_id: "bench-host".into(),
        epoch: 0,
        capacity: Some(pb::Resources { cpu_millis: 1_000_000, memory_mb: 100_000_000 }),
        templates: vec!["base".into()],
        agent_addr: "127.0.0.1:1".into(),
        max_sandboxes: 0,
    };
    ctl.register(req).await.expect("register").into_inner().epoch
}

async fn poll_loop(url: String, epoch: u64, host: Arc<Host>) {
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .tcp_nodelay(true)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20);
    let channel = endpoint.connect().await.expect("connect");
    let mut ctl = ControlClient::new(channel).max_decoding_message_size(256 << 20);
    let mut epoch_now = 0; // the first poll gets a full sync, like a new dataplane
    loop {
        while host.paused.load(Ordering::SeqCst) {
            host.parked.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        host.parked.store(false, Ordering::SeqCst);
        let req = pb::PollRequest {
            host_id: "bench-host".into(),
            epoch: epoch_now,
            after_seq: host.cursor.load(Ordering::SeqCst),
            wait_ms: 100,
            max_commands: 0,
            max_bytes: 0,
        };
        let Ok(resp) = ctl.poll_commands(req).await else { continue };
        let received = now_us();
        match resp.into_inner().result {
            Some(pb::poll_response::Result::Batch(b)) => {
                let mut lat = host.latency_us.lock();
                for c in &b.commands {
                    let _ = lat.record(received.saturating_sub(c.decided_at_us));
                }
                if let Some(last) = b.commands.last() {
                    host.cursor.store(last.seq, Ordering::SeqCst);
                }
            }
            Some(pb::poll_response::Result::FullSync(fs)) => {
                assert_eq!(fs.epoch, epoch);
                epoch_now = fs.epoch;
                host.cursor.store(fs.seq, Ordering::SeqCst);
            }
            None => {}
        }
    }
}

async fn wait_cursor(host: &Host, seq: u64) {
    while host.cursor.load(Ordering::SeqCst) < seq {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}
