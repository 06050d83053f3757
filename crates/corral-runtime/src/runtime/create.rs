//! Creating a sandbox: validation, state dir, cgroup, spawn, registration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::destroy::watch_exit;
use super::{lock, Entry, Runtime};
use crate::cgroup::{CpuWeight, Limits};
use crate::client;
use crate::config::{Priority, SandboxConfig, SandboxInfo};
use crate::error::{Result, RuntimeError};
use crate::idmap::IDS_PER_SANDBOX;
use crate::protocol::{InitConfig, SpawnRequest};
use crate::spawner_client::InitStatus;
use crate::state::{self, Meta, Paths};

impl Runtime {
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
    pub(super) fn register(
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
}

pub(super) fn create_state_dir(dir: &Path) -> Result<()> {
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
