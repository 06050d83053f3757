//! The `nat` network mode's share of the runtime: address slots, the veth
//! attached to a new sandbox, stray links and the nft table.

use super::{lock, Runtime};
use crate::error::{Result, RuntimeError};
use crate::net::{self, NetworkMode, SlotAddrs};

impl Runtime {
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

    pub(super) fn take_net_slot(&self, mode: NetworkMode) -> Result<Option<SlotAddrs>> {
        match (mode, &self.inner.net_slots) {
            (NetworkMode::Isolated, _) => Ok(None),
            (NetworkMode::Nat, Some(pool)) => lock(pool).take().map(Some),
            (NetworkMode::Nat, None) => Err(RuntimeError::InvalidArgument(
                "the nat network mode is not enabled on this host".into(),
            )),
        }
    }

    pub(super) fn release_net_slot(&self, slot: Option<u32>) {
        if let (Some(slot), Some(pool)) = (slot, &self.inner.net_slots) {
            lock(pool).release(slot);
        }
    }

    pub(super) async fn attach_net(&self, addrs: SlotAddrs, pid: i32) -> Result<()> {
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
    pub(super) fn remove_stray_links(&self) {
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
}
