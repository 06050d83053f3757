//! The runtime's side of the init socket: one connection per request.

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::config::{ExecExit, ExecOutput, ExecSpec};
use crate::error::{Result, RuntimeError};
use crate::protocol::{self, ExecRequest, InitReply, InitRequest, Kind};

/// Largest file `read_file` accepts.
const MAX_READ: usize = 256 << 20;

/// Bytes of stdout (and, separately, of stderr) `exec_buffered` keeps; a
/// sandbox printing without end must not exhaust the dataplane's memory.
pub const MAX_BUFFERED_OUTPUT: usize = 64 << 20;

/// Appends `chunk` up to the cap; true if anything was dropped.
fn append_capped(buf: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let room = MAX_BUFFERED_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    chunk.len() > room
}

async fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| RuntimeError::io(format!("connect {}", socket.display()), e))
}

fn proto(e: std::io::Error) -> RuntimeError {
    RuntimeError::Protocol(e.to_string())
}

/// Turns an error reply into the matching runtime error.
fn reply_error(message: String, missing: bool) -> RuntimeError {
    if missing {
        RuntimeError::Missing(message)
    } else {
        RuntimeError::Protocol(message)
    }
}

async fn expect_reply(conn: &mut UnixStream) -> Result<InitReply> {
    match protocol::read_frame(conn).await.map_err(proto)? {
        Some((Kind::Reply, body)) => protocol::parse(&body).map_err(proto),
        Some((k, _)) => Err(RuntimeError::Protocol(format!("unexpected {k:?} frame"))),
        None => Err(RuntimeError::Protocol("init closed the connection".into())),
    }
}

/// Waits until the init answers (its setup is done) or reports its setup error.
pub(crate) async fn ping(socket: &Path, timeout: Duration) -> Result<()> {
    let attempt = async {
        let mut conn = connect(socket).await?;
        protocol::write_json(&mut conn, Kind::Request, &InitRequest::Ping)
            .await
            .map_err(proto)?;
        match expect_reply(&mut conn).await {
            Ok(InitReply::Pong { setup_us, .. }) => {
                tracing::trace!(socket = %socket.display(), ?setup_us, "init ready");
                Ok(())
            }
            Ok(InitReply::Error { message, .. }) => Err(RuntimeError::Setup(message)),
            Ok(other) => Err(RuntimeError::Protocol(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(RuntimeError::Setup(format!("init died during setup ({e})"))),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| RuntimeError::Setup(format!("init did not answer within {timeout:?}")))?
}

/// One event of a running exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Always the last event.
    Exit(ExecExit),
}

/// A running exec: output chunks as they come, then the exit.
#[derive(Debug)]
pub struct ExecStream {
    conn: UnixStream,
    done: bool,
}

impl ExecStream {
    /// The next event; `Ok(None)` after the exit was returned. Dropping the
    /// stream early kills the command's process group.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        let frame = protocol::read_frame(&mut self.conn).await.map_err(proto)?;
        let event = match frame {
            Some((Kind::Stdout, b)) => ExecEvent::Stdout(b),
            Some((Kind::Stderr, b)) => ExecEvent::Stderr(b),
            Some((Kind::Reply, body)) => {
                self.done = true;
                match protocol::parse::<InitReply>(&body).map_err(proto)? {
                    InitReply::Exit(x) => ExecEvent::Exit(x),
                    InitReply::Error { message, missing } => {
                        return Err(reply_error(message, missing))
                    }
                    other => {
                        return Err(RuntimeError::Protocol(format!(
                            "unexpected reply {other:?}"
                        )))
                    }
                }
            }
            Some((k, _)) => return Err(RuntimeError::Protocol(format!("unexpected {k:?} frame"))),
            None => {
                return Err(RuntimeError::Protocol(
                    "init closed the exec stream (sandbox gone?)".into(),
                ))
            }
        };
        Ok(Some(event))
    }

    /// Collects everything into an [`ExecOutput`].
    pub async fn collect(mut self) -> Result<ExecOutput> {
        let (mut stdout, mut stderr, mut truncated) = (Vec::new(), Vec::new(), false);
        while let Some(ev) = self.next().await? {
            match ev {
                ExecEvent::Stdout(b) => truncated |= append_capped(&mut stdout, &b),
                ExecEvent::Stderr(b) => truncated |= append_capped(&mut stderr, &b),
                ExecEvent::Exit(x) => {
                    return Ok(ExecOutput {
                        exit_code: x.exit_code,
                        stdout,
                        stderr,
                        timed_out: x.timed_out,
                        duration: Duration::from_millis(x.duration_ms),
                        truncated,
                    })
                }
            }
        }
        Err(RuntimeError::Protocol(
            "exec stream ended without an exit".into(),
        ))
    }
}

pub(crate) async fn exec(socket: &Path, spec: ExecSpec) -> Result<ExecStream> {
    if spec.argv.is_empty() {
        return Err(RuntimeError::InvalidArgument("empty argv".into()));
    }
    let mut conn = connect(socket).await?;
    let req = ExecRequest {
        argv: spec.argv,
        env: spec.env,
        cwd: spec.cwd,
        timeout_ms: spec.timeout.map_or(0, |t| (t.as_millis() as u64).max(1)),
        uid: spec.uid,
        gid: spec.gid,
    };
    protocol::write_json(&mut conn, Kind::Request, &InitRequest::Exec(req))
        .await
        .map_err(proto)?;
    protocol::write_data(&mut conn, &spec.stdin)
        .await
        .map_err(proto)?;
    Ok(ExecStream { conn, done: false })
}

pub(crate) async fn read_file(socket: &Path, path: &str) -> Result<Vec<u8>> {
    let mut conn = connect(socket).await?;
    let req = InitRequest::ReadFile {
        path: path.to_string(),
    };
    protocol::write_json(&mut conn, Kind::Request, &req)
        .await
        .map_err(proto)?;
    let mut data = Vec::new();
    loop {
        match protocol::read_frame(&mut conn).await.map_err(proto)? {
            Some((Kind::Data, chunk)) => {
                if data.len() + chunk.len() > MAX_READ {
                    return Err(RuntimeError::InvalidArgument("file too large".into()));
                }
                data.extend_from_slice(&chunk);
            }
            Some((Kind::Reply, body)) => {
                return match protocol::parse::<InitReply>(&body).map_err(proto)? {
                    InitReply::Done => Ok(data),
                    InitReply::Error { message, missing } => Err(reply_error(message, missing)),
                    other => Err(RuntimeError::Protocol(format!(
                        "unexpected reply {other:?}"
                    ))),
                }
            }
            Some((k, _)) => return Err(RuntimeError::Protocol(format!("unexpected {k:?} frame"))),
            None => return Err(RuntimeError::Protocol("init closed the connection".into())),
        }
    }
}

pub(crate) async fn write_file(socket: &Path, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut conn = connect(socket).await?;
    let req = InitRequest::WriteFile {
        path: path.to_string(),
        mode,
    };
    protocol::write_json(&mut conn, Kind::Request, &req)
        .await
        .map_err(proto)?;
    protocol::write_data(&mut conn, data).await.map_err(proto)?;
    match expect_reply(&mut conn).await? {
        InitReply::Done => Ok(()),
        InitReply::Error { message, missing } => Err(reply_error(message, missing)),
        other => Err(RuntimeError::Protocol(format!(
            "unexpected reply {other:?}"
        ))),
    }
}
