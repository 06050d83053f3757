//! Shared fixture: a runtime on a private state dir, cgroup parent and uid
//! range, the base template, and a Drop guard that removes every process,
//! cgroup and dir the test created, even when the test panics.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::{
    base_template, ExecOutput, ExecSpec, Runtime, RuntimeConfig, SandboxConfig, Template,
};

pub struct Fixture {
    pub rt: Runtime,
    /// This test process's id block (0..256), unique among running tests:
    /// also picks its private `nat` range and names.
    pub block: u32,
    pub cfg: RuntimeConfig,
    pub template: Template,
    pub dir: tempfile::TempDir,
    /// Held for the life of the test process: no other test uses its ids.
    _id_lock: std::fs::File,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        corral_runtime::force_cleanup(&self.cfg);
    }
}

/// Why this host cannot run the suite, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for ns in ["user", "pid", "mnt", "net", "uts", "ipc", "cgroup"] {
        if !std::path::Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            return Some(format!("kernel lacks {ns} namespaces"));
        }
    }
    if !std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("overlay")
    {
        return Some("kernel lacks overlayfs".into());
    }
    None
}

/// Takes one of 256 id blocks with an exclusive flock, so concurrently
/// running test processes never share a uid range.
fn claim_id_block() -> (u32, std::fs::File) {
    use std::os::fd::AsRawFd;
    let dir = std::path::Path::new("/var/tmp/corral-test-idblocks");
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..256u32 {
        let f = std::fs::File::create(dir.join(k.to_string())).unwrap();
        // SAFETY: flock on a file we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (k, f);
        }
    }
    panic!("all 256 test id blocks are in use");
}

/// Returns the fixture, or None (after printing why) when the host cannot run it.
pub async fn fixture(name: &str) -> Option<Fixture> {
    fixture_with(name, |_, _| {}).await
}

/// A fixture with the `nat` mode on, over this test's own range
/// `10.223.<block>.0/<prefix>`, veth prefix `crt<block>-` and nft table
/// `corral_test_<block>`; forwarding left alone unless asked for.
pub async fn nat_fixture(name: &str, prefix: u8, forwarding: bool) -> Option<Fixture> {
    if which("nft").is_none() {
        eprintln!("SKIP {name}: nft is not installed");
        return None;
    }
    fixture_with(name, |cfg, block| {
        let mut nat =
            corral_runtime::NatConfig::new(format!("10.223.{block}.0/{prefix}").parse().unwrap());
        nat.veth_prefix = format!("crt{block}-");
        nat.nft_table = format!("corral_test_{block}");
        nat.enable_forwarding = forwarding;
        cfg.nat = Some(nat);
    })
    .await
}

/// The path of a program on the usual sbin/bin dirs.
pub fn which(prog: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(prog))
        .find(|p| p.exists())
}

/// Names of the host's links starting with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Waits (up to 20 s) until no host link starts with `prefix`: links of
/// ended sandboxes go with their network namespace, which the kernel tears
/// down in the background.
pub fn wait_no_links(prefix: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !links_with_prefix(prefix).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "links left: {:?}",
            links_with_prefix(prefix)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a host command and returns its stdout; panics with stderr on failure.
pub fn host(cmd: &[&str]) -> String {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Like [`fixture`], after `adjust` changed the runtime config (given the block).
pub async fn fixture_with(
    name: &str,
    adjust: impl FnOnce(&mut RuntimeConfig, u32),
) -> Option<Fixture> {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP {name}: {why}");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("corral-rt-{name}-"))
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pid = std::process::id();
    let mut cfg = RuntimeConfig::new(dir.path().join("state"));
    cfg.cgroup_parent = format!("corral-test-{name}-{pid}");
    // A private id range per test process (64 slots), above the default
    // range (100000 + 16384 slots) other crates' tests use and below the
    // benchmark's (3e9).
    let (block, id_lock) = claim_id_block();
    cfg.id_base = 1_200_000_000 + block * 64 * 65_536;
    cfg.id_slots = 64;
    cfg.spawner_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_corral-runtime-helper")));
    adjust(&mut cfg, block);
    let template = base_template(&dir.path().join("templates")).unwrap();
    let rt = match Runtime::new(cfg.clone()).await {
        Ok(rt) => rt,
        Err(e) => {
            corral_runtime::force_cleanup(&cfg);
            panic!("runtime: {e}");
        }
    };
    Some(Fixture {
        rt,
        block,
        cfg,
        template,
        dir,
        _id_lock: id_lock,
    })
}

impl Fixture {
    /// A sandbox config of the base template with small limits.
    pub fn config(&self, id: &str) -> SandboxConfig {
        let mut c = self.template.sandbox_config(id);
        c.memory_mb = 256;
        c.pids_max = 128;
        c.disk_mb = 64;
        c
    }

    pub async fn create(&self, id: &str) -> String {
        self.rt.create(self.config(id)).await.unwrap();
        id.to_string()
    }

    /// Runs `sh -c script` with a 20 s timeout.
    pub async fn sh(&self, id: &str, script: &str) -> ExecOutput {
        self.run(id, &["/bin/sh", "-c", script]).await
    }

    pub async fn run(&self, id: &str, argv: &[&str]) -> ExecOutput {
        let mut spec = ExecSpec::new(argv.iter().copied());
        spec.timeout = Some(Duration::from_secs(20));
        self.rt.exec_buffered(id, spec).await.unwrap()
    }

    /// Runs a python script (given on stdin) as the sandbox root.
    pub async fn py(&self, id: &str, script: &str) -> ExecOutput {
        let mut spec = ExecSpec::new(["/usr/bin/python3", "-S", "-"]);
        spec.stdin = script.as_bytes().to_vec();
        spec.timeout = Some(Duration::from_secs(20));
        self.rt.exec_buffered(id, spec).await.unwrap()
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
