//! A multi-host fleet on one machine: a server and several dataplanes, each
//! in a network namespace of its own, joined by a Linux bridge — so that a
//! host can be cut off (its veth taken down) while the others carry on.
//!
//! ```text
//!   test process (host side: 10.201.N.1 on the bridge)
//!        │
//!   crl-brN ──┬── crl-N-v0 ═ eth0 [crl-N-srv  10.201.N.2]  corral server
//!             ├── crl-N-v1 ═ eth0 [crl-N-dp1  10.201.N.3]  corral dataplane --host-id dp1
//!             ├── crl-N-v2 ═ eth0 [crl-N-dp2  10.201.N.4]  corral dataplane --host-id dp2
//!             └── …
//! ```
//!
//! `N` (1–250) is the rig's index: its subnet `10.201.N.0/24` and every name
//! it creates derive from it. Indexes are handed out under a lock in
//! `/run/corral-fleet/`, where `N` holds the owning process id; interface
//! names are limited to 15 bytes, which is why they carry the index rather
//! than the pid. Every rig is torn down when its guard drops, even on panic;
//! a rig whose owner died (SIGKILLed test) is swept by the next one created
//! (or by `scripts/fleet.sh sweep`). `scripts/fleet.sh` builds the same rig
//! by hand.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_client::Client;

use super::{eventually, kill_keepers_under, Proc, API_TOKEN, BIN, JOIN_TOKEN};

/// Where rigs register their owners (tmpfs: gone after a reboot, like the rigs).
pub const REGISTRY: &str = "/run/corral-fleet";
/// Every name a rig creates starts with this.
pub const PREFIX: &str = "crl-";
pub const API_PORT: u16 = 7700;
pub const GRPC_PORT: u16 = 7701;

/// Why a rig cannot be built here (the tests then skip, saying so).
pub fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the fleet rig needs root (network namespaces, a bridge)".into());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some("the fleet rig needs `ip` (iproute2)".into()),
    }
}

/// Runs `ip ARGS`, returning its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("building the fleet rig: {e}");
    }
}

