//! The public async API of the native runtime. This file holds the runtime
//! itself, adoption at start-up and the operations on a live sandbox (exec,
//! files, limits, hostname); creating one is in `create.rs`, ending one in
//! `destroy.rs`, the `nat` network wiring in `nat.rs`.

mod create;
mod destroy;
mod nat;

use create::create_state_dir;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::cgroup::{Cgroup, CpuWeight, Layout};
use crate::client::{self, ExecStream};
use crate::config::{
    AppliedLimits, ExecOutput, ExecSpec, ExitInfo, Priority, RuntimeConfig, SandboxStats,
};
use crate::error::{Result, RuntimeError};
use crate::idmap::SlotAllocator;
use crate::net;
use crate::net::slots::NetSlots;
use crate::spawner_client::{set_nice, SpawnerClient, SpawnerSlot};
use crate::state::{self, Paths};

/// How long destroy waits for a killed init to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Niceness of the background spawner (the lowest priority there is).
const BACKGROUND_NICE: i32 = 19;

/// One live (or ended but not yet destroyed) sandbox.
struct Entry {
    id: String,
    pid: i32,
    start_time: u64,
    slot: u32,
    host_id_base: u32,
    paths: Paths,
    cgroup: Cgroup,
    /// The `nat` slot it owns, if any.
    net_slot: Option<u32>,
    exit: watch::Sender<Option<ExitInfo>>,
}

impl Entry {
    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// SIGKILLs the init (the kernel then kills its whole pid namespace) and
    /// anything left in the cgroup. Checks the start time so a reused pid is
    /// never hit.
    fn kill(&self) {
        if state::process_start_time(self.pid) == Some(self.start_time) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::SIGKILL,
            );
        }
        self.cgroup.kill_all();
    }
}

struct Inner {
    cfg: RuntimeConfig,
    layout: Layout,
    /// Spawns every [`Priority::Normal`] sandbox.
    spawner: SpawnerSlot,
    /// Spawns [`Priority::Background`] ones at [`BACKGROUND_NICE`], so pool
    /// refills never queue user creates behind them nor take their CPU.
    background: SpawnerSlot,
    sandboxes: Mutex<HashMap<String, Arc<Entry>>>,
    slots: Mutex<SlotAllocator>,
    /// `/30` slots of the `nat` range (`None`: the mode is off).
    net_slots: Option<Mutex<NetSlots>>,
    /// Admission of creates, FIFO (see [`RuntimeConfig::max_parallel_starts`]).
    starts: Option<tokio::sync::Semaphore>,
}

