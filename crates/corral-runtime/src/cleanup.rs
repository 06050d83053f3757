//! Blocking, best-effort removal of everything a runtime's state dir and
//! cgroup parent hold, without a running [`crate::Runtime`]. For Drop guards
//! in tests and for operators wiping a host; the normal path is
//! [`crate::Runtime::destroy`].

use std::time::{Duration, Instant};

use crate::cgroup::Layout;
use crate::config::RuntimeConfig;
use crate::state::{self, Paths};

/// Kills every sandbox recorded under `cfg.state_dir`, removes their cgroups
/// and dirs, then the cgroup parents and the state dir itself if empty; with
/// the `nat` mode on, also every veth carrying its prefix and its nft table.
pub fn force_cleanup(cfg: &RuntimeConfig) {
    let layout = Layout::detect(&cfg.cgroup_parent).ok();
    for id in state::list_ids(&cfg.state_dir) {
        let paths = Paths::new(&cfg.state_dir, &id);
        let cgroup = match paths.read_meta() {
            Some(meta) => {
                if state::init_alive(&meta) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(meta.pid),
                        nix::sys::signal::SIGKILL,
                    );
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while state::init_alive(&meta) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Some(meta.cgroup)
            }
            None => layout.as_ref().map(|l| l.sandbox(&id)),
        };
        if let Some(cg) = cgroup {
            cg.kill_all();
            if let Err(e) = cg.remove(Duration::from_secs(5)) {
                tracing::warn!(%id, error = %e, "cgroup left behind");
            }
        }
        let _ = paths.remove();
    }
    if let Some(l) = layout {
        l.remove_parents();
    }
    let _ = std::fs::remove_dir(&cfg.state_dir);
    if let Some(nat) = &cfg.nat {
        for (name, slot) in crate::net::host_links(nat).unwrap_or_default() {
            if let Err(e) = crate::net::detach(nat, slot) {
                tracing::warn!(link = %name, error = %e, "veth left behind");
            }
        }
        if let Err(e) = crate::net::firewall::remove(&nat.nft_table) {
            tracing::warn!(table = %nat.nft_table, error = %e, "nft table left behind");
        }
    }
}
