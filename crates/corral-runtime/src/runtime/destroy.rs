//! Ending a sandbox: watching its init die, killing it, removing what is left.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::{lock, Entry, Runtime, KILL_WAIT};
use crate::config::ExitInfo;
use crate::error::{Result, RuntimeError};
use crate::net;
use crate::spawner_client::InitStatus;
use crate::state::{self, Paths};

impl Runtime {
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

    pub(super) async fn remove_leftovers(&self, id: &str) -> Result<()> {
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

/// Waits for an init to die (its parent's report, or its pidfd for adopted
/// sandboxes and as a fallback), then publishes the [`ExitInfo`], reading the
/// OOM counter before anyone removes the cgroup.
pub(super) async fn watch_exit(e: Arc<Entry>, spawner_exit: Option<oneshot::Receiver<InitStatus>>) {
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
