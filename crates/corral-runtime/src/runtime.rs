//! The public async API: create, exec, files, wait, destroy, list, adopt.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use crate::cgroup::{Cgroup, CpuWeight, Layout, Limits};
use crate::client::{self, ExecStream};
use crate::config::{
    AppliedLimits, ExecOutput, ExecSpec, ExitInfo, Priority, RuntimeConfig, SandboxConfig,
    SandboxInfo, SandboxStats,
};
use crate::error::{Result, RuntimeError};
use crate::idmap::{SlotAllocator, IDS_PER_SANDBOX};
use crate::net::slots::NetSlots;
use crate::net::{self, NetworkMode, SlotAddrs};
use crate::protocol::{InitConfig, SpawnRequest};
use crate::spawner_client::{set_nice, InitStatus, SpawnerClient, SpawnerSlot};
use crate::state::{self, Meta, Paths};

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

    /// Creates a sandbox and returns once its init answers on its socket.
    ///
    /// Steps (host side, then the spawner, then the init itself): state dir →
    /// cgroup with limits → clone into namespaces, id maps, cgroup join →
    /// rootfs, /proc, /dev, pivot_root, loopback, caps, seccomp → ready.
    /// A warm pool (see corral-dataplane) runs all of it ahead of time; its
    /// claim then binds the tenant with [`Runtime::update_limits`] and
    /// [`Runtime::set_hostname`] (env is layered into each exec by the caller).
    pub async fn create(&self, cfg: SandboxConfig) -> Result<SandboxInfo> {
        let started = Instant::now();
        validate(&cfg)?;
        let _admitted = match &self.inner.starts {
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|e| RuntimeError::Spawner(e.to_string()))?,
            ),
            None => None,
        };
        let slot = {
            let map = lock(&self.inner.sandboxes);
            if map.contains_key(&cfg.id) {
                return Err(RuntimeError::AlreadyExists(cfg.id.clone()));
            }
            lock(&self.inner.slots).take()?
        };
        let paths = Paths::new(&self.inner.cfg.state_dir, &cfg.id);
        if let Err(e) = paths.create() {
            lock(&self.inner.slots).release(slot);
            return Err(match e {
                RuntimeError::AlreadyExists(_) => RuntimeError::AlreadyExists(cfg.id.clone()),
                e => e,
            });
        }
        let res = self
            .create_in_slot(&cfg, slot, paths.clone(), started)
            .await;
        if res.is_err() {
            let _ = self.destroy(&cfg.id).await;
            if !lock(&self.inner.sandboxes).contains_key(&cfg.id) {
                let _ = self
                    .inner
                    .layout
                    .sandbox(&cfg.id)
                    .remove(Duration::from_secs(2));
                let _ = paths.remove();
                lock(&self.inner.slots).release(slot);
            }
        }
        res
    }

    async fn create_in_slot(
        &self,
        cfg: &SandboxConfig,
        slot: u32,
        paths: Paths,
        started: Instant,
    ) -> Result<SandboxInfo> {
        let cgroup = self.inner.layout.sandbox(&cfg.id);
        let limits = Limits {
            cpu_millis: cfg.cpu_millis,
            memory_mb: cfg.memory_mb,
            pids_max: cfg.pids_max,
        };
        cgroup.create(limits)?;
        if cfg.priority == Priority::Background {
            cgroup.set_cpu_weight(CpuWeight::Idle)?;
        }
        let host_id_base = lock(&self.inner.slots).host_base(slot);
        let req = SpawnRequest {
            host_id_base,
            id_count: IDS_PER_SANDBOX,
            socket: paths.socket(),
            cgroup_procs: cgroup.procs_files(),
            init: InitConfig {
                id: cfg.id.clone(),
                mount_dir: paths.mount_dir(),
                lowers: cfg.rootfs.clone(),
                binds: cfg.binds.clone(),
                disk_mb: cfg.disk_mb,
                env: cfg.env.clone(),
                workdir: cfg.workdir.clone(),
                landlock_writable: cfg.landlock_writable.clone(),
            },
        };
        let t_cg = started.elapsed();
        let net = self.take_net_slot(cfg.network)?;
        let spawned = async {
            let spawned = self.spawner(cfg.priority).await?.spawn(req).await?;
            let meta = Meta {
                id: cfg.id.clone(),
                pid: spawned.pid,
                start_time: state::process_start_time(spawned.pid).unwrap_or(0),
                slot,
                host_id_base,
                cgroup: cgroup.clone(),
                net_slot: net.map(|a| a.slot),
            };
            paths.write_meta(&meta)?;
            Ok::<_, RuntimeError>((spawned, meta))
        }
        .await;
        let (spawned, meta) = match spawned {
            Ok(s) => s,
            Err(e) => {
                // Not registered yet, so no destroy will give the slot back.
                self.release_net_slot(net.map(|a| a.slot));
                return Err(e);
            }
        };
        let t_spawn = started.elapsed();
        self.register(meta, paths.clone(), Some(spawned.exit));
        if let Some(addrs) = net {
            // From here on the entry owns the slot: a failure is undone by
            // the caller's destroy.
            self.attach_net(addrs, spawned.pid).await?;
        }
        let t_meta = started.elapsed();
        client::ping(&paths.socket(), self.inner.cfg.start_timeout).await?;
        if let (Some(_), Some(nat)) = (net, &self.inner.cfg.nat) {
            // Best effort: an image may make it a symlink into a missing
            // dir; the network works without it (names just do not resolve).
            let conf = nat.resolv_conf();
            if let Err(e) =
                client::write_file(&paths.socket(), "/etc/resolv.conf", conf.as_bytes(), 0o644)
                    .await
            {
                tracing::warn!(id = %cfg.id, "cannot write /etc/resolv.conf: {e}");
            }
        }
        tracing::debug!(
            id = %cfg.id, pid = spawned.pid, cgroup = ?t_cg, spawned = ?t_spawn, meta = ?t_meta, ready = ?started.elapsed(),
            "sandbox ready"
        );
        Ok(SandboxInfo {
            id: cfg.id.clone(),
            pid: spawned.pid,
            host_id_base,
            socket: paths.socket(),
            startup: started.elapsed(),
        })
    }

    /// Records a sandbox and starts watching for its init's death.
    fn register(
        &self,
        meta: Meta,
        paths: Paths,
        spawner_exit: Option<oneshot::Receiver<InitStatus>>,
    ) -> Arc<Entry> {
        let (tx, _) = watch::channel(None);
        let entry = Arc::new(Entry {
            id: meta.id.clone(),
            pid: meta.pid,
            start_time: meta.start_time,
            slot: meta.slot,
            host_id_base: meta.host_id_base,
            paths,
            cgroup: meta.cgroup,
            net_slot: meta.net_slot,
            exit: tx,
        });
        lock(&self.inner.sandboxes).insert(entry.id.clone(), entry.clone());
        tokio::spawn(watch_exit(entry.clone(), spawner_exit));
        entry
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

    /// Kills everything in the sandbox and removes its cgroups, socket and
    /// dirs (its mounts lived only in its own mount namespace). Idempotent:
    /// an unknown id with no leftovers is a success.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        state::validate_id(id)?;
        let entry = lock(&self.inner.sandboxes).get(id).cloned();
        let Some(e) = entry else {
            return self.remove_leftovers(id).await;
        };
        if !e.exited() {
            e.kill();
            let mut rx = e.exit.subscribe();
            if tokio::time::timeout(KILL_WAIT, rx.wait_for(|v| v.is_some()))
                .await
                .is_err()
            {
                tracing::warn!(%id, pid = e.pid, "init did not die in time");
            }
        }
        let cg = e.cgroup.clone();
        tokio::task::spawn_blocking(move || cg.remove(Duration::from_secs(5)))
            .await
            .map_err(|e| RuntimeError::Spawner(e.to_string()))??;
        // A dead init's network namespace goes with it, and the kernel
        // deletes the veth pair in that teardown, batched with others'
        // (deleting it here costs a ~25 ms RCU wait per link, serialised on
        // the rtnl lock). Only an init that would not die needs it done here.
        // A slot reused before the kernel got to it is cleared by `attach`.
        if let (Some(slot), Some(nat), false) = (e.net_slot, self.inner.cfg.nat.clone(), e.exited())
        {
            tokio::task::spawn_blocking(move || net::detach(&nat, slot))
                .await
                .map_err(|e| RuntimeError::Spawner(e.to_string()))??;
        }
        e.paths.remove()?;
        let mut map = lock(&self.inner.sandboxes);
        if map.get(id).is_some_and(|cur| Arc::ptr_eq(cur, &e)) {
            map.remove(id);
            lock(&self.inner.slots).release(e.slot);
            self.release_net_slot(e.net_slot);
        }
        tracing::debug!(%id, "sandbox destroyed");
        Ok(())
    }

    async fn remove_leftovers(&self, id: &str) -> Result<()> {
        let paths = Paths::new(&self.inner.cfg.state_dir, id);
        if !paths.dir.exists() {
            return Ok(());
        }
        let cg = match paths.read_meta() {
            Some(meta) => {
                if state::init_alive(&meta) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(meta.pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
                if let (Some(slot), Some(nat)) = (meta.net_slot, &self.inner.cfg.nat) {
                    let _ = net::detach(nat, slot);
                }
                meta.cgroup
            }
            None => self.inner.layout.sandbox(id),
        };
        tokio::task::spawn_blocking(move || cg.remove(Duration::from_secs(5)))
            .await
            .map_err(|e| RuntimeError::Spawner(e.to_string()))??;
        paths.remove()
    }

    /// Free `nat` slots, `None` when the mode is off (what the host reports
    /// to the scheduler).
    pub fn free_net_slots(&self) -> Option<u32> {
        self.inner.net_slots.as_ref().map(|p| lock(p).free())
    }

    /// The `nat` addresses of a sandbox (`None` for an `isolated` one).
    pub fn net_addrs(&self, id: &str) -> Result<Option<SlotAddrs>> {
        let e = self.entry(id)?;
        Ok(match (e.net_slot, &self.inner.net_slots) {
            (Some(slot), Some(pool)) => Some(lock(pool).addrs(slot)),
            _ => None,
        })
    }

    fn take_net_slot(&self, mode: NetworkMode) -> Result<Option<SlotAddrs>> {
        match (mode, &self.inner.net_slots) {
            (NetworkMode::Isolated, _) => Ok(None),
            (NetworkMode::Nat, Some(pool)) => lock(pool).take().map(Some),
            (NetworkMode::Nat, None) => Err(RuntimeError::InvalidArgument(
                "the nat network mode is not enabled on this host".into(),
            )),
        }
    }

    fn release_net_slot(&self, slot: Option<u32>) {
        if let (Some(slot), Some(pool)) = (slot, &self.inner.net_slots) {
            lock(pool).release(slot);
        }
    }

    async fn attach_net(&self, addrs: SlotAddrs, pid: i32) -> Result<()> {
        let Some(nat) = self.inner.cfg.nat.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || net::attach(&nat, addrs, pid))
            .await
            .map_err(|e| RuntimeError::Spawner(e.to_string()))?
    }

    /// Deletes host links with this runtime's prefix that no known sandbox
    /// owns (left by a crash between a create and its cleanup). Adoption
    /// has reserved the slots of every sandbox found, so what is not
    /// reserved is nobody's.
    fn remove_stray_links(&self) {
        let (Some(nat), Some(pool)) = (&self.inner.cfg.nat, &self.inner.net_slots) else {
            return;
        };
        let links = match net::host_links(nat) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot list links: {e}");
                return;
            }
        };
        for (name, slot) in links {
            if !lock(pool).is_used(slot) {
                tracing::info!(link = %name, "deleting a leftover veth");
                if let Err(e) = net::detach(nat, slot) {
                    tracing::warn!(link = %name, "{e}");
                }
            }
        }
    }

    /// Removes the `nat` firewall table when no `nat` sandbox is left (a
    /// dataplane shutting down; live ones keep their way out for the next
    /// runtime to adopt). Returns whether it removed it.
    pub async fn remove_nat_if_unused(&self) -> Result<bool> {
        let (Some(nat), Some(pool)) = (self.inner.cfg.nat.clone(), &self.inner.net_slots) else {
            return Ok(false);
        };
        let in_use = {
            let p = lock(pool);
            p.free() < p.capacity()
        };
        if in_use {
            return Ok(false);
        }
        tokio::task::spawn_blocking(move || net::firewall::remove(&nat.nft_table))
            .await
            .map_err(|e| RuntimeError::Spawner(e.to_string()))??;
        Ok(true)
    }

    /// Destroys every sandbox and removes the cgroup parents if empty
    /// (for tests and for hosts being drained).
    pub async fn destroy_all(&self) -> Result<()> {
        for id in self.list().await? {
            self.destroy(&id).await?;
        }
        self.inner.layout.remove_parents();
        Ok(())
    }
}

