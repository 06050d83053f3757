//! Flags of the `nat` network mode (`corral up` and `corral dataplane`).

use std::net::Ipv4Addr;

use anyhow::Context;
use clap::{ArgAction, Args};
use corral_runtime::{Ipv4Cidr, NatConfig};

/// The range `--nat` uses when `--nat-subnet` does not name one.
pub const DEFAULT_NAT_SUBNET: &str = "10.200.0.0/16";

#[derive(Debug, Clone, Args)]
pub struct NatArgs {
    /// Native driver: offer the `nat` network mode (sandboxes created with
    /// `network: nat` get an eth0 behind this host's masquerading NAT) over
    /// the default range 10.200.0.0/16.
    #[arg(long, env = "CORRAL_NAT")]
    pub nat: bool,
    /// Native driver: offer the `nat` mode over this range (implies --nat);
    /// it is cut into /30 slots, one per nat sandbox.
    #[arg(long, env = "CORRAL_NAT_SUBNET", value_name = "CIDR")]
    pub nat_subnet: Option<String>,
    /// Nameserver written to /etc/resolv.conf of nat sandboxes (default: a
    /// comment-only file, no DNS).
    #[arg(long, env = "CORRAL_NAT_DNS", value_name = "IPV4")]
    pub nat_dns: Option<Ipv4Addr>,
    /// Host ends of the veth pairs are named PREFIX<slot>; links with this
    /// prefix belong to this dataplane (leftovers are deleted at start).
    #[arg(long, env = "CORRAL_NAT_VETH_PREFIX", default_value = "crl")]
    pub nat_veth_prefix: String,
    /// The nftables table (family inet) holding the masquerade and filter rules.
    #[arg(long, env = "CORRAL_NAT_TABLE", default_value = "corral")]
    pub nat_table: String,
    /// Turn on net.ipv4.ip_forward when it is off (nat traffic cannot leave
    /// the host without it).
    #[arg(long, env = "CORRAL_NAT_FORWARDING", default_value_t = true, action = ArgAction::Set)]
    pub nat_forwarding: bool,
}

impl NatArgs {
    /// The runtime's setting, `None` when the mode is off.
    pub fn config(&self) -> anyhow::Result<Option<NatConfig>> {
        let subnet = match (&self.nat_subnet, self.nat) {
            (Some(s), _) => s.as_str(),
            (None, true) => DEFAULT_NAT_SUBNET,
            (None, false) => return Ok(None),
        };
        let subnet: Ipv4Cidr = subnet.parse().context("--nat-subnet")?;
        let mut c = NatConfig::new(subnet);
        c.dns = self.nat_dns;
        c.veth_prefix = self.nat_veth_prefix.clone();
        c.nft_table = self.nat_table.clone();
        c.enable_forwarding = self.nat_forwarding;
        c.validate().context("--nat-veth-prefix / --nat-table")?;
        Ok(Some(c))
    }
}
