//! Dataplane configuration, with defaults taken from the machine it runs on.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Everything `run` needs. Build it with [`DataplaneConfig::new`] (or
/// `Default`) and override fields; every default is what a single-host
/// development setup wants.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// The server's gRPC Control service, e.g. `http://127.0.0.1:7701`.
    pub server_url: String,
    pub host_id: String,
    /// Holds the cursor database, `starts.log`, `agent.addr` and `sandboxes/<id>/`.
    pub data_dir: PathBuf,
    /// Where the Agent service listens; port 0 picks a free one. The bound
    /// address is sent in `Register.agent_addr` and written to `agent.addr`.
    pub agent_listen: SocketAddr,
    pub capacity_cpu_millis: u64,
    pub capacity_memory_mb: u64,
    pub templates: Vec<String>,
    /// How many sandbox starts run their CPU-bound part at once.
    pub start_concurrency: usize,
    /// How long the server may hold a poll with nothing to send.
    pub poll_wait_ms: u64,
    /// Events held until the server acks them; a full buffer blocks the
    /// reporters instead of dropping events.
    pub event_buffer: usize,
    /// Whether a graceful shutdown stops every sandbox. By default they keep
    /// running and the next dataplane process adopts them.
    pub stop_sandboxes_on_shutdown: bool,
    /// The shared secret presented to the server and required from it on
    /// the Agent service; `None` = no authentication.
    pub join_token: Option<String>,
    /// A PEM CA certificate to trust for an `https://` server URL (a private
    /// CA); `None` = the public web roots.
    pub server_ca: Option<PathBuf>,
    /// How long a start waits for a pool member that is already warming
    /// before it starts cold (0: never waits).
    pub pool_wait_ms: u64,
    /// Most sandboxes this host holds: alive sandboxes plus unclaimed pool
    /// members. A start past it evicts ready pool members first, then fails.
    pub max_sandboxes: usize,
    /// Pool members pre-created at once (refill runs below user starts).
    pub pool_refill_concurrency: usize,
    /// Local pool settings (`--pool TEMPLATE=MIN:MAX:BUFFER`); a setting from
    /// the server for the same template replaces its preset.
    pub pools: Vec<crate::pool::PoolConf>,
    /// Testing only: how long to wait after applying commands before the next
    /// poll acks them (a slow host; 0 in production).
    pub debug_ack_delay_ms: u64,
}

impl DataplaneConfig {
    /// A config with every machine-derived default filled in.
    pub fn new(
        server_url: impl Into<String>,
        host_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        DataplaneConfig {
            server_url: server_url.into(),
            host_id: host_id.into(),
            data_dir: data_dir.into(),
            agent_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            capacity_cpu_millis: cores() as u64 * 1000,
            capacity_memory_mb: total_memory_mb().unwrap_or(1024),
            templates: vec!["base".to_string()],
            start_concurrency: cores(),
            poll_wait_ms: 300_000,
            event_buffer: 65_536,
            stop_sandboxes_on_shutdown: false,
            join_token: None,
            server_ca: None,
            pool_wait_ms: 50,
            max_sandboxes: 10_000,
            pool_refill_concurrency: cores(),
            pools: Vec::new(),
            debug_ack_delay_ms: 0,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), crate::DataplaneError> {
        let bad = |m: &str| Err(crate::DataplaneError::Config(m.to_string()));
        if self.host_id.is_empty() {
            return bad("host_id must not be empty");
        }
        if self.start_concurrency == 0 {
            return bad("start_concurrency must be at least 1");
        }
        if self.max_sandboxes == 0 {
            return bad("max_sandboxes must be at least 1");
        }
        if self.event_buffer == 0 {
            return bad("event_buffer must be at least 1");
        }
        Ok(())
    }
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig::new(
            "http://127.0.0.1:7701",
            default_host_id(),
            "corral-data/dataplane",
        )
    }
}

/// The machine's hostname, or `localhost` when it has none.
pub fn default_host_id() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn total_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    crate::usage::meminfo_kb(&text, "MemTotal").map(|kb| kb / 1024)
}
