//! A scripted in-test Control server and a harness that runs a real
//! dataplane against it, and kills every process the test created on drop.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_dataplane::{read_agent_addr, DataplaneConfig};
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::control_server::{Control, ControlServer};
use corral_proto::v1::{
    command, poll_response, AddSandbox, Command, CommandBatch, EventKind, FullSync,
    HeartbeatRequest, HeartbeatResponse, PollRequest, PollResponse, RegisterRequest,
    RegisterResponse, RemoveSandbox, SandboxEvent, SandboxSpec,
};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Everything the fake server saw, and what it will answer.
#[derive(Default)]
pub struct Script {
    pub registers: Vec<RegisterRequest>,
    pub polls: Vec<PollRequest>,
    pub responses: VecDeque<PollResponse>,
    /// Every event received, including resends.
    pub events: Vec<Seen>,
    pub heartbeats: usize,
    pub withhold_acks: bool,
    pub acked: u64,
    pub epoch: u64,
    /// The pools of the last heartbeat.
    pub pools: Vec<corral_proto::v1::PoolStatus>,
}

/// An event as received. Seqs restart with each dataplane process, so an
/// event is identified by `(generation, seq)`, the generation being the number
/// of registrations seen when it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub generation: usize,
    pub event: SandboxEvent,
    pub acked: bool,
}

impl Script {
    /// How many distinct events of `kind` were reported for `id`.
    pub fn count(&self, kind: EventKind, id: &str) -> usize {
        self.distinct(kind)
            .iter()
            .filter(|e| e.sandbox_id == id)
            .count()
    }

    /// The distinct events of `kind` (resends counted once), acked or not.
    pub fn distinct(&self, kind: EventKind) -> Vec<SandboxEvent> {
        let mut keys = std::collections::HashSet::new();
        self.events
            .iter()
            .filter(|s| s.event.kind == kind as i32 && keys.insert((s.generation, s.event.seq)))
            .map(|s| s.event.clone())
            .collect()
    }

    pub fn acked_kind(&self, kind: EventKind, id: &str) -> bool {
        self.events
            .iter()
            .any(|s| s.acked && s.event.kind == kind as i32 && s.event.sandbox_id == id)
    }

    pub fn last_poll(&self) -> Option<&PollRequest> {
        self.polls.last()
    }
}

#[derive(Clone, Default)]
pub struct FakeControl {
    pub script: Arc<Mutex<Script>>,
    pushed: Arc<Notify>,
}

impl FakeControl {
    pub fn push(&self, resp: PollResponse) {
        self.script.lock().responses.push_back(resp);
        self.pushed.notify_waiters();
    }
}

#[tonic::async_trait]
impl Control for FakeControl {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let mut s = self.script.lock();
        s.registers.push(req.into_inner());
        // A new process numbers its events from 1 again.
        s.acked = 0;
        Ok(Response::new(RegisterResponse {
            epoch: s.epoch,
            heartbeat_interval_ms: 50,
        }))
    }

    async fn poll_commands(
        &self,
        req: Request<PollRequest>,
    ) -> Result<Response<PollResponse>, Status> {
        let req = req.into_inner();
        let wait = Duration::from_millis(req.wait_ms.min(200));
        self.script.lock().polls.push(req);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.pushed.notified();
            if let Some(r) = self.script.lock().responses.pop_front() {
                return Ok(Response::new(r));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(PollResponse { result: None }));
            }
        }
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = req.into_inner();
        let mut s = self.script.lock();
        s.heartbeats += 1;
        s.pools = req.pools.clone();
        let generation = s.registers.len();
        s.events.extend(req.events.iter().map(|e| Seen {
            generation,
            event: e.clone(),
            acked: false,
        }));
        if !s.withhold_acks {
            let top = req.events.iter().map(|e| e.seq).max().unwrap_or(0);
            s.acked = s.acked.max(top);
        }
        let acked = s.acked;
        for seen in s
            .events
            .iter_mut()
            .filter(|e| e.generation == generation && e.event.seq <= acked)
        {
            seen.acked = true;
        }
        Ok(Response::new(HeartbeatResponse {
            acked_event_seq: s.acked,
            reregister: false,
        }))
    }
}

pub fn spec() -> SandboxSpec {
    SandboxSpec {
        template: "base".into(),
        cpu_millis: 100,
        memory_mb: 64,
        ttl_s: 600,
        ..Default::default()
    }
}

pub fn add(seq: u64, id: &str) -> Command {
    Command {
        seq,
        kind: Some(command::Kind::Add(AddSandbox {
            sandbox_id: id.into(),
            spec: Some(spec()),
        })),
        decided_at_us: 0,
    }
}

pub fn remove(seq: u64, id: &str, reason: &str) -> Command {
    Command {
        seq,
        kind: Some(command::Kind::Remove(RemoveSandbox {
            sandbox_id: id.into(),
            reason: reason.into(),
        })),
        decided_at_us: 0,
    }
}

pub fn batch(commands: Vec<Command>) -> PollResponse {
    PollResponse {
        result: Some(poll_response::Result::Batch(CommandBatch {
            commands,
            more: false,
        })),
    }
}

