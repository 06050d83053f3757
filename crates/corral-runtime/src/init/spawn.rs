//! Starting an exec'd command without copying the init.
//!
//! `fork` copies the init's page tables, both processes then pay a page copy
//! on their first write to any page, and the child's `execve` throws its copy
//! away — most of an exec's cost besides the program itself. Here the child
//! is cloned with `CLONE_VM | CLONE_VFORK`, as `posix_spawn` does: it borrows
//! the init's memory and the init is suspended until the child has called
//! `execve` (or died). `posix_spawn` itself cannot become a session leader
//! with a fresh OOM score, other ids and a Landlock domain, so we do the same
//! by hand.
//!
//! Invariants that make this sound:
//! - everything the child needs (paths, argv, envp, fds, the Landlock
//!   ruleset) is prepared before the clone, so between clone and `execve` the
//!   child makes only system calls on its own stack: no allocation, no
//!   locks, and its only write to the shared memory is its error report
//!   (so other threads, were there any, could not be disturbed);
//! - id changes are raw system calls: glibc's `setresuid` would try to
//!   broadcast the change to the init's thread list;
//! - all signals are blocked across the clone, and the child resets every
//!   signal to its default before unblocking, so no init handler ever runs
//!   on the child's stack.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack. Its few system calls need little; glibc's
/// `posix_spawn` uses about as much.
const STACK_BYTES: usize = 64 << 10;

/// A command ready to start: every string already a C string.
pub(crate) struct Launch {
    /// What `execve` gets (the resolved path).
    path: CString,
    /// For messages.
    program: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    uid: Option<u32>,
    gid: Option<u32>,
    /// A Landlock ruleset to enforce on the child (built by the caller).
    landlock: Option<OwnedFd>,
}

/// A started command: its pid and the init's ends of its stdio pipes.
pub(crate) struct Child {
    pub pid: i32,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The steps the child takes, in order; a failure reports which one.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Stdio = 1,
    Session,
    Chdir,
    Ids,
    Landlock,
    Exec,
}

impl Step {
    fn from_code(code: i32) -> &'static str {
        match code {
            1 => "redirect stdio",
            2 => "setsid",
            3 => "chdir",
            4 => "switch user",
            5 => "landlock",
            _ => "execve",
        }
    }
}

/// What the child sees: the launch, its three pipe ends, and where it writes
/// its error (step and errno) if it cannot exec.
struct ChildArgs<'a> {
    launch: &'a Launch,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdio: [RawFd; 3],
    failed_step: AtomicI32,
    errno: AtomicI32,
}

impl Launch {
    /// Resolves `program` like `execvp` against the `PATH` in `env` (a name
    /// without `/`), relative to `cwd`.
    pub fn new(
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        cwd: &str,
        (uid, gid): (Option<u32>, Option<u32>),
        landlock: Option<OwnedFd>,
    ) -> io::Result<Launch> {
        let path = resolve(program, env.get("PATH").map_or("", String::as_str), cwd)?;
        let argv = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(cstring)
            .collect::<io::Result<_>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect::<io::Result<_>>()?;
        Ok(Launch {
            path: CString::new(path.as_os_str().as_bytes()).map_err(nul)?,
            program: program.to_string(),
            argv,
            envp,
            cwd: cstring(cwd)?,
            uid,
            gid,
            landlock,
        })
    }

    /// Starts the command with fresh pipes on its stdin, stdout and stderr.
    pub fn spawn(&self) -> io::Result<Child> {
        let (stdin_child, stdin) = pipe()?;
        let (stdout, stdout_child) = pipe()?;
        let (stderr, stderr_child) = pipe()?;
        let mut args = ChildArgs {
            launch: self,
            argv: null_terminated(&self.argv),
            envp: null_terminated(&self.envp),
            stdio: [
                stdin_child.as_raw_fd(),
                stdout_child.as_raw_fd(),
                stderr_child.as_raw_fd(),
            ],
            failed_step: AtomicI32::new(0),
            errno: AtomicI32::new(0),
        };
        // Never read, so left uninitialised: no page is touched in vain.
        let mut stack: Vec<u8> = Vec::with_capacity(STACK_BYTES);
        // SAFETY: the stack outlives the child's use of it (CLONE_VFORK: we
        // resume only once the child has exec'd or exited); `args` likewise.
        let pid = with_signals_blocked(|| unsafe {
            let top = stack.as_mut_ptr().add(STACK_BYTES);
            let top = (top as usize & !15) as *mut libc::c_void;
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::addr_of_mut!(args).cast(),
            )
        });
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        let step = args.failed_step.load(Ordering::Acquire);
        if step != 0 {
            // The child has exited; the init's reaper collects it.
            let e = io::Error::from_raw_os_error(args.errno.load(Ordering::Acquire));
            let what = Step::from_code(step);
            return Err(io::Error::new(
                e.kind(),
                format!("{what} for {}: {e}", self.program),
            ));
        }
        Ok(Child {
            pid,
            stdin,
            stdout,
            stderr,
        })
    }
}

