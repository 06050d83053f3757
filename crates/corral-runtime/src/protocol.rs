//! Wire formats.
//!
//! * Runtime ⇄ spawner: one JSON object per line over a unix stream
//!   ([`SpawnerRequest`], [`SpawnerMessage`]). Small, infrequent messages.
//! * Runtime ⇄ init: binary frames over the init's unix socket, one request per
//!   connection: `[kind: u8][len: u32 LE][payload]`. The first frame is a JSON
//!   [`InitRequest`]; bulk bytes (stdin, file contents, output chunks) travel
//!   raw in `Data`/`Stdout`/`Stderr` frames so nothing is base64-encoded; the
//!   last frame is a JSON [`InitReply`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{BindMount, ExecExit};

/// Largest frame either side accepts (a bigger one is a protocol error).
pub const MAX_FRAME: usize = 16 << 20;
/// Size of the chunks bulk data is cut into.
pub const CHUNK: usize = 64 << 10;

/// Frame kinds on the init socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON [`InitRequest`] (client → init).
    Request = 1,
    /// A chunk of the exec'd command's stdout (init → client).
    Stdout = 2,
    /// A chunk of its stderr (init → client).
    Stderr = 3,
    /// Bulk bytes (stdin or file contents, either way); an empty one ends the stream.
    Data = 4,
    /// JSON [`InitReply`]: the last frame of an answer.
    Reply = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Stdout,
            3 => Kind::Stderr,
            4 => Kind::Data,
            5 => Kind::Reply,
            _ => return None,
        })
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = kind as u8;
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await
}

/// Writes a JSON frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    kind: Kind,
    v: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    write_frame(w, kind, &body).await
}

/// Writes `data` as `Data` frames followed by the empty end frame.
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    for chunk in data.chunks(CHUNK) {
        write_frame(w, Kind::Data, chunk).await?;
    }
    write_frame(w, Kind::Data, &[]).await
}

/// Reads one frame; `Ok(None)` on a clean EOF before its first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let kind =
        Kind::from_u8(head[0]).ok_or_else(|| bad(format!("unknown frame kind {}", head[0])))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes is too large")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

/// Reads `Data` frames until the empty one, refusing more than `limit` bytes.
pub async fn read_data<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match read_frame(r).await? {
            Some((Kind::Data, chunk)) if chunk.is_empty() => return Ok(out),
            Some((Kind::Data, chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(bad(format!("data larger than {limit} bytes")));
                }
                out.extend_from_slice(&chunk);
            }
            Some((k, _)) => return Err(bad(format!("expected data, got {k:?}"))),
            None => return Err(bad("connection closed inside data".to_string())),
        }
    }
}

/// Parses a JSON payload.
pub fn parse<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| bad(format!("bad json: {e}")))
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// A request to a sandbox's init.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum InitRequest {
    /// Liveness/readiness probe; answered once setup is complete.
    Ping,
    /// Run a command; stdin follows as `Data` frames.
    Exec(ExecRequest),
    /// Read a regular file; answered with `Data` frames then `Done`.
    ReadFile { path: String },
    /// Write a regular file (parents created); contents follow as `Data` frames.
    WriteFile { path: String, mode: u32 },
}

/// The wire form of an exec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    /// 0 = no timeout.
    pub timeout_ms: u64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The last frame of every answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum InitReply {
    /// Answer to `Ping`: the init is ready. `pid` is its pid inside (always
    /// 1); `setup_us` says how long each setup phase took (for diagnostics).
    Pong {
        pid: u32,
        #[serde(default)]
        setup_us: Vec<(String, u64)>,
    },
    /// An exec ended.
    Exit(ExecExit),
    /// A file operation succeeded.
    Done,
    /// The request failed. `missing` = the named file/program does not exist.
    Error { message: String, missing: bool },
}

/// Everything the init needs to build its sandbox; sent to the spawner, which
/// hands it to the forked child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub id: String,
    /// Host dir the private tmpfs (upper, work, merged root) is mounted on,
    /// inside the sandbox's own mount namespace only.
    pub mount_dir: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub binds: Vec<BindMount>,
    pub disk_mb: u32,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    #[serde(default)]
    pub landlock_writable: Option<Vec<String>>,
}

/// What the spawner must do to start one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Host uid/gid that the sandbox's id 0 maps to.
    pub host_id_base: u32,
    pub id_count: u32,
    /// Where to bind the init's listening socket (host path).
    pub socket: PathBuf,
    /// `cgroup.procs` files the init's pid is written to before it runs.
    pub cgroup_procs: Vec<PathBuf>,
    pub init: InitConfig,
}

/// Runtime → spawner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnerRequest {
    pub seq: u64,
    pub spawn: SpawnRequest,
}

/// Spawner → runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum SpawnerMessage {
    /// Answer to request `seq`: the init's host pid, or why it could not start.
    Spawned {
        seq: u64,
        pid: Option<i32>,
        error: Option<String>,
    },
    /// An init the spawner started has died and been reaped.
    Exited {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}
