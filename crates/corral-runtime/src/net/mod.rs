//! Networking of sandboxes.
//!
//! `isolated` (the default): the sandbox's network namespace holds only `lo`;
//! nothing here runs, so its cold start pays nothing for this module.
//!
//! `nat`: the sandbox also gets `eth0`, one end of a veth pair whose host end
//! (`<veth_prefix><slot>`) holds the gateway address of the sandbox's /30
//! slot ([`slots`]); the default route goes there and the host masquerades
//! the range out ([`firewall`]). Everything per sandbox is a handful of
//! netlink messages ([`netlink`]) sent from the runtime, not a process.
//!
//! Invariant: a live `nat` sandbox owns exactly one slot and one host link
//! named after it; the slot is recorded in the sandbox's `meta.json`, so a
//! restarted runtime rebuilds its allocation from what it adopts and deletes
//! every prefixed link no adopted sandbox owns.

pub(crate) mod firewall;
pub(crate) mod netlink;
pub mod slots;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use netlink::{link_index, Netlink};
pub use slots::{Ipv4Cidr, SlotAddrs};

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Own network namespace with loopback only.
    #[default]
    Isolated,
    /// Loopback plus `eth0` behind the host's masquerading NAT.
    Nat,
}

/// The host's `nat` setup (one per runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// The range cut into /30 slots (one per `nat` sandbox).
    pub subnet: Ipv4Cidr,
    /// Host ends of veth pairs are `<veth_prefix><slot>`; every link with
    /// this prefix belongs to this runtime (leftovers are deleted).
    pub veth_prefix: String,
    /// The nftables table (family `inet`) this runtime owns.
    pub nft_table: String,
    /// The nameserver written to `/etc/resolv.conf` of `nat` sandboxes;
    /// `None` leaves a comment-only file (no DNS).
    pub dns: Option<Ipv4Addr>,
    /// Turn on `net.ipv4.ip_forward` when it is off (needed for traffic to
    /// leave the host; nothing else on the host needs it).
    pub enable_forwarding: bool,
}

impl NatConfig {
    /// Production defaults over `subnet`: links `crl<slot>`, table `corral`.
    pub fn new(subnet: Ipv4Cidr) -> Self {
        NatConfig {
            subnet,
            veth_prefix: "crl".into(),
            nft_table: "corral".into(),
            dns: None,
            enable_forwarding: true,
        }
    }

    /// Names must fit the kernel's 15-byte interface names with any slot
    /// number, and be safe to paste into an nft script.
    pub fn validate(&self) -> Result<()> {
        let slot_digits = (self.subnet.size() / 4).saturating_sub(1).to_string().len();
        let p = &self.veth_prefix;
        if p.is_empty()
            || p.len() + slot_digits > 15
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(RuntimeError::InvalidArgument(format!(
                "veth prefix {p:?} must be lowercase letters, digits or '-', at most {} characters for {}",
                15 - slot_digits.min(15),
                self.subnet
            )));
        }
        let t = &self.nft_table;
        if t.is_empty()
            || t.len() > 64
            || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(RuntimeError::InvalidArgument(format!(
                "nft table {t:?} must be 1-64 letters, digits or '_'"
            )));
        }
        Ok(())
    }

    /// The host end of slot `slot`'s veth pair.
    pub fn host_link(&self, slot: u32) -> String {
        format!("{}{slot}", self.veth_prefix)
    }

    /// The slot a host link name belongs to, if it is one of ours.
    pub fn slot_of_link(&self, name: &str) -> Option<u32> {
        let digits = name.strip_prefix(&self.veth_prefix)?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse().ok()
    }

    /// `/etc/resolv.conf` of a `nat` sandbox.
    pub fn resolv_conf(&self) -> String {
        match self.dns {
            Some(ip) => format!("nameserver {ip}\n"),
            None => "# nat network without a DNS server (set one with the dataplane's --nat-dns)\n"
                .into(),
        }
    }
}

