//! The sandbox's PID 1.
//!
//! Forked (cloned) from the spawner, so it is the same binary and needs
//! nothing inside the image. [`child_main`] waits until the spawner has
//! written its id maps and cgroups, finishes the sandbox from the inside
//! ([`setup`]), locks itself down, then serves its socket ([`server`]):
//! exec and file requests, zombie reaping ([`reaper`]), SIGTERM/SIGINT
//! forwarding. If setup fails it still answers the first request on its
//! socket with the error, then exits, so `create` reports why.
//!
//! Warm pools: everything up to and including "init ready" depends only on
//! the template, so a pool pre-creates it. A *claim* needs nothing from the
//! init: the host writes the cgroup limits (`Runtime::update_limits`), sets
//! the hostname by joining the UTS namespace from a host thread
//! (`Runtime::set_hostname`), and the caller layers the tenant's env into
//! every exec request. The init keeps no extra capability for it.

mod exec;
mod files;
mod phases;
mod reaper;
mod server;
mod spawn;

pub(crate) use self::phases::Phases;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::protocol::InitConfig;

/// Fd number the listening socket is moved to in the init.
const LISTEN_FD: i32 = 3;

/// Entry point of the cloned child; returns its exit code (never returns to
/// the spawner's loop).
pub(crate) fn child_main(listen: OwnedFd, release: OwnedFd, cfg: &InitConfig) -> i32 {
    let Some(layers) = wait_for_release(&release) else {
        return 1; // the spawner gave up on us
    };
    drop(release);
    // Keep the layer fds clear of the low numbers tidy_fds rearranges.
    let layers: Vec<OwnedFd> = layers
        .into_iter()
        .filter_map(|f| move_high(f).ok())
        .collect();
    let listen = match tidy_fds(listen, layers.iter().map(|f| f.as_raw_fd()).collect()) {
        Ok(l) => l,
        Err(_) => return 1,
    };
    let mut phases = Phases::start();
    let setup = setup(cfg, layers, &mut phases);
    if let Err(e) = &setup {
        tracing::debug!(id = %cfg.id, error = %e, "sandbox setup failed");
    }
    server::run(listen, cfg, setup, phases)
}

/// Blocks until the spawner releases us: one byte, plus the id-mapped layer
/// fds when it could make them. `None` if the spawner hung up instead.
fn wait_for_release(release: &OwnedFd) -> Option<Vec<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; crate::idmap::MAX_LAYERS]);
    let msg = recvmsg::<()>(
        release.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    if msg.bytes != 1 {
        return None;
    }
    let mut fds = Vec::new();
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS fds are new in this process and owned by us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Some(fds)
}

/// Re-numbers an fd to >= 64, so tidy_fds's dup2 onto 0..3 cannot clobber it.
fn move_high(fd: OwnedFd) -> Result<OwnedFd, ()> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we then own.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
    if high < 0 {
        return Err(());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// Keeps only the listening socket (as fd 3) and the layer fds, and points
/// 0/1/2 at /dev/null, so no host fd (the spawner's socket, the dataplane's
/// log) reaches the sandbox.
fn tidy_fds(listen: OwnedFd, keep: Vec<i32>) -> Result<OwnedFd, ()> {
    // SAFETY: dup2/close_range/open on fds this process owns; nothing else runs.
    unsafe {
        if listen.as_raw_fd() != LISTEN_FD {
            if libc::dup2(listen.as_raw_fd(), LISTEN_FD) < 0 {
                return Err(());
            }
            drop(listen);
        } else {
            std::mem::forget(listen);
        }
        close_all_but(LISTEN_FD + 1, &keep);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(());
        }
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
        let flags = libc::fcntl(LISTEN_FD, libc::F_GETFD);
        libc::fcntl(LISTEN_FD, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        Ok(OwnedFd::from_raw_fd(LISTEN_FD))
    }
}

/// Closes every fd from `from` up, except those in `keep`.
fn close_all_but(from: i32, keep: &[i32]) {
    let mut keep: Vec<i32> = keep.iter().copied().filter(|&k| k >= from).collect();
    keep.sort_unstable();
    let mut lo = from;
    for k in keep.into_iter().chain(std::iter::once(i32::MAX)) {
        if k > lo {
            // SAFETY: close_range over fds this process owns and no longer needs.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    lo as libc::c_uint,
                    (k - 1) as libc::c_uint,
                    0 as libc::c_uint,
                )
            };
        }
        lo = k.saturating_add(1);
    }
}

/// Everything the init does to itself before serving, in order.
fn setup(cfg: &InitConfig, layers: Vec<OwnedFd>, phases: &mut Phases) -> Result<(), String> {
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(|e| format!("unblock signals: {e}"))?;
    crate::namespaces::become_root()?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    crate::namespaces::enter_cgroup_ns()?;
    crate::namespaces::set_hostname(&cfg.id)?;
    phases.mark("ids, cgroupns, hostname");
    crate::mounts::build_root(cfg, layers, phases)?;
    crate::namespaces::loopback_up()?;
    crate::mounts::enter_workdir(&cfg.workdir)?;
    phases.mark("loopback, workdir");
    lock_down(phases)?;
    Ok(())
}

/// Drops what the init no longer needs, then installs the seccomp filter
/// (after its own mounts, which the filter forbids).
fn lock_down(phases: &mut Phases) -> Result<(), String> {
    // Not dumpable: sandboxed processes cannot open /proc/1/{mem,environ,fd/*}.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // No core dumps from the sandbox: a piped core_pattern runs its helper on
    // the host, and dumps would only fill the writable layer.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("RLIMIT_CORE: {e}"))?;
    crate::caps::restrict_bounding_set()?;
    phases.mark("capabilities");
    crate::seccomp::install()?;
    phases.mark("seccomp");
    Ok(())
}
