//! Recovery: how long a restarted server takes to serve again with a full
//! store — 10,000 live sandboxes and 1,000 queued (un-acked) outbox commands.
//!
//! Builds such a redb store once, then restarts a server on it several times
//! and times each restart from `Server::bind` to the first successful REST
//! answer (`GET /v1/sandboxes/{id}` of a sandbox from the store), with the
//! phases of `bind` (open, load, rebuild) timed on their own.
//!
//! `cargo bench -p corral-server --bench recovery`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::{Command, Host, OutboxEntry, Sandbox, SandboxSpec, SandboxState};
use corral_server::state::State;
use corral_server::{Server, ServerConfig};
use corral_store::{RedbStore, Store, Write};

const LIVE: usize = 10_000;
const QUEUED: usize = 1_000;
const HOSTS: usize = 10;
const RESTARTS: usize = 7;

fn spec() -> SandboxSpec {
    SandboxSpec {
        template: "base".into(),
        cpu_millis: 1000,
        memory_mb: 512,
        ttl_s: 86_400,
        env: [("LANG".to_string(), "C.UTF-8".to_string())].into(),
        labels: [("team".to_string(), "bench".to_string())].into(),
        network: Default::default(),
    }
}

/// Writes the store: `LIVE` running sandboxes spread over `HOSTS` hosts, and
/// `QUEUED` enqueued ones whose `AddSandbox` no host has acked yet.
fn build(store: &RedbStore, now_ms: u64) -> String {
    let host_of = |i: usize| format!("host-{}", i % HOSTS);
    let mut writes = Vec::new();
    let mut last_seq = [0u64; HOSTS];
    for i in 0..LIVE + QUEUED {
        let mut sb = Sandbox::new(format!("sb-{i:028x}"), spec(), Some(format!("key-{i}")), now_ms);
        sb.host = Some(host_of(i));
        if i < LIVE {
            sb.state = SandboxState::Running;
            sb.started_at_ms = Some(now_ms);
            sb.start_path = Some("warm".into());
        } else {
            sb.state = SandboxState::Enqueued;
            let h = i % HOSTS;
            last_seq[h] += 1;
            writes.push(Write::PutOutbox(OutboxEntry {
                host: host_of(i),
                seq: last_seq[h],
                command: Command::AddSandbox { sandbox_id: sb.id.clone(), spec: sb.spec.clone() },
                committed_at_ms: now_ms,
                decided_at_us: now_ms * 1000,
            }));
        }
        writes.push(Write::PutSandbox(sb));
    }
    for (h, seq) in last_seq.iter().enumerate() {
        writes.push(Write::PutHost(Host {
            id: host_of(h),
            epoch: 1,
            last_seq: *seq,
            acked_seq: 0,
            cpu_millis: 64_000,
            memory_mb: 262_144,
            templates: vec!["base".into()],
            agent_addr: "127.0.0.1:1".into(),
            registered_at_ms: now_ms,
            full_syncs: 1,
            max_sandboxes: 0,
        }));
    }
    store.commit(&writes).expect("commit");
    format!("sb-{:028x}", LIVE / 2)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One restart: bind on `dir`, serve, poll until `GET /v1/sandboxes/{probe}`
/// answers 200. Returns (bind, first answer), both from the start.
async fn restart(dir: &std::path::Path, probe: &str) -> (Duration, Duration) {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    let server = Server::bind(config).await.expect("bind");
    let bound = started.elapsed();
    assert_eq!(server.loaded.0, LIVE + QUEUED, "every sandbox loaded");
    let url = format!("http://{}/v1/sandboxes/{probe}", server.http_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let answered = started.elapsed();
    let _ = stop.send(());
    let _ = serving.await;
    (bound, answered)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("corral.redb");
    let now_ms = corral_core::time::now_ms();
    let t = Instant::now();
    let probe = {
        let store = RedbStore::open(&path).expect("open");
        build(&store, now_ms)
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "store: {LIVE} running + {QUEUED} queued sandboxes on {HOSTS} hosts, {QUEUED} outbox commands; \
         {:.1} MB, built in {:.0} ms",
        size as f64 / 1e6,
        ms(t.elapsed())
    );

    // The phases of bind, on their own (warm page cache, as after a restart).
    let (mut open, mut load, mut rebuild) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RESTARTS {
        let t = Instant::now();
        let store = Arc::new(RedbStore::open(&path).expect("open"));
        open.push(ms(t.elapsed()));
        let t = Instant::now();
        let snap = store.load().expect("load");
        load.push(ms(t.elapsed()));
        let t = Instant::now();
        let state = State::from_snapshot(snap);
        rebuild.push(ms(t.elapsed()));
        assert_eq!(state.outbox_backlog(), QUEUED as u64);
    }
    println!(
        "bind phases (median of {RESTARTS}): open {:.1} ms, load {:.1} ms, rebuild state {:.1} ms",
        median(open),
        median(load),
        median(rebuild)
    );

    let (mut bind, mut first) = (Vec::new(), Vec::new());
    for _ in 0..RESTARTS {
        let (b, a) = restart(dir.path(), &probe).await;
        bind.push(ms(b));
        first.push(ms(a));
    }
    let worst = first.iter().copied().fold(0.0, f64::max);
    println!(
        "restart → first REST answer (median of {RESTARTS}): {:.1} ms (Server::bind {:.1} ms); worst {:.1} ms",
        median(first),
        median(bind),
        worst
    );
}