/// The name of the sandbox side of the pair.
pub const SANDBOX_LINK: &str = "eth0";

fn net_err(what: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::io(what, e)
}

/// Wires slot `a` to the sandbox whose init is `pid`: the pair, the gateway
/// address on the host end, and inside the sandbox `eth0` up with its address
/// and the default route. Blocking (a few netlink round trips and one short
/// thread); on error the caller removes the link with [`detach`].
pub(crate) fn attach(cfg: &NatConfig, a: SlotAddrs, pid: i32) -> Result<()> {
    let host = cfg.host_link(a.slot);
    let mut nl = Netlink::open().map_err(net_err("open netlink".into()))?;
    // A link left by an earlier life of this slot (a crash between create
    // and cleanup) would make the create fail.
    let _ = nl.del_link(&host);
    nl.add_veth_into(&host, SANDBOX_LINK, pid)
        .map_err(net_err(format!("create veth {host}")))?;
    let idx = link_index(&host).map_err(net_err(format!("find {host}")))?;
    nl.add_addr(idx, a.gateway, a.prefix)
        .map_err(net_err(format!("address {host}")))?;
    nl.set_up(idx)
        .map_err(net_err(format!("bring up {host}")))?;
    configure_inside(pid, a)
}

/// Joins the sandbox's network namespace on a short-lived thread (only that
/// thread changes namespace) and configures `eth0` there.
fn configure_inside(pid: i32, a: SlotAddrs) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(net_err(format!("open net namespace of {pid}")))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an fd we own; this thread exits right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut nl = Netlink::open()?;
        let idx = link_index(SANDBOX_LINK)?;
        nl.add_addr(idx, a.sandbox, a.prefix)?;
        nl.set_up(idx)?;
        nl.add_default_route(idx, a.gateway)
    })
    .join()
    .map_err(|_| RuntimeError::Spawner("network setup thread panicked".into()))?
    .map_err(net_err(format!("configure {SANDBOX_LINK} of {pid}")))
}

/// Deletes slot `slot`'s pair now (when the sandbox's namespace has died
/// the kernel deletes it anyway, soon after: then nothing happens here).
pub(crate) fn detach(cfg: &NatConfig, slot: u32) -> Result<()> {
    let host = cfg.host_link(slot);
    Netlink::open()
        .and_then(|mut nl| nl.del_link(&host))
        .map(|_| ())
        .map_err(net_err(format!("delete {host}")))
}

/// Host links carrying this runtime's prefix, with their slot.
pub(crate) fn host_links(cfg: &NatConfig) -> Result<Vec<(String, u32)>> {
    let names = Netlink::open()
        .and_then(|mut nl| nl.link_names())
        .map_err(net_err("list links".into()))?;
    Ok(names
        .into_iter()
        .filter_map(|n| cfg.slot_of_link(&n).map(|s| (n, s)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NatConfig {
        NatConfig::new("10.200.0.0/16".parse().unwrap())
    }

    #[test]
    fn link_names_round_trip_and_foreign_ones_are_not_ours() {
        let c = cfg();
        assert_eq!(c.host_link(16_383), "crl16383");
        assert_eq!(c.slot_of_link("crl16383"), Some(16_383));
        assert_eq!(c.slot_of_link("crl0"), Some(0));
        for foreign in ["crl", "crl01", "crlx", "eth0", "xcrl1", "crl-1"] {
            assert_eq!(c.slot_of_link(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.veth_prefix = "averylongpfx".into();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid argument: veth prefix \"averylongpfx\" must be lowercase letters, digits or '-', at most 10 characters for 10.200.0.0/16"
        );
        c.veth_prefix = "Up".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.nft_table = "bad table;".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn resolv_conf_is_a_comment_unless_a_server_is_set() {
        let mut c = cfg();
        assert!(c.resolv_conf().starts_with('#'));
        c.dns = Some(Ipv4Addr::new(10, 0, 0, 53));
        assert_eq!(c.resolv_conf(), "nameserver 10.0.0.53\n");
    }
}
