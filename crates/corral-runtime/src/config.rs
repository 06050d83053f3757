//! Public configuration and result types of the runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::{NatConfig, NetworkMode};

/// How the runtime itself is set up (one per host / dataplane).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where each sandbox keeps `<id>/init.sock`, `<id>/meta.json` and the
    /// mount point of its private layer. Created mode 0711 (traversable, not
    /// listable); sockets inside are 0600 root, so only root reaches them.
    pub state_dir: PathBuf,
    /// Name of the parent cgroup ("corral" in production, a unique name in
    /// tests): under the runtime process's own cgroup in each v1 hierarchy,
    /// at the root of the v2 hierarchy.
    pub cgroup_parent: String,
    /// First host uid/gid of the sandbox id ranges: sandbox slot `n` maps its
    /// ids 0..65536 to `id_base + n*65536 ..`.
    pub id_base: u32,
    /// How many slots (concurrent sandboxes) the id range holds.
    pub id_slots: u32,
    /// The executable re-executed as the spawner. `None` = `/proc/self/exe`,
    /// which then must call [`crate::maybe_run_spawner`] first thing in `main`.
    pub spawner_exe: Option<PathBuf>,
    /// How long `create` waits for the init to answer before giving up.
    pub start_timeout: Duration,
    /// Creates allowed to run their CPU-heavy part at once; later ones wait
    /// in arrival order (with everything started at once, processor sharing
    /// would make every start of a burst finish near the end). 0 = no limit.
    pub max_parallel_starts: usize,
    /// The `nat` network mode: `None` (the default) refuses `nat` sandboxes
    /// and touches no host networking at all.
    pub nat: Option<NatConfig>,
}

impl RuntimeConfig {
    /// Production defaults under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            state_dir: state_dir.into(),
            cgroup_parent: "corral".to_string(),
            id_base: 100_000,
            id_slots: 16_384,
            spawner_exe: None,
            start_timeout: Duration::from_secs(20),
            max_parallel_starts: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            nat: None,
        }
    }
}

/// A host path bind-mounted into the sandbox (used by templates that borrow
/// the host's `/usr`, for instance). Always `nosuid,nodev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox; must exist in the rootfs layers.
    pub target: String,
    pub readonly: bool,
}

/// One sandbox to create.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// `[A-Za-z0-9_.-]{1,63}`; also the sandbox's hostname.
    pub id: String,
    /// Overlay lower dirs, top first. Must be world-traversable (the sandbox
    /// root is an unprivileged host uid that mounts them).
    pub rootfs: Vec<PathBuf>,
    /// Extra read-only host binds (see [`crate::Template`]).
    pub binds: Vec<BindMount>,
    /// CPU quota in thousandths of a core (1000 = one core). 0 = unlimited.
    pub cpu_millis: u32,
    /// Hard memory limit in MiB (swap included where the host can). 0 = unlimited.
    pub memory_mb: u32,
    /// Maximum number of tasks. 0 = unlimited.
    pub pids_max: u32,
    /// Size of the writable layer (a tmpfs) in MiB; also the size of `/tmp`.
    pub disk_mb: u32,
    /// Environment every exec starts with (under the exec's own env).
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox, created if missing.
    pub workdir: String,
    /// Landlock (best effort): when set, exec'd commands may modify files
    /// only beneath these paths (plus `/dev`). `None` = no Landlock layer.
    pub landlock_writable: Option<Vec<String>>,
    /// Loopback only (default) or a NAT'd `eth0` (needs [`RuntimeConfig::nat`]).
    pub network: NetworkMode,
    /// Whether creating it may compete with running sandboxes for CPU.
    pub priority: Priority,
}

/// How a sandbox's creation shares the CPU with the sandboxes already running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    /// Created as soon as possible: a user is waiting for it.
    #[default]
    Normal,
    /// Created from CPU that running sandboxes leave idle (warm-pool
    /// members): its spawner runs niced and its cgroup has the lowest CPU
    /// weight, until [`crate::Runtime::update_limits`] binds it to a user.
    Background,
}

impl SandboxConfig {
    /// A config with sensible limits over the given layers.
    pub fn new(id: impl Into<String>, rootfs: Vec<PathBuf>) -> Self {
        SandboxConfig {
            id: id.into(),
            rootfs,
            binds: Vec::new(),
            cpu_millis: 1000,
            memory_mb: 512,
            pids_max: 512,
            disk_mb: 256,
            env: BTreeMap::new(),
            workdir: "/root".to_string(),
            landlock_writable: None,
            network: NetworkMode::Isolated,
            priority: Priority::Normal,
        }
    }
}

/// What `create` returns.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub id: String,
    /// Host pid of the sandbox's init (its PID 1).
    pub pid: i32,
    /// First host uid/gid the sandbox's ids map to.
    pub host_id_base: u32,
    /// The init's socket (0600, host side only).
    pub socket: PathBuf,
    /// Time from the call until the init answered.
    pub startup: Duration,
}

/// One command to run inside a sandbox.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Layered over the sandbox env.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox ("" = the sandbox workdir).
    pub cwd: String,
    /// Bytes fed to stdin, then EOF.
    pub stdin: Vec<u8>,
    /// Kill the command's process group after this long. `None` = no limit.
    pub timeout: Option<Duration>,
    /// Run as this uid/gid inside the sandbox (default 0, the sandbox root).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl ExecSpec {
    /// A spec running `argv` with no stdin and no timeout.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        ExecSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// The exit code, or 128+N when killed by signal N.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// The timeout fired and the process group was killed.
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// A finished exec with its whole output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub duration: Duration,
    /// Output past [`crate::MAX_BUFFERED_OUTPUT`] bytes per stream was dropped
    /// (the command still ran to its end). Use the streaming API for more.
    pub truncated: bool,
}

/// How a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    /// The init's exit code, when it exited and this runtime saw it.
    pub code: Option<i32>,
    /// The signal that killed the init, when this runtime saw it.
    pub signal: Option<i32>,
    /// The memory cgroup recorded at least one OOM kill during the sandbox's life.
    pub oom_killed: bool,
}

/// Limits as read back from the cgroup files (`None` = unlimited/absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppliedLimits {
    pub memory_bytes: Option<u64>,
    pub memory_swap_bytes: Option<u64>,
    pub pids_max: Option<u64>,
    /// (quota_us, period_us)
    pub cpu_quota: Option<(u64, u64)>,
    /// v1 `cpu.shares` or v2 `cpu.weight`, as written (`None`: no cpu controller).
    pub cpu_weight: Option<u64>,
}

/// Live counters of a sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SandboxStats {
    pub memory_bytes: u64,
    pub pids: u64,
    pub oom_kills: u64,
    /// Times the pids limit refused a fork.
    pub pids_limit_hits: u64,
}