/// The native sandbox runtime of one host. Cheap to clone.
///
/// Dropping the last handle stops the spawner but leaves running sandboxes
/// alone; a new `Runtime` on the same `state_dir` adopts them.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runtime {
    /// Checks the host, detects the cgroup layout, starts the spawner and
    /// adopts the sandboxes an earlier runtime left in `state_dir`.
    pub async fn new(cfg: RuntimeConfig) -> Result<Runtime> {
        if !nix::unistd::geteuid().is_root() {
            return Err(RuntimeError::Unsupported(
                "the sandbox runtime needs root".into(),
            ));
        }
        create_state_dir(&cfg.state_dir)?;
        let layout = Layout::detect(&cfg.cgroup_parent)?;
        let slots = SlotAllocator::new(cfg.id_base, cfg.id_slots)?;
        let net_slots = match &cfg.nat {
            Some(nat) => {
                nat.validate()?;
                let nat2 = nat.clone();
                tokio::task::spawn_blocking(move || -> Result<()> {
                    net::firewall::install(&nat2)?;
                    if nat2.enable_forwarding {
                        net::firewall::enable_forwarding()?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| RuntimeError::Spawner(e.to_string()))??;
                let pool = NetSlots::new(nat.subnet);
                tracing::info!(subnet = %nat.subnet, slots = pool.capacity(), table = %nat.nft_table, "nat network mode on");
                Some(Mutex::new(pool))
            }
            None => None,
        };
        let spawner = SpawnerSlot::started(&cfg, 0).await?;
        let starts = (cfg.max_parallel_starts > 0)
            .then(|| tokio::sync::Semaphore::new(cfg.max_parallel_starts));
        let inner = Inner {
            cfg,
            layout,
            spawner,
            background: SpawnerSlot::lazy(BACKGROUND_NICE),
            sandboxes: Mutex::new(HashMap::new()),
            slots: Mutex::new(slots),
            net_slots,
            starts,
        };
        let rt = Runtime {
            inner: Arc::new(inner),
        };
        rt.adopt_all();
        rt.remove_stray_links();
        Ok(rt)
    }

    /// The configuration this runtime runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    /// Host pid of the spawner (for diagnostics and tests).
    pub fn spawner_pid(&self) -> Option<u32> {
        self.inner.spawner.pid()
    }

    /// Host pid of the background spawner, once it has started.
    pub fn background_spawner_pid(&self) -> Option<u32> {
        self.inner.background.pid()
    }

    /// The live spawner for a priority, restarting it if it died.
    async fn spawner(&self, priority: Priority) -> Result<Arc<SpawnerClient>> {
        let slot = match priority {
            Priority::Normal => &self.inner.spawner,
            Priority::Background => &self.inner.background,
        };
        slot.get(&self.inner.cfg).await
    }

    /// Re-registers the sandboxes found in the state dir (a previous runtime's).
    fn adopt_all(&self) {
        for id in state::list_ids(&self.inner.cfg.state_dir) {
            let paths = Paths::new(&self.inner.cfg.state_dir, &id);
            let Some(meta) = paths.read_meta() else {
                // A create interrupted before its meta was written: nothing can run there.
                let _ = self
                    .inner
                    .layout
                    .sandbox(&id)
                    .remove(Duration::from_millis(500));
                let _ = paths.remove();
                continue;
            };
            if !lock(&self.inner.slots).reserve(meta.slot) {
                tracing::warn!(%id, slot = meta.slot, "slot of adopted sandbox already taken");
            }
            if let (Some(net), Some(pool)) = (meta.net_slot, &self.inner.net_slots) {
                if !lock(pool).reserve(net) {
                    tracing::warn!(%id, net_slot = net, "network slot of adopted sandbox already taken");
                }
            }
            let alive = state::init_alive(&meta);
            tracing::info!(%id, pid = meta.pid, alive, "adopting sandbox");
            self.register(meta, paths, None);
        }
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        lock(&self.inner.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    fn live_entry(&self, id: &str) -> Result<Arc<Entry>> {
        let e = self.entry(id)?;
        if e.exited() {
            return Err(RuntimeError::NotFound(format!("{id} (ended)")));
        }
        Ok(e)
    }

    /// Starts a command; output and the exit arrive on the returned stream.
    pub async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecStream> {
        let e = self.live_entry(id)?;
        client::exec(&e.paths.socket(), spec).await
    }

    /// Runs a command to completion and returns all its output.
    pub async fn exec_buffered(&self, id: &str, spec: ExecSpec) -> Result<ExecOutput> {
        self.exec(id, spec).await?.collect().await
    }

    /// Reads a regular file (path inside the sandbox; relative = from its workdir).
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        let e = self.live_entry(id)?;
        client::read_file(&e.paths.socket(), path).await
    }

    /// Writes a regular file, creating parents; `mode` 0 means 0644.
    pub async fn write_file(&self, id: &str, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let e = self.live_entry(id)?;
        client::write_file(&e.paths.socket(), path, data, mode).await
    }

    /// Resolves when the sandbox's init has died.
    pub async fn wait(&self, id: &str) -> Result<ExitInfo> {
        let mut rx = self.entry(id)?.exit.subscribe();
        let info = rx
            .wait_for(|v| v.is_some())
            .await
            .map_err(|_| RuntimeError::NotFound(id.to_string()))?;
        Ok(info.unwrap_or_default())
    }

    /// Limits as the cgroup files say now.
    pub fn limits(&self, id: &str) -> Result<AppliedLimits> {
        self.entry(id)?.cgroup.read_limits()
    }

    /// Changes the cpu and memory limits of a live sandbox (0 = unlimited),
    /// on v1 and v2 alike; the task limit stays as created. A warm-pool claim
    /// applies the request's limits this way, which also lifts a
    /// [`Priority::Background`] sandbox to normal priority.
    pub fn update_limits(&self, id: &str, cpu_millis: u32, memory_mb: u32) -> Result<()> {
        let e = self.live_entry(id)?;
        e.cgroup.apply_cpu_memory(cpu_millis, memory_mb)?;
        // A background-made sandbox now works for a user: normal weight,
        // and its init (whose forks every exec inherits) at nice 0.
        e.cgroup.set_cpu_weight(CpuWeight::Normal)?;
        set_nice(e.pid, 0);
        Ok(())
    }

    /// Sets the hostname inside a live sandbox. Done from the host: a
    /// short-lived thread joins the sandbox's UTS namespace (host root owns
    /// the sandbox's user namespace, so it may) and calls `sethostname`; the
    /// init keeps no capability for it. A warm-pool claim binds the sandbox
    /// id as hostname this way. Blocks for one thread spawn (~0.1 ms).
    pub fn set_hostname(&self, id: &str, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > 64 {
            return Err(RuntimeError::InvalidArgument(format!(
                "bad hostname {name:?}"
            )));
        }
        let e = self.live_entry(id)?;
        let ns = std::fs::File::open(format!("/proc/{}/ns/uts", e.pid))
            .map_err(|err| RuntimeError::io(format!("open uts namespace of {id}"), err))?;
        // The pid could have been reused between the lookup and the open.
        if state::process_start_time(e.pid) != Some(e.start_time) {
            return Err(RuntimeError::NotFound(format!("{id} (ended)")));
        }
        let name = name.to_string();
        let joined = std::thread::spawn(move || -> std::io::Result<()> {
            use std::os::fd::AsRawFd;
            // SAFETY: setns/sethostname on an fd and a buffer we own; only
            // this thread changes namespace, and it exits right after.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| RuntimeError::Spawner("hostname thread panicked".into()))?;
        joined.map_err(|err| RuntimeError::io(format!("set hostname of {id}"), err))
    }

    /// Live cgroup counters.
    pub fn stats(&self, id: &str) -> Result<SandboxStats> {
        Ok(self.entry(id)?.cgroup.stats())
    }

    /// Host pid of the sandbox's init.
    pub fn init_pid(&self, id: &str) -> Result<i32> {
        Ok(self.entry(id)?.pid)
    }

    /// First host uid/gid of the sandbox's range.
    pub fn host_id_base(&self, id: &str) -> Result<u32> {
        Ok(self.entry(id)?.host_id_base)
    }

    /// Ids of the sandboxes this runtime knows (created or adopted, not yet destroyed).
    pub async fn list(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = lock(&self.inner.sandboxes).keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }
}