/// The child, between clone and exec: system calls only (see the module doc).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and not touched by the
    // parent until we exec or exit.
    let a = unsafe { &*(arg as *const ChildArgs) };
    let l = a.launch;
    let fail = |step: Step| -> libc::c_int {
        a.errno.store(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
            Ordering::Release,
        );
        a.failed_step.store(step as i32, Ordering::Release);
        // SAFETY: leaves the child without running any exit handler.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: plain system calls on the child's own descriptors, ids and
    // signal table (not shared: no CLONE_FILES or CLONE_SIGHAND).
    unsafe {
        for (target, fd) in a.stdio.iter().enumerate() {
            // The pipe ends are above 2 (see `pipe`), so dup2 always copies
            // and the copy is not close-on-exec.
            if libc::dup2(*fd, target as RawFd) < 0 {
                return fail(Step::Stdio);
            }
        }
        if libc::setsid() < 0 {
            return fail(Step::Session);
        }
        // The init is -1000 (never chosen); its commands are ordinary.
        let oom = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if oom >= 0 {
            libc::write(oom, b"0".as_ptr().cast(), 1);
            libc::close(oom);
        }
        if libc::chdir(l.cwd.as_ptr()) < 0 {
            return fail(Step::Chdir);
        }
        if let Some(g) = l.gid {
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, g, g, g) != 0
            {
                return fail(Step::Ids);
            }
        }
        if let Some(u) = l.uid {
            if libc::syscall(libc::SYS_setresuid, u, u, u) != 0 {
                return fail(Step::Ids);
            }
        }
        if let Some(ruleset) = &l.landlock {
            if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) != 0 {
                return fail(Step::Landlock);
            }
        }
        reset_signals();
        libc::execve(l.path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
    }
    fail(Step::Exec)
}

/// In the child: every signal back to its default disposition (a handler of
/// the init must never run here, and nothing the init or its ancestors
/// ignored — `SIGPIPE`, glibc's internal ones — stays ignored), then nothing
/// blocked. Raw `rt_sigaction`, as glibc refuses its internal signals.
unsafe fn reset_signals() {
    // The kernel's `struct sigaction`, all zero: SIG_DFL, no flags, no mask.
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8,
            );
        }
    }
    let empty = 0u64;
    libc::syscall(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        &empty as *const u64,
        std::ptr::null_mut::<u64>(),
        8,
    );
}

/// Runs `f` with every signal blocked in the init, restoring the mask after.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset manipulation on local values and our own mask.
    unsafe {
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

/// Where `execvp` would find `program`: as given if it has a `/`, else the
/// first executable regular file named so in a `PATH` directory.
fn resolve(program: &str, path: &str, cwd: &str) -> io::Result<std::path::PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "empty program name",
        ));
    }
    if program.contains('/') {
        return Ok(program.into());
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(cwd).join(dir).join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{program} not found in PATH"),
    ))
}

fn is_executable_file(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid C string.
    let exec_ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    exec_ok && p.metadata().is_ok_and(|m| m.is_file())
}

/// A pipe as (read end, write end), both close-on-exec and above fd 2.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// An fd numbered 3 or more (an init with a closed stdin could get 0).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(nul)
}

fn nul(_: std::ffi::NulError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a NUL byte in the command, its env or cwd",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        assert_eq!(resolve("/bin/sh", "", "/").unwrap(), Path::new("/bin/sh"));
        assert_eq!(resolve("./x", "/bin", "/").unwrap(), Path::new("./x"));
        assert_eq!(
            resolve("sh", "/nonexistent:/bin", "/").unwrap(),
            Path::new("/bin/sh")
        );
        let missing = resolve("no-such-program-here", "/bin:/usr/bin", "/").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // A directory of that name is not a program.
        assert!(resolve("bin", "/", "/").is_err());
    }

    #[test]
    fn nul_bytes_are_refused() {
        let env = BTreeMap::from([("A".to_string(), "x\0y".to_string())]);
        let e = Launch::new("/bin/true", &[], &env, "/", (None, None), None)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_command_runs_with_its_pipes_and_cwd() {
        let env = BTreeMap::from([
            ("PATH".to_string(), "/bin:/usr/bin".to_string()),
            ("X".to_string(), "1".to_string()),
        ]);
        let args = [
            "-c".to_string(),
            "pwd; echo $X; cat; echo err >&2".to_string(),
        ];
        let l = Launch::new("sh", &args, &env, "/tmp", (None, None), None).unwrap();
        let c = l.spawn().unwrap();
        let mut stdin = std::fs::File::from(c.stdin);
        std::io::Write::write_all(&mut stdin, b"in\n").unwrap();
        drop(stdin);
        let out = std::io::read_to_string(std::fs::File::from(c.stdout)).unwrap();
        let err = std::io::read_to_string(std::fs::File::from(c.stderr)).unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(c.pid, &mut status, 0) }, c.pid);
        assert_eq!(
            (out.as_str(), err.as_str(), libc::WEXITSTATUS(status)),
            ("/tmp\n1\nin\n", "err\n", 0)
        );
    }

    #[test]
    fn a_failed_step_says_which() {
        let l = Launch::new(
            "/bin/true",
            &[],
            &BTreeMap::new(),
            "/no/such/dir",
            (None, None),
            None,
        )
        .unwrap();
        let e = l.spawn().err().unwrap();
        assert!(e.to_string().starts_with("chdir for /bin/true"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
