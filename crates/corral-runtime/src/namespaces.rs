//! Steps the init takes inside its fresh namespaces (the spawner already
//! cloned it into user/pid/mount/net/uts/ipc ones and wrote its id maps).

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// Becomes uid/gid 0 of the user namespace (host `base` ids) with no
/// supplementary groups. Until this call the child still carries the
/// spawner's host-root credentials, which are unmapped inside.
pub(crate) fn become_root() -> Result<(), String> {
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("setresgid: {e}"))?;
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("setresuid: {e}"))
}

/// Enters a new cgroup namespace rooted at the sandbox's cgroup (the spawner
/// has moved us into it before releasing us), so `/proc/self/cgroup` shows
/// `/` and no host cgroup path leaks.
pub(crate) fn enter_cgroup_ns() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("unshare(CLONE_NEWCGROUP): {e}"))
}

/// Sets the UTS namespace's hostname (the sandbox id).
pub(crate) fn set_hostname(name: &str) -> Result<(), String> {
    nix::unistd::sethostname(name).map_err(|e| format!("sethostname: {e}"))
}

/// Brings up `lo` in the sandbox's network namespace; nothing else exists there.
pub(crate) fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(format!("bring up lo: {err}"));
        }
    }
    Ok(())
}
