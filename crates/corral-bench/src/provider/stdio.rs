//! A sandbox kept alive as one long-running `/bin/sh` inside it, fed commands
//! on its standard input. This is how the local baselines (bubblewrap,
//! podman) get an "exec into a running sandbox" comparable to Corral's exec:
//! the sandbox is set up once (namespaces, mounts, container), then each
//! command is a fork/exec inside it, its output read back up to a marker line
//! carrying the exit code.
//!
//! The keeper prints a ready marker first, so "created" means the sandbox's
//! own shell runs inside it, not merely that the tool was spawned.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Mutex;

use super::{BoxFuture, ExecResult, ProviderError, Sandbox};
use crate::record::FailureClass;

/// Printed by the keeper once it runs inside the sandbox.
pub const READY_MARKER: &str = "__corral_bench_ready__";
/// Precedes the exit code after each command's output.
const END_MARKER: &str = "__corral_bench_end__";

/// The argv the sandbox tool should run inside the sandbox.
pub fn keeper_argv() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), format!("echo {READY_MARKER}; exec /bin/sh")]
}

/// Single-quotes `s` for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The line sent to the keeper for one command: its stdin is /dev/null (the
/// keeper's stdin is our channel), stderr joins stdout, then the marker.
pub fn command_line(argv: &[String]) -> String {
    let cmd: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!("{} </dev/null 2>&1; printf '\\n{END_MARKER} %d\\n' $?\n", cmd.join(" "))
}

struct Io {
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

pub struct StdioSandbox {
    id: String,
    child: Mutex<Child>,
    io: Mutex<Io>,
}

impl StdioSandbox {
    /// Spawns `cmd` (which must run [`keeper_argv`] in the sandbox) and waits
    /// for the ready marker.
    pub async fn spawn(id: String, mut cmd: tokio::process::Command, timeout: Duration) -> Result<Self, ProviderError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // If the benchmark dies (or exits while a create is in flight), the
        // sandbox tool dies with it instead of lingering as an orphan.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ProviderError::new(FailureClass::StartFailed, format!("spawn: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ProviderError::new(FailureClass::Other, "no pipes to the keeper"));
        };
        let stderr = child.stderr.take();
        let mut io = Io { stdin: Some(stdin), stdout: BufReader::new(stdout) };
        let mut line = String::new();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                line.clear();
                match io.stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if line.trim() == READY_MARKER => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        match waited {
            Ok(true) => Ok(StdioSandbox { id, child: Mutex::new(child), io: Mutex::new(io) }),
            Ok(false) => {
                let _ = child.kill().await;
                let err = match stderr {
                    Some(mut e) => {
                        let mut s = String::new();
                        let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut s).await;
                        s
                    }
                    None => String::new(),
                };
                Err(ProviderError::new(FailureClass::StartFailed, format!("sandbox exited before ready: {}", err.trim())))
            }
            Err(_) => Err(ProviderError::new(FailureClass::Timeout, format!("not ready within {timeout:?}"))),
        }
    }

    async fn run(&self, argv: &[String]) -> Result<ExecResult, ProviderError> {
        let mut io = self.io.lock().await;
        let lost = |e: String| ProviderError::new(FailureClass::Lost, e);
        let stdin = io.stdin.as_mut().ok_or_else(|| lost("sandbox is being destroyed".into()))?;
        stdin.write_all(command_line(argv).as_bytes()).await.map_err(|e| lost(format!("write: {e}")))?;
        stdin.flush().await.map_err(|e| lost(format!("write: {e}")))?;
        let mut out = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = io.stdout.read_line(&mut line).await.map_err(|e| lost(format!("read: {e}")))?;
            if n == 0 {
                return Err(lost("sandbox exited".into()));
            }
            if let Some(code) = line.trim_end().strip_prefix(END_MARKER) {
                let exit_code = code.trim().parse().unwrap_or(-1);
                // The marker's leading newline ended the command's last line.
                let stdout = out.strip_suffix('\n').unwrap_or(&out).to_string();
                return Ok(ExecResult { exit_code, stdout });
            }
            out.push_str(&line);
        }
    }
}

impl Sandbox for StdioSandbox {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn exec<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<ExecResult, ProviderError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.run(argv)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::new(FailureClass::Timeout, format!("no answer within {timeout:?}"))),
            }
        })
    }

    /// Closes the keeper's stdin (its shell exits, so does the sandbox) and
    /// waits; kills it if it lingers.
    fn destroy<'a>(&'a self, timeout: Duration) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            drop(self.io.lock().await.stdin.take());
            let mut child = self.child.lock().await;
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(ProviderError::new(FailureClass::Other, format!("wait: {e}"))),
                Err(_) => {
                    let _ = child.kill().await;
                    Err(ProviderError::new(FailureClass::Timeout, format!("still running after {timeout:?}; killed")))
                }
            }
        })
    }
}
