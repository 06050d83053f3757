//! cgroup v1 control files.

use std::fs;
use std::path::Path;

use super::{keyed, write};
use crate::error::{Result, RuntimeError};

/// v1 reports "unlimited" as a huge page-rounded number.
const V1_UNLIMITED: u64 = 1 << 62;

/// Hard memory limit; with swap accounting, memory+swap gets the same limit
/// so the sandbox cannot page out past it.
pub(super) fn set_memory(dir: &Path, bytes: Option<u64>) -> Result<()> {
    let v = bytes.map_or("-1".to_string(), |b| b.to_string());
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        return write(&limit, &v);
    }
    // memsw must stay >= limit at every step: when growing (a pool member
    // claimed with more memory than it was made with), raise memsw first;
    // when shrinking, lower the limit first.
    let current = read_limit(&limit)?.unwrap_or(u64::MAX);
    if bytes.unwrap_or(u64::MAX) > current {
        write(&memsw, &v)?;
        write(&limit, &v)
    } else {
        write(&limit, &v)?;
        write(&memsw, &v)
    }
}

pub(super) fn read_memory(dir: &Path) -> Result<(Option<u64>, Option<u64>)> {
    let mem = read_limit(&dir.join("memory.limit_in_bytes"))?;
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let sw = if memsw.exists() {
        read_limit(&memsw)?
    } else {
        None
    };
    Ok((mem, sw))
}

fn read_limit(p: &Path) -> Result<Option<u64>> {
    let s =
        fs::read_to_string(p).map_err(|e| RuntimeError::io(format!("read {}", p.display()), e))?;
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| RuntimeError::Protocol(format!("{}: {s:?}", p.display())))?;
    Ok((n < V1_UNLIMITED).then_some(n))
}

/// OOM kills recorded by the memory controller (`oom_kill` in
/// `memory.oom_control`, kernel ≥ 4.13), falling back to `memory.failcnt`
/// being non-zero when the counter is missing.
pub(super) fn oom_kills(dir: &Path) -> u64 {
    let text = fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
    if text.contains("oom_kill ") {
        return keyed(&dir.join("memory.oom_control"), "oom_kill");
    }
    fs::read_to_string(dir.join("memory.failcnt"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |n| u64::from(n > 0))
}

pub(super) fn set_pids(dir: &Path, max: Option<u64>) -> Result<()> {
    write(
        &dir.join("pids.max"),
        &max.map_or("max".to_string(), |n| n.to_string()),
    )
}

pub(super) fn set_cpu(dir: &Path, quota_us: Option<u64>, period_us: u64) -> Result<()> {
    write(&dir.join("cpu.cfs_period_us"), &period_us.to_string())?;
    write(
        &dir.join("cpu.cfs_quota_us"),
        &quota_us.map_or("-1".to_string(), |q| q.to_string()),
    )
}

pub(super) fn read_cpu(dir: &Path) -> Result<Option<(u64, u64)>> {
    let rd = |f: &str| -> Result<i64> {
        let p = dir.join(f);
        let s = fs::read_to_string(&p)
            .map_err(|e| RuntimeError::io(format!("read {}", p.display()), e))?;
        s.trim()
            .parse()
            .map_err(|_| RuntimeError::Protocol(format!("{}: {s:?}", p.display())))
    };
    let (q, p) = (rd("cpu.cfs_quota_us")?, rd("cpu.cfs_period_us")?);
    Ok((q >= 0).then_some((q as u64, p as u64)))
}