fn ip_lines(args: &[&str]) -> Vec<String> {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The network of one rig: a bridge, a namespace and a veth per member.
/// Member 0 is the server, members 1.. the dataplanes.
pub struct Rig {
    pub index: u8,
    pub members: usize,
}

impl Rig {
    /// Builds a rig for a server and `dataplanes` dataplanes.
    pub fn create(dataplanes: usize) -> Rig {
        let registry = Registry::lock();
        registry.sweep();
        let index = registry.claim();
        let rig = Rig { index, members: dataplanes + 1 };
        // From here on the guard tears down whatever was made, should a step fail.
        let (br, host_ip) = (rig.bridge(), format!("{}/24", rig.gateway_ip()));
        ip_ok(&["link", "add", &br, "type", "bridge"]);
        ip_ok(&["addr", "add", &host_ip, "dev", &br]);
        ip_ok(&["link", "set", &br, "up"]);
        for m in 0..rig.members {
            let (ns, veth, addr) = (rig.netns(m), rig.veth(m), format!("{}/24", rig.ip(m)));
            ip_ok(&["netns", "add", &ns]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip_ok(&["link", "set", &veth, "master", &br, "up"]);
            ip_ok(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        rig
    }

    pub fn bridge(&self) -> String {
        format!("{PREFIX}br{}", self.index)
    }

    /// The namespace of member `m` (0 = server).
    pub fn netns(&self, m: usize) -> String {
        match m {
            0 => format!("{PREFIX}{}-srv", self.index),
            _ => format!("{PREFIX}{}-dp{m}", self.index),
        }
    }

    /// The host-side end of member `m`'s veth (on the bridge).
    pub fn veth(&self, m: usize) -> String {
        format!("{PREFIX}{}-v{m}", self.index)
    }

    /// The test's own address, on the bridge.
    pub fn gateway_ip(&self) -> String {
        format!("10.201.{}.1", self.index)
    }

    /// Member `m`'s address inside its namespace.
    pub fn ip(&self, m: usize) -> String {
        format!("10.201.{}.{}", self.index, m + 2)
    }

    /// Cuts member `m` off: its veth goes down on the bridge side.
    pub fn link_down(&self, m: usize) {
        ip_ok(&["link", "set", &self.veth(m), "down"]);
    }

    pub fn link_up(&self, m: usize) {
        ip_ok(&["link", "set", &self.veth(m), "up"]);
    }

    /// Kills member `m`'s TCP connections to the server (`ss -K`, as a
    /// middlebox dropping state would); returns how many there were.
    pub fn kill_connections(&self, m: usize) -> usize {
        let ns = self.netns(m);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "ss", "-K", "-tn", "dst", &self.ip(0)])
            .output()
            .expect("run ss -K");
        assert!(out.status.success(), "ss -K: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("ESTAB")).count()
    }

    /// A `corral` process inside member `m`'s namespace (entered with setns
    /// between fork and exec, so the pid is corral's own).
    pub fn spawn(&self, m: usize, args: &[String], log: &Path) -> Proc {
        let ns = File::open(format!("/run/netns/{}", self.netns(m))).expect("open the netns");
        let out = File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("RUST_LOG", "info").stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl and setns are single system calls, safe between fork
        // and exec. The death signal stops the process should the test itself
        // be SIGKILLed (sweeping the rig then kills what it started).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("spawn corral in its netns");
        Proc { child, log: log.to_path_buf() }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        teardown(self.index);
        let _ = std::fs::remove_file(Path::new(REGISTRY).join(self.index.to_string()));
    }
}

/// Deletes everything of rig `index` that exists: first every process still
/// in its namespaces (a leftover's server, dataplanes and sandboxes), then the
/// namespaces (they take their veth ends with them), the bridge last.
fn teardown(index: u8) {
    let mine = |name: &str| rig_index(name) == Some(index);
    for ns in ip_lines(&["netns", "list"]).iter().filter_map(|l| l.split_whitespace().next()) {
        if mine(ns) {
            for pid in ip_lines(&["netns", "pids", ns]).iter().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
    for link in links() {
        if mine(&link) && !link.starts_with(&format!("{PREFIX}br")) {
            let _ = ip(&["link", "del", &link]);
        }
    }
    let _ = ip(&["link", "del", &format!("{PREFIX}br{index}")]);
}

/// Names of the links in the test's namespace.
fn links() -> Vec<String> {
    ip_lines(&["-o", "link", "show"])
        .iter()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect()
}

/// The rig index a harness-made name belongs to: `crl-brN`, `crl-N-…`.
pub fn rig_index(name: &str) -> Option<u8> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.strip_prefix("br").unwrap_or(rest);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    let n: u8 = digits[..end].parse().ok()?;
    (1..=250).contains(&n).then_some(n)
}

/// Whether `pid` runs (a zombie — a SIGKILLed owner not yet reaped — does not).
fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// The owner registry, held under an exclusive lock while a rig is claimed.
struct Registry {
    _lock: nix::fcntl::Flock<File>,
}

impl Registry {
    fn lock() -> Registry {
        std::fs::create_dir_all(REGISTRY).expect("registry dir");
        let f = File::create(Path::new(REGISTRY).join(".lock")).expect("registry lock");
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).expect("flock");
        Registry { _lock: lock }
    }

    /// The owner of rig `n`: `Some(pid)`, `Some(0)` for a rig made by hand
    /// (kept until `fleet.sh down`), `None` when unclaimed.
    fn owner(n: u8) -> Option<i32> {
        let text = std::fs::read_to_string(Path::new(REGISTRY).join(n.to_string())).ok()?;
        Some(text.trim().parse().unwrap_or(0))
    }

    fn owner_alive(n: u8) -> bool {
        match Self::owner(n) {
            None => false,
            Some(0) => true,
            Some(pid) => process_alive(pid),
        }
    }

    /// Tears down rigs whose owner is gone, and harness-named leftovers that
    /// no owner claims.
    fn sweep(&self) {
        let mut seen: Vec<u8> = ip_lines(&["netns", "list"])
            .iter()
            .filter_map(|l| l.split_whitespace().next().and_then(rig_index))
            .chain(links().iter().filter_map(|l| rig_index(l)))
            .collect();
        seen.extend((1..=250).filter(|n| Self::owner(*n).is_some()));
        seen.sort_unstable();
        seen.dedup();
        for n in seen {
            if !Self::owner_alive(n) {
                eprintln!("fleet rig: sweeping leftovers of rig {n}");
                teardown(n);
                let _ = std::fs::remove_file(Path::new(REGISTRY).join(n.to_string()));
            }
        }
    }

    /// The lowest free index whose subnet nothing on this machine routes.
    fn claim(&self) -> u8 {
        let routes = ip_lines(&["-4", "route", "show"]).join("\n");
        let n = (1..=250u8)
            .find(|n| Self::owner(*n).is_none() && !routes.contains(&format!("10.201.{n}.")))
            .expect("a free fleet rig index");
        std::fs::write(Path::new(REGISTRY).join(n.to_string()), format!("{}\n", std::process::id()))
            .expect("register the rig");
        n
    }
}

/// `corral server check` on a stopped server's data dir: whether the store
/// keeps every invariant, and what the check printed.
pub fn check_store(server_dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["server", "check", "--data-dir"])
        .arg(server_dir)
        .output()
        .expect("run corral server check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A server and `n` process-driver dataplanes on a [`Rig`], with
/// authentication on. Every process (and every sandbox keeper) is killed and
/// the rig torn down on drop.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    /// Extra `corral server` flags (lease, grace, …), used by every (re)start.
    pub server_args: Vec<String>,
    pub server: Option<Proc>,
    /// Dataplane `i` is host `dp{i+1}`, rig member `i+1`.
    pub dataplanes: Vec<Option<Proc>>,
    pub client: Client,
    /// Dropped last: the network goes once nothing runs in it.
    pub rig: Rig,
}

impl Fleet {
    /// Builds the rig, starts everything and waits until every host is alive.
    pub async fn start(dataplanes: usize, server_args: &[&str]) -> Fleet {
        let rig = Rig::create(dataplanes);
        let dir = tempfile::Builder::new().prefix("corral-fleet-").tempdir_in("/var/tmp").expect("temp dir");
        let url = format!("http://{}:{API_PORT}", rig.ip(0));
        let client = Client::new(&url, Some(API_TOKEN.into())).expect("client");
        let mut f = Fleet {
            dir,
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
            server: None,
            dataplanes: (0..dataplanes).map(|_| None).collect(),
            client,
            rig,
        };
        f.start_server();
        for i in 0..dataplanes {
            f.start_dataplane(i);
        }
        f.wait_hosts_alive().await;
        f
    }

    pub fn host_id(&self, i: usize) -> String {
        format!("dp{}", i + 1)
    }

    /// The dataplane index of a host id.
    pub fn index_of(&self, host: &str) -> usize {
        (0..self.dataplanes.len()).find(|i| self.host_id(*i) == host).expect("a host of this fleet")
    }

    pub fn server_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    pub fn dataplane_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(self.host_id(i))
    }

    fn log(&self, what: &str) -> PathBuf {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        self.dir.path().join(format!("{what}-{n}.log"))
    }

    /// (Re)starts the server on the same data dir and address.
    pub fn start_server(&mut self) {
        let (api, grpc) = (format!("{}:{API_PORT}", self.rig.ip(0)), format!("{}:{GRPC_PORT}", self.rig.ip(0)));
        let mut args: Vec<String> = [
            "server", "--data-dir", &self.server_dir().display().to_string(), "--listen", &api, "--grpc-listen", &grpc,
            "--token", API_TOKEN, "--join-token", JOIN_TOKEN,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.server_args.clone());
        let log = self.log("server");
        self.server = Some(self.rig.spawn(0, &args, &log));
    }

    pub fn kill_server(&mut self) {
        if let Some(mut p) = self.server.take() {
            p.kill9();
        }
    }

    /// (Re)starts dataplane `i` on its data dir, in its namespace.
    pub fn start_dataplane(&mut self, i: usize) {
        let m = i + 1;
        let server = format!("http://{}:{GRPC_PORT}", self.rig.ip(0));
        let args: Vec<String> = [
            "dataplane", "--server", &server, "--join-token", JOIN_TOKEN, "--host-id", &self.host_id(i),
            "--data-dir", &self.dataplane_dir(i).display().to_string(), "--driver", "process",
            "--agent-listen", &format!("{}:0", self.rig.ip(m)),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.log(&self.host_id(i));
        self.dataplanes[i] = Some(self.rig.spawn(m, &args, &log));
    }

    pub fn kill_dataplane(&mut self, i: usize) {
        if let Some(mut p) = self.dataplanes[i].take() {
            p.kill9();
        }
    }

    /// Waits until the API answers and every dataplane's host is alive.
    pub async fn wait_hosts_alive(&self) {
        let want = self.dataplanes.len();
        eventually(Duration::from_secs(60), "every host of the fleet to be alive", || async {
            let hosts = self.client.hosts().await.ok()?;
            (hosts.hosts.iter().filter(|h| h.alive).count() == want).then_some(())
        })
        .await;
    }

    /// Host `id` as the server sees it.
    pub async fn host(&self, id: &str) -> Option<corral_core::api::HostView> {
        self.client.hosts().await.ok()?.hosts.into_iter().find(|h| h.host.id == id)
    }

    /// Sandbox ids in dataplane `i`'s start log, with repeats.
    pub fn starts_of(&self, i: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.dataplane_dir(i).join("starts.log")).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    /// Every start on every host, with repeats.
    pub fn all_starts(&self) -> Vec<String> {
        (0..self.dataplanes.len()).flat_map(|i| self.starts_of(i)).collect()
    }

    /// Every sandbox the server lists.
    pub async fn all_sandboxes(&self) -> Option<Vec<corral_core::Sandbox>> {
        let f = corral_client::ListFilter { limit: Some(1_000_000), ..Default::default() };
        self.client.list(&f).await.ok()
    }

    /// The outbox backlog summed over hosts, from `/metrics`.
    pub async fn backlog(&self) -> Option<f64> {
        let text = self.client.metrics().await.ok()?;
        corral_client::metric_sum(&text, "corral_outbox_backlog")
    }

    /// `corral server check` on the server's data dir (stop the server first):
    /// whether it passed, and what it printed.
    pub fn check_store(&self) -> (bool, String) {
        check_store(&self.server_dir())
    }

    /// Every log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.server.iter().chain(self.dataplanes.iter().flatten()) {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last lines)\n", p.log.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..self.dataplanes.len() {
            self.kill_dataplane(i);
        }
        self.kill_server();
        kill_keepers_under(self.dir.path());
    }
}
