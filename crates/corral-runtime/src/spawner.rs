//! The single-threaded spawner.
//!
//! Forking a multi-threaded (tokio) process is unsafe: only the forking thread
//! survives in the child, with whatever locks the others held. So the runtime
//! never forks itself except to exec at once: [`Runtime::new`](crate::Runtime::new)
//! re-executes its own binary with the [`SPAWNER_ARG`] marker as argv\[1\].
//! That binary must call [`maybe_run_spawner`] first thing in `main`, before
//! any thread exists; the call then never returns: it runs [`run`], a plain
//! `poll` loop on one thread.
//!
//! The spawner reads [`SpawnerRequest`] lines on its stdin (a unix socket to
//! the runtime) and, for each, binds the init's socket, `clone`s a child into
//! fresh user/pid/mount/net/uts/ipc namespaces, writes its id maps, puts it in
//! its cgroups, id-maps its template layers ([`crate::idmap::idmapped_layers`])
//! and only then releases it (a byte, with the layer fds, on a socketpair). The child becomes
//! the sandbox's PID 1 ([`crate::init`]); no exec, so no binary is needed in
//! the image. The spawner reaps its children and reports
//! [`SpawnerMessage::Exited`]. It exits when the runtime closes the socket;
//! running inits are left alone (a restarted runtime adopts them).

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::protocol::{SpawnRequest, SpawnerMessage, SpawnerRequest};
use crate::spawner_client::renice;

/// argv\[1\] that turns a process into the spawner.
pub const SPAWNER_ARG: &str = "__corral-spawner";

/// Call first thing in `main`, before any thread (tokio runtime, logger
/// thread, …) is started. If this process was started as the spawner it runs
/// the spawner and exits; otherwise it returns at once and does nothing.
pub fn maybe_run_spawner() {
    if std::env::args_os().nth(1).is_some_and(|a| a == SPAWNER_ARG) {
        let code = run();
        std::process::exit(code);
    }
}

/// Namespaces every sandbox gets at clone time. The cgroup namespace is
/// unshared by the init itself once the spawner has moved it into its cgroup,
/// so the sandbox's cgroup becomes the namespace root.
pub(crate) const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

/// The spawner's main loop. Returns the process exit code.
fn run() -> i32 {
    // Sockets and files we create are for root only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Compiled once here; every init inherits the programs through fork.
    crate::seccomp::precompile();
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if mask.thread_block().is_err() {
        return 2;
    }
    let Ok(sigfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return 2;
    };
    // SAFETY: fd 0 is the socket the runtime handed us as stdin; we own it from here on.
    let mut sock = unsafe { UnixStream::from_raw_fd(0) };
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 2,
        }
        let sock_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let sig_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if sig_ready {
            while sigfd.read_signal().ok().flatten().is_some() {}
            if reap(&mut sock).is_err() {
                return 0;
            }
        }
        if sock_ready && !read_requests(&mut sock, &mut buf) {
            let _ = reap(&mut sock);
            return 0;
        }
    }
}

/// Reads what is available and serves every complete line. False on EOF or error.
fn read_requests(sock: &mut UnixStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 << 10];
    let n = match sock.read(&mut chunk) {
        Ok(0) | Err(_) => return false,
        Ok(n) => n,
    };
    buf.extend_from_slice(&chunk[..n]);
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        let reply = match serde_json::from_slice::<SpawnerRequest>(&line) {
            Ok(req) => {
                let res = spawn(&req.spawn);
                SpawnerMessage::Spawned {
                    seq: req.seq,
                    pid: res.as_ref().ok().copied(),
                    error: res.err(),
                }
            }
            Err(e) => SpawnerMessage::Spawned {
                seq: 0,
                pid: None,
                error: Some(format!("bad request: {e}")),
            },
        };
        if send(sock, &reply).is_err() {
            return false;
        }
    }
    true
}

fn send(sock: &mut UnixStream, msg: &SpawnerMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    sock.write_all(&line)
}

/// Reaps every dead child and reports it.
fn reap(sock: &mut UnixStream) -> std::io::Result<()> {
    loop {
        let msg = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => SpawnerMessage::Exited {
                pid: pid.as_raw(),
                code: Some(code),
                signal: None,
            },
            Ok(WaitStatus::Signaled(pid, sig, _)) => SpawnerMessage::Exited {
                pid: pid.as_raw(),
                code: None,
                signal: Some(sig as i32),
            },
            Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
            Ok(_) => continue,
        };
        send(sock, &msg)?;
    }
}

/// Starts one sandbox init. Runs in the spawner; never blocks on the child.
fn spawn(req: &SpawnRequest) -> Result<i32, String> {
    let listener = bind(&req.socket)?;
    let (release_wr, release_rd) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: raw clone without CLONE_VM and with a null stack behaves like
    // fork(2): the child gets a copy of this (single-threaded) process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (CLONE_FLAGS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(release_wr);
        let code = crate::init::child_main(OwnedFd::from(listener), release_rd, &req.init);
        // SAFETY: leave without running the spawner's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let pid = pid as i32;
    drop(release_rd);
    drop(listener);
    if let Err(e) = prepare_child(pid, req) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        return Err(e);
    }
    // Best effort: on filesystems without id-mapped mounts the init falls
    // back to mounting the layer paths as they are.
    let layers = crate::idmap::idmapped_layers(pid, &req.init.lowers).unwrap_or_default();
    let fds: Vec<RawFd> = layers.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [socket::ControlMessage::ScmRights(&fds)];
    let cmsgs: &[socket::ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    // The child proceeds once it reads this byte (and the layer fds).
    socket::sendmsg::<()>(
        release_wr.as_raw_fd(),
        &[IoSlice::new(&[1u8])],
        cmsgs,
        socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("release init: {e}"))?;
    Ok(pid)
}

/// Host-side setup of a freshly cloned, still waiting child.
fn prepare_child(pid: i32, req: &SpawnRequest) -> Result<(), String> {
    crate::idmap::write_maps(pid, req.host_id_base, req.id_count)
        .map_err(|e| format!("write id maps: {e}"))?;
    // The init must survive an OOM in its sandbox to report and serve; the
    // processes it starts reset their score to 0.
    let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "-1000");
    unniced(|| {
        for procs in &req.cgroup_procs {
            std::fs::write(procs, pid.to_string())
                .map_err(|e| format!("join {}: {e}", procs.display()))?;
        }
        Ok(())
    })
}

/// Runs `f` at nice 0 if this spawner is niced (the background one). A cgroup
/// join holds a kernel lock that every fork and exit on the host waits for
/// (the threadgroup rwsem); held by a task at nice 19 on busy cores, it would
/// stall the very user work the niceness is meant to favour.
fn unniced<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: getpriority on this process; on Linux it returns the nice
    // value itself (-20..=19).
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice <= 0 {
        return f();
    }
    // Best effort: at worst the join runs niced.
    let _ = renice(0, 0);
    let out = f();
    let _ = renice(0, nice);
    out
}

fn bind(path: &Path) -> Result<UnixListener, String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove stale {}: {e}", path.display())),
    }
    let l = UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    debug_assert!(l.as_raw_fd() > 2);
    Ok(l)
}
