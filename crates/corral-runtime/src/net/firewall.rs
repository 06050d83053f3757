//! The host side of the `nat` mode that is not per sandbox: one nftables
//! table masquerading the slot range out of whatever interface leads outside,
//! and IPv4 forwarding.
//!
//! The table never changes while sandboxes come and go (its rules match the
//! whole range and the veth name prefix), so a create or a delete touches no
//! rule. It is replaced atomically at runtime start and removed by
//! [`crate::force_cleanup`] / [`crate::Runtime::remove_nat_if_unused`]. `nft` runs only
//! then, never per sandbox.

use std::io::Write;
use std::process::{Command, Stdio};

use super::NatConfig;
use crate::error::{Result, RuntimeError};

/// The ruleset of the runtime's table:
/// - `postrouting`: traffic from the range to anywhere outside it leaves
///   with the address of the outgoing interface (masquerade);
/// - `forward`: sandboxes never reach each other, and nothing of theirs is
///   forwarded over IPv6 (they have no IPv6 beyond link-local);
/// - `input`: sandboxes reach no service of the host itself, over IPv4 or
///   the veth's IPv6 link-local address (only replies to connections the
///   host opened come back in).
///
/// Family `inet`, so one table covers both IP versions.
pub fn ruleset(cfg: &NatConfig) -> String {
    let (t, net, p) = (&cfg.nft_table, cfg.subnet, &cfg.veth_prefix);
    format!(
        "table inet {t} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {net} ip daddr != {net} masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip saddr {net} ip daddr {net} drop
    iifname \"{p}*\" meta nfproto ipv6 drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{p}*\" ct state established,related accept
    iifname \"{p}*\" drop
  }}
}}
"
    )
}

fn nft(script: &str) -> Result<()> {
    let fail = |e: std::io::Error| RuntimeError::io("run nft (is nftables installed?)", e);
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fail)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(fail)?;
    }
    let out = child.wait_with_output().map_err(fail)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Setup(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Creates (or atomically replaces) the table.
pub fn install(cfg: &NatConfig) -> Result<()> {
    let t = &cfg.nft_table;
    nft(&format!(
        "add table inet {t}\ndelete table inet {t}\n{}",
        ruleset(cfg)
    ))
}

/// Removes the table if it exists.
pub fn remove(table: &str) -> Result<()> {
    nft(&format!(
        "add table inet {table}\ndelete table inet {table}\n"
    ))
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on if it is off. Returns whether it changed it.
pub fn enable_forwarding() -> Result<bool> {
    let now = std::fs::read_to_string(IP_FORWARD).map_err(|e| RuntimeError::io(IP_FORWARD, e))?;
    if now.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1").map_err(|e| RuntimeError::io(IP_FORWARD, e))?;
    tracing::info!("enabled IPv4 forwarding for nat sandboxes");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_covers_the_range_and_the_prefix() {
        let mut cfg = NatConfig::new("10.200.0.0/16".parse().unwrap());
        cfg.nft_table = "corral_t".into();
        cfg.veth_prefix = "cx".into();
        let r = ruleset(&cfg);
        assert!(r.starts_with("table inet corral_t {"));
        assert!(r.contains("ip saddr 10.200.0.0/16 ip daddr != 10.200.0.0/16 masquerade"));
        assert!(r.contains("ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 drop"));
        assert!(r.contains("iifname \"cx*\" drop"));
    }
}