pub fn full_sync(epoch: u64, seq: u64, ids: &[&str]) -> PollResponse {
    let sandboxes = ids
        .iter()
        .map(|id| AddSandbox {
            sandbox_id: id.to_string(),
            spec: Some(spec()),
        })
        .collect();
    PollResponse {
        result: Some(poll_response::Result::FullSync(FullSync {
            epoch,
            seq,
            sandboxes,
            reason: "epoch_mismatch".into(),
            pools: Vec::new(),
        })),
    }
}

/// A live process of this test's data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub sandbox_id: String,
    pub keeper: bool,
}

type RunHandle = tokio::task::JoinHandle<Result<(), corral_dataplane::DataplaneError>>;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub control: FakeControl,
    pub server_url: String,
    dataplane: Option<(RunHandle, oneshot::Sender<()>)>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    pub async fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("corral_dataplane=debug")
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("dp").canonicalize().unwrap_or_else(|_| {
            std::fs::create_dir_all(dir.path().join("dp")).expect("mkdir");
            dir.path().join("dp").canonicalize().expect("canonical")
        });
        let control = FakeControl::default();
        control.script.lock().epoch = 1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let svc = ControlServer::new(control.clone());
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Harness {
            dir,
            data_dir,
            control,
            server_url: format!("http://{addr}"),
            dataplane: None,
            server,
        }
    }

    pub fn config(&self) -> DataplaneConfig {
        let mut c = DataplaneConfig::new(self.server_url.clone(), "host-1", self.data_dir.clone());
        c.poll_wait_ms = 200;
        c.start_concurrency = 2;
        c
    }

    pub fn start(&mut self, config: DataplaneConfig) {
        let _ = std::fs::remove_file(self.data_dir.join("agent.addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(corral_dataplane::run(config, async move {
            let _ = rx.await;
        }));
        self.dataplane = Some((handle, tx));
    }

    /// Like [`Harness::start`], with any driver.
    pub fn start_with(&mut self, config: DataplaneConfig, driver: std::sync::Arc<dyn corral_dataplane::Driver>) {
        let _ = std::fs::remove_file(self.data_dir.join("agent.addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(corral_dataplane::run_with_driver(config, driver, async move {
            let _ = rx.await;
        }));
        self.dataplane = Some((handle, tx));
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(&mut self) -> Result<(), corral_dataplane::DataplaneError> {
        let (handle, tx) = self.dataplane.take().expect("dataplane running");
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("run returns")
            .expect("join")
    }

    /// Drops the dataplane mid-flight, as close to a SIGKILL as a task gets.
    pub async fn crash(&mut self) {
        let (handle, _tx) = self.dataplane.take().expect("dataplane running");
        handle.abort();
        let _ = handle.await;
    }

    pub fn script<T>(&self, f: impl FnOnce(&Script) -> T) -> T {
        f(&self.control.script.lock())
    }

    /// Polls `cond` every 10 ms for up to 10 s.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Script) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(&self.control.script.lock()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_until(&self, what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Registers the first time with an empty full sync, as a fresh server would.
    pub async fn bootstrap(&self) {
        self.wait_for("register", |s| !s.registers.is_empty()).await;
        self.control.push(full_sync(1, 0, &[]));
        self.wait_for("poll at epoch 1", |s| {
            s.last_poll().is_some_and(|p| p.epoch == 1)
        })
        .await;
    }

    pub fn procs(&self) -> Vec<Proc> {
        procs_of(&self.data_dir)
    }

    pub fn keeper(&self, id: &str) -> Option<i32> {
        self.procs()
            .into_iter()
            .find(|p| p.keeper && p.sandbox_id == id)
            .map(|p| p.pid)
    }

    pub fn starts(&self) -> Vec<String> {
        std::fs::read_to_string(self.data_dir.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub async fn agent(&self) -> AgentClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Some(a) = read_agent_addr(&self.data_dir) {
                break a;
            }
            assert!(Instant::now() < deadline, "agent.addr never appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        AgentClient::connect(format!("http://{addr}"))
            .await
            .expect("connect agent")
    }

    /// Starts the given sandboxes through a batch and waits until they run.
    pub async fn add_running(&self, first_seq: u64, ids: &[&str]) {
        let cmds = ids
            .iter()
            .enumerate()
            .map(|(i, id)| add(first_seq + i as u64, id))
            .collect();
        self.control.push(batch(cmds));
        for id in ids {
            self.wait_for("STARTED", |s| s.acked_kind(EventKind::Started, id))
                .await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((handle, _)) = self.dataplane.take() {
            handle.abort();
        }
        self.server.abort();
        kill_all(&self.data_dir);
    }
}

/// Whether a pid is gone (or a zombie nobody reaped yet).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub fn procs_of(data_dir: &Path) -> Vec<Proc> {
    let marker = format!("CORRAL_DATAPLANE_DIR={}", data_dir.display());
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&marker) {
            continue;
        }
        let id = vars
            .iter()
            .find_map(|v| v.strip_prefix("CORRAL_SANDBOX_ID="))
            .unwrap_or("")
            .to_string();
        let keeper = vars.iter().any(|v| v == "CORRAL_KEEPER=1");
        out.push(Proc {
            pid,
            sandbox_id: id,
            keeper,
        });
    }
    out
}

/// SIGKILLs every process carrying this data dir's marker.
pub fn kill_all(data_dir: &Path) {
    for p in procs_of(data_dir) {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(p.pid, libc::SIGKILL);
        }
    }
}
