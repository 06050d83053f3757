//! The command line (contract: DESIGN.md, "CLI contract").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "corral", version, about = "Isolated sandboxes for AI agents, thousands at a time")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "CORRAL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More detailed logs.
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server, a local dataplane and the embedded store in one process.
    Up(UpArgs),
    /// Run the server alone (REST API, dataplane gRPC, store); `server check`
    /// verifies a stopped server's store.
    Server(ServerCommandArgs),
    /// Run the dataplane of one host, connected to a server.
    Dataplane(DataplaneArgs),
    /// Create, inspect, use and remove sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Warm pools: ready sandboxes per template on every host.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// The hosts the server knows.
    #[command(subcommand)]
    Host(ListOnly),
    /// The templates the fleet offers.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Burst benchmarks against Corral or local baselines (bwrap, podman).
    #[command(subcommand)]
    Bench(crate::cmd::bench::BenchCommand),
}

/// How clients find and authenticate to the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's REST URL.
    #[arg(long, global = true, env = "CORRAL_URL", default_value = corral_client::DEFAULT_URL)]
    pub url: String,
    /// API token (sent as a bearer token).
    #[arg(long, global = true, env = "CORRAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust this PEM CA certificate (only it) for an https:// URL.
    #[arg(long, global = true, env = "CORRAL_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `corral server [FLAGS]` runs a server; `corral server check` inspects one's store.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerCommandArgs {
    #[command(subcommand)]
    pub command: Option<ServerSubcommand>,
    #[command(flatten)]
    pub run: ServerArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ServerSubcommand {
    /// Check the store of a server that is not running against the
    /// invariants every crash must preserve; exits 1 when one is broken.
    Check(ServerCheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServerCheckArgs {
    /// The server's data dir.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "corral-data")]
    pub data_dir: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Where the store lives.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "corral-data")]
    pub data_dir: PathBuf,
    /// REST API address.
    #[arg(long, env = "CORRAL_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Dataplane gRPC address.
    #[arg(long, env = "CORRAL_GRPC_LISTEN", default_value = "127.0.0.1:7701")]
    pub grpc_listen: SocketAddr,
    /// Schedulable CPU = host CPU × this (limits are ceilings, idle sandboxes use none).
    #[arg(long, env = "CORRAL_CPU_OVERCOMMIT", default_value_t = 1000.0)]
    pub cpu_overcommit: f64,
    /// Schedulable memory = host memory × this.
    #[arg(long, env = "CORRAL_MEMORY_OVERCOMMIT", default_value_t = 64.0)]
    pub memory_overcommit: f64,
    /// A host without a heartbeat for this long gets no new work.
    #[arg(long, env = "CORRAL_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: u64,
    /// After its lease, how long until a silent host's sandboxes end `host_lost`.
    #[arg(long, env = "CORRAL_HOST_LOST_GRACE_MS", default_value_t = 60_000)]
    pub host_lost_grace_ms: u64,
    /// How long a create waits for capacity before ending `no_capacity`.
    #[arg(long, env = "CORRAL_PENDING_TIMEOUT_MS", default_value_t = 60_000)]
    pub pending_timeout_ms: u64,
    /// Creates allowed to wait for capacity; past it creates get 503 with Retry-After.
    #[arg(long, env = "CORRAL_MAX_PENDING", default_value_t = 100_000)]
    pub max_pending: usize,
    /// An API bearer token clients must present (repeatable; the env var takes
    /// a comma-separated list).
    #[arg(long = "token", env = "CORRAL_API_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub tokens: Vec<String>,
    /// The shared secret dataplanes must present to join.
    #[arg(long, env = "CORRAL_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// API requests per second allowed per token (bursts up to the same
    /// number); over it, 429 with Retry-After. Off by default.
    #[arg(long, env = "CORRAL_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Live (not yet ended) sandboxes one API token may hold; a create past
    /// it gets 429 with Retry-After. Off by default.
    #[arg(long, env = "CORRAL_MAX_LIVE_PER_TOKEN", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_live_per_token: Option<u64>,
    /// Serve REST and gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "CORRAL_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CORRAL_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// `corral server`: run without any authentication (only behind something that provides it).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// This host's id (default: the hostname).
    #[arg(long, env = "CORRAL_HOST_ID")]
    pub host_id: Option<String>,
    /// Where the dataplane's Agent service (exec, files) listens.
    #[arg(long, env = "CORRAL_AGENT_LISTEN", default_value = "127.0.0.1:0")]
    pub agent_listen: SocketAddr,
    /// How many sandbox starts run at once (default: the number of cores).
    #[arg(long, env = "CORRAL_START_CONCURRENCY")]
    pub start_concurrency: Option<usize>,
    /// Stop every sandbox when the dataplane shuts down (default: leave them
    /// running; the next dataplane adopts them).
    #[arg(long, env = "CORRAL_STOP_SANDBOXES_ON_EXIT")]
    pub stop_sandboxes_on_exit: bool,
    /// How sandboxes run: `native` (namespaces, cgroups, seccomp; needs root)
    /// or `process` (a directory and a process group: NO isolation, for development).
    #[arg(long, env = "CORRAL_DRIVER", value_enum, default_value_t = DriverKind::Native)]
    pub driver: DriverKind,
    /// Native driver: runtime state and the `base` template cache. Sandbox
    /// users must be able to traverse it, so it is not under a home directory.
    #[arg(long, env = "CORRAL_RUNTIME_DIR", default_value = "/var/lib/corral")]
    pub runtime_dir: PathBuf,
    /// Native driver: built and imported templates (default RUNTIME_DIR/templates,
    /// where `corral template build` and `import` put them by default).
    #[arg(long, env = "CORRAL_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Native driver: the parent cgroup of all sandbox cgroups.
    #[arg(long, env = "CORRAL_CGROUP_PARENT", default_value = "corral")]
    pub cgroup_parent: String,
    /// Native driver: size of each sandbox's writable layer, in MiB.
    #[arg(long, env = "CORRAL_DISK_MB", default_value_t = 1024)]
    pub disk_mb: u32,
    /// Native driver: most processes one sandbox may run.
    #[arg(long, env = "CORRAL_PIDS_MAX", default_value_t = 1024)]
    pub pids_max: u32,
    /// Warm pool preset TEMPLATE=MIN[:MAX[:BUFFER]] (repeatable); a pool
    /// setting from the server for the same template replaces it.
    #[arg(long = "pool", env = "CORRAL_POOLS", value_delimiter = ',', value_parser = parse_pool)]
    pub pools: Vec<corral_dataplane::PoolConf>,
    /// How long a start waits for a pool sandbox that is already warming
    /// before it starts cold (0: never waits).
    #[arg(long, env = "CORRAL_POOL_WAIT_MS", default_value_t = 50)]
    pub pool_wait_ms: u64,
    /// Most sandboxes this host holds (running plus unclaimed pool ones); a
    /// start past it evicts ready pool sandboxes first, then fails.
    #[arg(long, env = "CORRAL_MAX_SANDBOXES", default_value_t = 10_000)]
    pub max_sandboxes: usize,
    /// Templates this host offers, for the process and sim drivers (which
    /// run any template the same way; default `base`). Native hosts offer
    /// what their templates dir holds.
    #[arg(long, env = "CORRAL_TEMPLATES", value_delimiter = ',')]
    pub templates: Vec<String>,
    /// Testing only: wait this long after applying commands before acking
    /// them (a slow host, for fault tests of the outbox backlog).
    #[arg(long, env = "CORRAL_DEBUG_ACK_DELAY_MS", default_value_t = 0, hide = true)]
    pub debug_ack_delay_ms: u64,
    #[command(flatten)]
    pub nat: crate::cmd::nat_args::NatArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    Native,
    Process,
    /// Hollow hosts that start no process (control-plane scale tests; see
    /// `corral dataplane --hosts`).
    Sim,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Require API tokens even on loopback (always on for other addresses);
    /// without --token one is generated, printed and saved in DATA_DIR/api-token.
    #[arg(long)]
    pub auth: bool,
    /// With --tls-cert: the PEM CA the local dataplane trusts (default: the
    /// certificate file itself, which then must hold its CA or be self-signed).
    #[arg(long, env = "CORRAL_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DataplaneArgs {
    /// The server's dataplane gRPC URL.
    #[arg(long, env = "CORRAL_SERVER", default_value = "http://127.0.0.1:7701")]
    pub server: String,
    /// Where the dataplane keeps its cursor and sandboxes.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "corral-data/dataplane")]
    pub data_dir: PathBuf,
    /// The shared secret the server expects from its dataplanes.
    #[arg(long, env = "CORRAL_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Trust this PEM CA certificate (only it) for an https:// server URL.
    #[arg(long, env = "CORRAL_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
    /// `--driver sim`: how many simulated hosts this process runs (ids
    /// `sim-0`…, data dirs `DATA_DIR/sim-N`; one host given a --host-id
    /// keeps that id and DATA_DIR).
    #[arg(long, default_value_t = 1)]
    pub hosts: usize,
    /// `--driver sim`: how long a simulated start takes, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub sim_start_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox and print its id.
    Create(CreateArgs),
    /// Run a command in a sandbox; exits with the command's exit code.
    Exec(ExecArgs),
    /// List sandboxes, newest first.
    Ls(LsArgs),
    /// Show one sandbox.
    Get(IdArgs),
    /// Stop and remove sandboxes.
    Rm(RmArgs),
    /// Copy a local file into a sandbox.
    Put(PutArgs),
    /// Print a file from a sandbox (or save it with --output).
    Cat(CatArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, default_value = "base")]
    pub template: String,
    /// CPU in thousandths of a core.
    #[arg(long = "cpu", value_name = "MILLIS")]
    pub cpu_millis: Option<i64>,
    /// Memory limit in MiB.
    #[arg(long = "memory", value_name = "MB")]
    pub memory_mb: Option<i64>,
    /// Seconds until the sandbox is ended.
    #[arg(long = "ttl", value_name = "SECONDS")]
    pub ttl_s: Option<i64>,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Retrying with the same key returns the same sandbox.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// `isolated` (default: loopback only) or `nat` (an eth0 behind its
    /// host's NAT; needs a host started with --nat).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Wait until the sandbox runs (or fails).
    #[arg(long)]
    pub wait: bool,
    /// Create this many at once (one batch call); prints one id per line.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Kill the command after this many milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Feed this process's standard input to the command.
    #[arg(long, short = 'i')]
    pub stdin: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this state (pending, running, terminated, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// Only sandboxes with this label, KEY=VALUE.
    #[arg(long)]
    pub label: Option<String>,
    /// Only sandboxes on this host.
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Wait until each sandbox has ended.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
    /// Local file to send (`-` for standard input).
    pub local: PathBuf,
    /// Destination path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub id: String,
    /// Path inside the sandbox.
    pub path: String,
    /// Write to this local file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ListOnly {
    /// List them.
    Ls(ClientOnly),
}

