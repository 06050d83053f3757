//! cgroup v2 control files.

use std::fs;
use std::path::Path;

use super::{read_max, write};
use crate::error::{Result, RuntimeError};

/// Enables the wanted controllers in `subtree_control` from our own cgroup
/// down to the parent, so sandboxes under the parent can use them. Failures
/// are logged, not fatal: v2's no-internal-process rule refuses this when our
/// own cgroup holds processes (then run the runtime in a delegated leaf).
pub(super) fn enable_controllers(own: &Path, parent: &Path, wanted: &[&str]) {
    if wanted.is_empty() {
        return;
    }
    let line = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    for dir in [own, parent] {
        if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), &line) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot enable cgroup v2 controllers");
        }
    }
}

/// `memory.max`; swap is disabled for the sandbox so the limit is hard.
pub(super) fn set_memory(dir: &Path, bytes: Option<u64>) -> Result<()> {
    write(
        &dir.join("memory.max"),
        &bytes.map_or("max".to_string(), |b| b.to_string()),
    )?;
    let swap = dir.join("memory.swap.max");
    if swap.exists() {
        write(&swap, if bytes.is_some() { "0" } else { "max" })?;
    }
    Ok(())
}

pub(super) fn read_memory(dir: &Path) -> Result<(Option<u64>, Option<u64>)> {
    let swap = dir.join("memory.swap.max");
    let sw = if swap.exists() {
        read_max(&swap)?
    } else {
        None
    };
    Ok((read_max(&dir.join("memory.max"))?, sw))
}

pub(super) fn set_pids(dir: &Path, max: Option<u64>) -> Result<()> {
    write(
        &dir.join("pids.max"),
        &max.map_or("max".to_string(), |n| n.to_string()),
    )
}

/// `cpu.max` is "QUOTA PERIOD" or "max PERIOD".
pub(super) fn set_cpu(dir: &Path, quota_us: Option<u64>, period_us: u64) -> Result<()> {
    let q = quota_us.map_or("max".to_string(), |q| q.to_string());
    write(&dir.join("cpu.max"), &format!("{q} {period_us}"))
}

pub(super) fn read_cpu(dir: &Path) -> Result<Option<(u64, u64)>> {
    let p = dir.join("cpu.max");
    let s =
        fs::read_to_string(&p).map_err(|e| RuntimeError::io(format!("read {}", p.display()), e))?;
    let mut it = s.split_whitespace();
    let (q, per) = (it.next().unwrap_or("max"), it.next().unwrap_or("100000"));
    let per: u64 = per
        .parse()
        .map_err(|_| RuntimeError::Protocol(format!("{}: {s:?}", p.display())))?;
    if q == "max" {
        return Ok(None);
    }
    let q: u64 = q
        .parse()
        .map_err(|_| RuntimeError::Protocol(format!("{}: {s:?}", p.display())))?;
    Ok(Some((q, per)))
}