fn create_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::io(format!("mkdir {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| RuntimeError::io(format!("chmod {}", dir.display()), e))
}

fn validate(cfg: &SandboxConfig) -> Result<()> {
    state::validate_id(&cfg.id)?;
    if cfg.rootfs.is_empty() || cfg.rootfs.len() > crate::idmap::MAX_LAYERS {
        return Err(RuntimeError::InvalidArgument(format!(
            "rootfs needs 1 to {} layers",
            crate::idmap::MAX_LAYERS
        )));
    }
    let bad =
        |p: &PathBuf| !p.is_absolute() || p.to_str().is_none_or(|s| s.contains([':', ',', '\\']));
    if let Some(p) = cfg.rootfs.iter().find(|p| bad(p)) {
        return Err(RuntimeError::InvalidArgument(format!(
            "bad layer path {}",
            p.display()
        )));
    }
    if let Some(b) = cfg
        .binds
        .iter()
        .find(|b| !b.source.is_absolute() || !b.target.starts_with('/'))
    {
        return Err(RuntimeError::InvalidArgument(format!("bad bind {b:?}")));
    }
    if !cfg.workdir.is_empty() && !cfg.workdir.starts_with('/') {
        return Err(RuntimeError::InvalidArgument(format!(
            "workdir {:?} must be absolute",
            cfg.workdir
        )));
    }
    Ok(())
}

/// Waits for an init to die (its parent's report, or its pidfd for adopted
/// sandboxes and as a fallback), then publishes the [`ExitInfo`], reading the
/// OOM counter before anyone removes the cgroup.
async fn watch_exit(e: Arc<Entry>, spawner_exit: Option<oneshot::Receiver<InitStatus>>) {
    let status = match spawner_exit {
        Some(mut rx) => {
            tokio::select! {
                r = &mut rx => match r {
                    Ok(status) => Some(status),
                    Err(_) => {
                        // The spawner died before its child: watch the pid instead.
                        pid_exit(e.pid, e.start_time).await;
                        None
                    }
                },
                _ = pid_exit(e.pid, e.start_time) => {
                    tokio::time::timeout(Duration::from_millis(500), rx).await.ok().and_then(|r| r.ok())
                }
            }
        }
        None => {
            pid_exit(e.pid, e.start_time).await;
            None
        }
    };
    let info = ExitInfo {
        code: status.and_then(|s| s.0),
        signal: status.and_then(|s| s.1),
        oom_killed: e.cgroup.stats().oom_kills > 0,
    };
    tracing::debug!(id = %e.id, ?info, "sandbox init ended");
    e.exit.send_replace(Some(info));
}

/// Resolves once process `pid` (started at `start_time`) has exited.
async fn pid_exit(pid: i32, start_time: u64) {
    // SAFETY: pidfd_open returns a new fd we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 || state::process_start_time(pid) != Some(start_time) {
        if fd >= 0 {
            // SAFETY: closing the fd we just got.
            unsafe { libc::close(fd) };
        }
        return;
    }
    // SAFETY: fd is a fresh pidfd owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `owned` is an open pidfd that the AsyncFd owns until dropped.
    match unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while state::process_start_time(pid) == Some(start_time) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
