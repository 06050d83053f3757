//! Running one command with a timeout, stdin, and capped output capture.
//!
//! The command leads a process group of its own, so a timeout kills it and
//! everything it started. Output beyond the cap is read and discarded, so a
//! chatty command never blocks on a full pipe.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{DriverError, ExecOutput};

/// Each of stdout and stderr keeps at most this much.
pub const OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// After the command exits, how long to keep reading output that something
/// it left in the background may still be holding open. Generous on purpose:
/// on a loaded host the reader may not even be scheduled for a while, and a
/// short grace dropped output the command had written (found by `corral
/// bench` with 1,000 sandboxes on 2 cores). Only a command that leaves a
/// background process holding its stdout pays it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What to run, fully resolved.
pub struct Prepared<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
}

/// Runs the command. `on_spawn` gets its pid (= process group) once it runs.
pub async fn run(p: Prepared<'_>, on_spawn: impl FnOnce(i32)) -> Result<ExecOutput, DriverError> {
    let started = Instant::now();
    let mut cmd = Command::new(p.program);
    cmd.args(p.args)
        .env_clear()
        .envs(p.env)
        .current_dir(p.cwd)
        .process_group(0)
        .stdin(if p.stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(p.program, e))?;
    let pid = child.id().map(|id| id as i32).unwrap_or(0);
    on_spawn(pid);
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = p.stdin;
        // A command that does not read its input closes the pipe: not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let out = Capture::start(child.stdout.take());
    let err = Capture::start(child.stderr.take());
    let (status, timed_out) = tokio::select! {
        st = child.wait() => (st, false),
        _ = tokio::time::sleep(p.timeout) => {
            // Not reaped yet, so the pid (and group) is still this command's.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            (child.wait().await, true)
        }
    };
    let status = status.map_err(|e| DriverError::io("wait for command", e))?;
    let (stdout, stderr) = tokio::join!(out.finish(), err.finish());
    Ok(ExecOutput {
        exit_code: exit_code(status),
        stdout,
        stderr,
        duration: started.elapsed(),
        timed_out,
    })
}

fn spawn_error(program: &Path, e: std::io::Error) -> DriverError {
    let name = program.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => DriverError::Missing(format!("cannot run {name}: {e}")),
        _ => DriverError::InvalidArgument(format!("cannot run {name}: {e}")),
    }
}

/// The shell convention: the exit code, or 128+N for death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// Reads one pipe in the background into a capped buffer.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 64 * 1024];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let mut b = buf.lock();
                    let room = OUTPUT_CAP.saturating_sub(b.len());
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
            })
        });
        Capture { buf, task }
    }

    /// Waits a little for the pipe to reach end of file, then takes what was read.
    async fn finish(mut self) -> Vec<u8> {
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(DRAIN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        std::mem::take(&mut *self.buf.lock())
    }
}
