//! A harness that runs the real `corral` binary: `up`, or a separate server
//! and dataplane that tests can SIGKILL and restart on the same data dirs.
//!
//! Every process a test starts — and every sandbox keeper the process driver
//! leaves behind — is killed when its guard drops, even if the test panics.

#![allow(dead_code)]

pub mod fleet;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// The API token and join token of split clusters (`corral server` requires them).
pub const API_TOKEN: &str = "test-api-token";
pub const JOIN_TOKEN: &str = "test-join-token";

/// A free loopback port (bound and released; the test then owns it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// One `corral` child process, SIGKILLed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn corral");
        Proc { child, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (up to 10 s) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills every sandbox keeper whose dataplane data dir is under `root`.
pub fn kill_keepers_under(root: &Path) {
    let Ok(root) = root.canonicalize() else { return };
    let needle = format!("CORRAL_DATAPLANE_DIR={}", root.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(e.path().join("environ")) else { continue };
        let marked = environ.split(|b| *b == 0).any(|kv| String::from_utf8_lossy(kv).starts_with(&needle));
        if marked {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which sandbox driver a test cluster's dataplane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The default: real isolation (needs root).
    Native,
    /// No isolation; fast, for control-plane tests.
    Process,
    /// Simulated hosts: nothing starts, exec answers canned output (API fuzzing).
    Sim,
}

impl Driver {
    /// Native when this test runs as root, else process (saying so).
    pub fn default_for_tests() -> Driver {
        if nix::unistd::geteuid().is_root() {
            Driver::Native
        } else {
            eprintln!("not root: using the process driver instead of native isolation");
            Driver::Process
        }
    }
}

/// A whole Corral on loopback in a temp dir: `corral up`, or a server and a
/// dataplane as separate processes. Cleans up everything on drop — processes,
/// and the native runtime's sandboxes, cgroups and state.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub driver: Driver,
    /// More flags for `corral up`.
    pub extra_up_args: Vec<String>,
    /// More flags for `corral dataplane` (split clusters).
    pub extra_dataplane_args: Vec<String>,
    pub api_port: u16,
    pub grpc_port: u16,
    pub server: Option<Proc>,
    pub dataplane: Option<Proc>,
    pub client: Client,
    /// `https` for a cluster serving TLS, else `http`.
    pub scheme: &'static str,
    /// More flags for `corral server` (split clusters).
    pub extra_server_args: Vec<String>,
}

impl Cluster {
    fn new(driver: Driver) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        // Under /var/tmp and searchable: sandbox users open template layers
        // through the runtime dir inside it.
        let dir = tempfile::Builder::new().prefix("corral-e2e-").tempdir_in("/var/tmp").expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let api_port = free_port();
        let grpc_port = free_port();
        let client = Client::new(&format!("http://127.0.0.1:{api_port}"), None).expect("client");
        Cluster {
            dir,
            driver,
            extra_up_args: Vec::new(),
            api_port,
            grpc_port,
            server: None,
            dataplane: None,
            client,
            scheme: "http",
            extra_server_args: Vec::new(),
            extra_dataplane_args: Vec::new(),
        }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// A cgroup parent of this cluster's own, so parallel tests never share one.
    pub fn cgroup_parent(&self) -> String {
        format!("corral-test-{}", self.api_port)
    }

    /// The dataplane flags that select this cluster's driver.
    fn driver_args(&self) -> Vec<String> {
        match self.driver {
            Driver::Process => vec!["--driver".into(), "process".into()],
            Driver::Sim => vec!["--driver".into(), "sim".into()],
            Driver::Native => vec![
                "--driver".into(),
                "native".into(),
                "--runtime-dir".into(),
                self.runtime_dir().display().to_string(),
                "--cgroup-parent".into(),
                self.cgroup_parent(),
                "--templates-dir".into(),
                self.templates_dir().display().to_string(),
            ],
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.api_port)
    }

    pub fn server_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    pub fn dataplane_dir(&self) -> PathBuf {
        self.dir.path().join("dataplane")
    }

    /// `corral up` with everything in one process, on the default driver.
    pub async fn up() -> Cluster {
        Cluster::up_with(Driver::default_for_tests()).await
    }

    pub async fn up_with(driver: Driver) -> Cluster {
        let mut c = Cluster::new(driver);
        c.start_up().await;
        c
    }

    /// A cluster that is not started yet (to prepare templates first).
    pub fn prepare(driver: Driver) -> Cluster {
        Cluster::new(driver)
    }

    pub async fn start_up(&mut self) {
        self.spawn_up();
        self.wait_ready().await;
    }

    /// Where this cluster's native dataplane finds templates.
    pub fn templates_dir(&self) -> PathBuf {
        self.dir.path().join("templates")
    }

    /// Starts `corral up` again on the same dirs and ports (after a kill).
    pub async fn restart_up(c: &mut Cluster) -> bool {
        c.spawn_up();
        c.wait_ready().await;
        true
    }

    /// Starts `corral up` without waiting for it.
    pub fn spawn_up_only(&mut self) {
        self.spawn_up();
    }

    fn spawn_up(&mut self) {
        let c = self;
        let dir = c.server_dir();
        let (api, grpc) = (format!("127.0.0.1:{}", c.api_port), format!("127.0.0.1:{}", c.grpc_port));
        let mut args: Vec<String> = ["up", "--data-dir", dir.to_str().unwrap(), "--listen", &api, "--grpc-listen", &grpc]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--host-id".to_string(), "local".to_string()]);
        args.extend(c.driver_args());
        args.extend(c.extra_up_args.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let n = std::fs::read_dir(c.dir.path()).map(|d| d.count()).unwrap_or(0);
        c.server = Some(Proc::spawn(&args, &c.dir.path().join(format!("up-{n}.log"))));
    }

    /// A server and a process-driver dataplane, separately killable, with
    /// authentication on (as `corral server` requires).
    pub async fn split() -> Cluster {
        let mut c = Cluster::prepare_split();
        c.start_server();
        c.start_dataplane();
        c.wait_ready().await;
        c
    }

    /// A split cluster not started yet (to add flags first).
    pub fn prepare_split() -> Cluster {
        let mut c = Cluster::new(Driver::Process);
        c.client = Client::new(&c.url(), Some(API_TOKEN.into())).expect("client");
        c
    }

    pub fn start_server(&mut self) {
        let dir = self.server_dir();
        let (api, grpc) = (format!("127.0.0.1:{}", self.api_port), format!("127.0.0.1:{}", self.grpc_port));
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log = self.dir.path().join(format!("server-{n}.log"));
        let args = [
            "server", "--data-dir", dir.to_str().unwrap(), "--listen", &api, "--grpc-listen", &grpc,
            "--token", API_TOKEN, "--join-token", JOIN_TOKEN,
        ];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(self.extra_server_args.iter().map(String::as_str));
        self.server = Some(Proc::spawn(&args, &log));
    }

    pub fn start_dataplane(&mut self) {
        self.dataplane = Some(self.start_dataplane_as("h1", JOIN_TOKEN));
    }

    /// Another dataplane with its own host id and join token ("h1" is the
    /// cluster's own, in `dataplane_dir()`).
    pub fn start_dataplane_as(&self, host: &str, join_token: &str) -> Proc {
        let dir = if host == "h1" { self.dataplane_dir() } else { self.dir.path().join(format!("dataplane-{host}")) };
        let server = format!("{}://127.0.0.1:{}", self.scheme, self.grpc_port);
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log = self.dir.path().join(format!("dataplane-{n}.log"));
        let mut args: Vec<String> =
            ["dataplane", "--server", &server, "--data-dir", dir.to_str().unwrap(), "--host-id", host, "--join-token", join_token]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(self.driver_args());
        args.extend(self.extra_dataplane_args.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(&args, &log)
    }

    /// Waits until the API answers and a host has registered.
    pub async fn wait_ready(&self) {
        let client = self.client.clone();
        eventually(Duration::from_secs(30), "the server to be ready with a host", || {
            let client = client.clone();
            async move {
                let hosts = client.hosts().await.ok()?;
                hosts.hosts.iter().any(|h| h.alive).then_some(())
            }
        })
        .await;
    }

    /// Sandbox ids in the dataplane's start log, in order, with repeats.
    pub fn starts(&self) -> Vec<String> {
        let mut all = Vec::new();
        for dir in [self.dataplane_dir(), self.server_dir().join("dataplane")] {
            let text = std::fs::read_to_string(dir.join("starts.log")).unwrap_or_default();
            all.extend(text.lines().map(str::to_string));
        }
        all
    }

    /// The outbox backlog summed over hosts, from `/metrics`.
    pub async fn backlog(&self) -> Option<f64> {
        let text = self.client.metrics().await.ok()?;
        corral_client::metric_sum(&text, "corral_outbox_backlog")
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in [&self.server, &self.dataplane].into_iter().flatten() {
            out.push_str(&format!("--- {}\n{}\n", p.log.display(), p.log_text()));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut p) = self.dataplane.take() {
            p.kill9();
        }
        if let Some(mut p) = self.server.take() {
            p.kill9();
        }
        kill_keepers_under(self.dir.path());
        if self.driver == Driver::Native {
            let mut rc = corral_runtime::RuntimeConfig::new(self.runtime_dir().join("state"));
            rc.cgroup_parent = self.cgroup_parent();
            corral_runtime::force_cleanup(&rc);
        }
    }
}

impl Cluster {
    /// How many sandboxes the server lists in `state`.
    pub async fn count_in(&self, state: &str) -> Option<usize> {
        let f = corral_client::ListFilter { state: Some(state.into()), limit: Some(100_000), ..Default::default() };
        self.client.list(&f).await.ok().map(|l| l.len())
    }
}