#[derive(Debug, Args)]
pub struct ClientOnly {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List templates: what the fleet's hosts offer (REST), or with --local
    /// those stored on this machine (name, kind, status, size, age).
    Ls(TemplateLsArgs),
    /// Build a template on this machine: a Debian rootfs with debootstrap
    /// (needs root and the debootstrap package; cached per suite+packages+mirror).
    Build(TemplateBuildArgs),
    /// Import an OCI image layout or a `docker save` archive (directory or tar).
    Import(TemplateImportArgs),
    /// Remove templates from this machine.
    Rm(TemplateRmArgs),
}

#[derive(Debug, Args)]
pub struct TemplateLsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// List this machine's template store instead of asking the server.
    #[arg(long)]
    pub local: bool,
    /// Where this machine's templates are stored (with --local).
    #[arg(long, env = "CORRAL_TEMPLATES_DIR", default_value = corral_template::DEFAULT_TEMPLATES_DIR)]
    pub templates_dir: PathBuf,
}

/// Options of the commands that change this machine's template store.
#[derive(Debug, Clone, Args)]
pub struct TemplateStoreArgs {
    /// Where this machine's templates are stored.
    #[arg(long, env = "CORRAL_TEMPLATES_DIR", default_value = corral_template::DEFAULT_TEMPLATES_DIR)]
    pub templates_dir: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TemplateBuildArgs {
    /// Template name: letters, digits, `_-.`, starting with a letter or digit.
    pub name: String,
    /// Build a Debian rootfs with debootstrap (--variant=minbase).
    #[arg(long)]
    pub debootstrap: bool,
    /// Debian suite.
    #[arg(long, default_value = corral_template::DEFAULT_SUITE)]
    pub suite: String,
    /// Extra Debian packages, comma-separated (e.g. python3,nodejs).
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Debian mirror URL (default: the one this machine's apt sources use for the suite).
    #[arg(long)]
    pub mirror: Option<String>,
    #[command(flatten)]
    pub dir: TemplateStoreArgs,
}

#[derive(Debug, Args)]
pub struct TemplateImportArgs {
    /// Template name: letters, digits, `_-.`, starting with a letter or digit.
    pub name: String,
    /// OCI image layout or `docker save` output: a directory or a tar (.tar, .tar.gz).
    #[arg(long, value_name = "PATH")]
    pub oci: PathBuf,
    #[command(flatten)]
    pub dir: TemplateStoreArgs,
}

#[derive(Debug, Args)]
pub struct TemplateRmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub dir: TemplateStoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Set a template's pool bounds on every host that offers it.
    Set(PoolSetArgs),
    /// Each template's pool across the fleet: size, ready, allocated, utilization, target, forecast.
    Ls(ClientOnly),
}

#[derive(Debug, Args)]
pub struct PoolSetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub template: String,
    /// Ready sandboxes kept at all times.
    #[arg(long, default_value_t = 0)]
    pub min: u32,
    /// Largest the pool may grow (0 turns it off).
    #[arg(long)]
    pub max: u32,
    /// Ready sandboxes kept beyond the forecast demand.
    #[arg(long, default_value_t = 0)]
    pub buffer: u32,
    /// A pre-warm window START/END=SIZE (repeatable): while it lasts the pool
    /// holds at least SIZE. START and END: `+30m` from now, UTC
    /// `2026-11-24T09:00Z`, or epoch ms. Example: `--prewarm +0s/+1h=50`.
    #[arg(long = "prewarm", value_parser = parse_prewarm)]
    pub prewarm: Vec<corral_core::pool::PrewarmWindow>,
}

fn parse_prewarm(s: &str) -> Result<corral_core::pool::PrewarmWindow, String> {
    corral_core::pool::PrewarmWindow::parse(s, corral_core::time::now_ms())
}

fn parse_pool(s: &str) -> Result<corral_dataplane::PoolConf, String> {
    corral_dataplane::PoolConf::parse(s)
}
