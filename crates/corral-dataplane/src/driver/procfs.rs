//! Finding and watching sandbox processes through `/proc` and pidfds.
//!
//! Every process the process driver starts carries two environment markers,
//! `CORRAL_DATAPLANE_DIR=<canonical data dir>` and `CORRAL_SANDBOX_ID=<id>`
//! (keepers also `CORRAL_KEEPER=1`). A restarted dataplane finds what its
//! predecessor left by scanning `/proc/*/environ` for its own data dir; the
//! markers survive the dataplane because they live in the processes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub const DIR_MARKER: &str = "CORRAL_DATAPLANE_DIR";
pub const ID_MARKER: &str = "CORRAL_SANDBOX_ID";
pub const KEEPER_MARKER: &str = "CORRAL_KEEPER";

/// A process carrying this data dir's markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pid: i32,
    pub sandbox_id: String,
    pub keeper: bool,
}

/// What the markers in one `environ` (NUL-separated) say, if it belongs to `dir`.
pub fn parse_environ(environ: &[u8], dir: &str) -> Option<(String, bool)> {
    let mut ours = false;
    let mut id = None;
    let mut keeper = false;
    for var in environ.split(|&b| b == 0) {
        let Ok(var) = std::str::from_utf8(var) else {
            continue;
        };
        let Some((k, v)) = var.split_once('=') else {
            continue;
        };
        match k {
            DIR_MARKER => ours = v == dir,
            ID_MARKER => id = Some(v.to_string()),
            KEEPER_MARKER => keeper = v == "1",
            _ => {}
        }
    }
    if ours {
        id.map(|id| (id, keeper))
    } else {
        None
    }
}

/// Every live process marked with `dir` (zombies have no environ and are skipped).
pub fn scan(dir: &str) -> std::io::Result<Vec<Marked>> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(m) = marked(pid, dir) {
            found.push(m);
        }
    }
    Ok(found)
}

/// The markers of one process, if it is one of `dir`'s.
pub fn marked(pid: i32, dir: &str) -> Option<Marked> {
    let environ = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?;
    let (sandbox_id, keeper) = parse_environ(&environ, dir)?;
    Some(Marked {
        pid,
        sandbox_id,
        keeper,
    })
}

/// SIGKILLs every process of `dir` that belongs to `sandbox_id` (all of them
/// when `None`), each with its process group. Returns how many were found.
pub fn kill_marked(dir: &str, sandbox_id: Option<&str>) -> usize {
    let Ok(found) = scan(dir) else { return 0 };
    let mut n = 0;
    for m in found
        .iter()
        .filter(|m| sandbox_id.is_none_or(|id| id == m.sandbox_id))
    {
        kill_tree(m.pid);
        n += 1;
    }
    n
}

/// SIGKILLs a process and, if it leads one, its process group.
pub fn kill_tree(pid: i32) {
    if nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok() == Some(Pid::from_raw(pid)) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Opens a pidfd: a handle on the process that cannot be confused with a
/// later process reusing its pid.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind a pidfd has exited (the fd polls readable).
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Resolves when the process behind the pidfd exits.
pub async fn wait_pidfd(fd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the AsyncFd takes ownership of the pidfd, so the fd stays open
    // and registered for exactly as long as the registration lives.
    let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
    let _guard = afd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_must_name_this_data_dir() {
        let env = b"PATH=/bin\0CORRAL_SANDBOX_ID=sb-1\0CORRAL_DATAPLANE_DIR=/d\0CORRAL_KEEPER=1\0";
        assert_eq!(parse_environ(env, "/d"), Some(("sb-1".to_string(), true)));
        assert_eq!(parse_environ(env, "/other"), None);
        let exec = b"CORRAL_DATAPLANE_DIR=/d\0CORRAL_SANDBOX_ID=sb-2\0";
        assert_eq!(parse_environ(exec, "/d"), Some(("sb-2".to_string(), false)));
        assert_eq!(parse_environ(b"CORRAL_DATAPLANE_DIR=/d\0", "/d"), None);
    }
}
