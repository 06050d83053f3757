//! Running a command inside the sandbox and streaming its output.
//!
//! The command is started from the init without copying it (`init::spawn`) and
//! inherits everything that makes it sandboxed: namespaces, cgroup,
//! `no_new_privs`, the seccomp filter and the reduced bounding set. Before
//! its exec it becomes a session and process-group leader (so a timeout
//! kills the whole group), resets its OOM score (the init's is -1000) and
//! takes the requested ids and Landlock domain.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

use super::reaper::ChildExit;
use super::server::Init;
use super::spawn::Launch;
use crate::config::ExecExit;
use crate::protocol::{self, ExecRequest, InitReply, Kind, CHUNK};

/// Largest stdin accepted.
const MAX_STDIN: usize = 64 << 20;
/// After the command exits, output still in flight is read for this long
/// (background children that keep the pipes open do not hold the exec).
const DRAIN: Duration = Duration::from_millis(200);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kills the command's process group unless disarmed (client gone, error).
struct GroupGuard(i32, bool);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.1 {
            // SAFETY: kill with a negative pid signals the process group we created.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
}

pub(crate) async fn handle(
    conn: &mut UnixStream,
    req: ExecRequest,
    init: &Init,
) -> std::io::Result<()> {
    let stdin = protocol::read_data(conn, MAX_STDIN).await?;
    let Some(program) = req.argv.first() else {
        return reply_error(conn, "empty argv".into(), false).await;
    };
    let start = Instant::now();
    let child = match launch(program, &req, init).and_then(|l| l.spawn()) {
        Ok(c) => c,
        Err(e) => {
            let missing = e.kind() == std::io::ErrorKind::NotFound;
            return reply_error(conn, format!("cannot run {program}: {e}"), missing).await;
        }
    };
    let pid = child.pid;
    let exited = init.reaper.watch(pid);
    let mut guard = GroupGuard(pid, true);
    let stdin_pipe = pipe::Sender::from_owned_fd(child.stdin)?;
    let stdout = pipe::Receiver::from_owned_fd(child.stdout)?;
    let stderr = pipe::Receiver::from_owned_fd(child.stderr)?;
    let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
    let (status, timed_out) = pump(
        conn, stdin, stdin_pipe, stdout, stderr, exited, timeout, pid,
    )
    .await?;
    guard.1 = timed_out; // a finished command's background children may live on
    drop(guard);
    let exit = ExecExit {
        exit_code: status.exit_code(),
        signal: status.signal,
        timed_out,
        duration_ms: start.elapsed().as_millis() as u64,
    };
    protocol::write_json(conn, Kind::Reply, &InitReply::Exit(exit)).await
}

/// Prepares the command: env = defaults < sandbox env < request env.
fn launch(program: &str, req: &ExecRequest, init: &Init) -> std::io::Result<Launch> {
    let home = if req.uid.unwrap_or(0) == 0 {
        "/root"
    } else {
        "/"
    };
    let mut env = BTreeMap::from([
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), home.to_string()),
    ]);
    env.extend(init.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let landlock = match &init.landlock_writable {
        Some(paths) => crate::landlock::write_ruleset(paths).map_err(std::io::Error::other)?,
        None => None,
    };
    let ids = (req.uid, req.gid.or(req.uid));
    let cwd = resolve_cwd(&req.cwd, &init.workdir);
    Launch::new(program, &req.argv[1..], &env, &cwd, ids, landlock)
}

fn resolve_cwd(cwd: &str, workdir: &str) -> String {
    match cwd {
        "" => {
            if workdir.is_empty() {
                "/".into()
            } else {
                workdir.into()
            }
        }
        c if c.starts_with('/') => c.into(),
        c => Path::new(workdir).join(c).display().to_string(),
    }
}

/// Feeds stdin, forwards output chunks, waits for the exit (and the timeout).
#[allow(clippy::too_many_arguments)]
async fn pump(
    conn: &mut UnixStream,
    stdin: Vec<u8>,
    mut stdin_pipe: pipe::Sender,
    mut stdout: pipe::Receiver,
    mut stderr: pipe::Receiver,
    mut exited: tokio::sync::oneshot::Receiver<ChildExit>,
    timeout: Option<Duration>,
    pid: i32,
) -> std::io::Result<(ChildExit, bool)> {
    let feed = async move {
        let _ = stdin_pipe.write_all(&stdin).await;
    }; // dropping the sender closes stdin
    tokio::pin!(feed);
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let kill_at = timeout.map_or(far, |t| tokio::time::Instant::now() + t);
    // Filled through `read_buf`: no zeroing, and only the pages output
    // actually reaches are ever touched.
    let (mut ob, mut eb) = (Vec::with_capacity(CHUNK), Vec::with_capacity(CHUNK));
    let mut probe = [0u8; 64];
    let (mut out_open, mut err_open, mut fed, mut timed_out) = (true, true, false, false);
    let mut status: Option<ChildExit> = None;
    let mut drain_until = far;
    // The client sends nothing more; EOF on its side means it gave up (the
    // caller's guard then kills the command's group).
    let (mut client_rd, mut client_wr) = conn.split();
    while !(status.is_some() && !out_open && !err_open) {
        tokio::select! {
            _ = &mut feed, if !fed => fed = true,
            r = client_rd.read(&mut probe) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"));
                }
            }
            r = stdout.read_buf(&mut ob), if out_open => match r {
                Ok(n) if n > 0 => {
                    protocol::write_frame(&mut client_wr, Kind::Stdout, &ob).await?;
                    ob.clear();
                }
                _ => out_open = false,
            },
            r = stderr.read_buf(&mut eb), if err_open => match r {
                Ok(n) if n > 0 => {
                    protocol::write_frame(&mut client_wr, Kind::Stderr, &eb).await?;
                    eb.clear();
                }
                _ => err_open = false,
            },
            s = &mut exited, if status.is_none() => {
                status = Some(s.unwrap_or(ChildExit { code: None, signal: Some(libc::SIGKILL) }));
                drain_until = tokio::time::Instant::now() + DRAIN;
            }
            _ = tokio::time::sleep_until(kill_at), if !timed_out && status.is_none() => {
                // SAFETY: signals the process group the command leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                timed_out = true;
            }
            _ = tokio::time::sleep_until(drain_until), if status.is_some() => break,
        }
    }
    let status = status.unwrap_or(ChildExit {
        code: None,
        signal: Some(libc::SIGKILL),
    });
    Ok((status, timed_out))
}

async fn reply_error(conn: &mut UnixStream, message: String, missing: bool) -> std::io::Result<()> {
    protocol::write_json(conn, Kind::Reply, &InitReply::Error { message, missing }).await
}
