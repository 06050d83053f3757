//! How sandboxes are actually run. The rest of the dataplane (cursor, poll
//! loop, events, adoption) is the same for every driver; a driver only knows
//! how to start, find, stop and reach into one sandbox.
//!
//! Today there is [`process::ProcessDriver`] (no isolation, for development).
//! A strongly isolated native runtime and a `sim` driver that starts nothing
//! (for scheduler benchmarks) plug in through the same trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use corral_core::SandboxSpec;

pub mod exec;
pub mod paths;
pub mod claims;
pub mod native;
pub mod process;
pub mod procfs;
pub mod sim;

/// A boxed future, so the trait stays object safe (`Arc<dyn Driver>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No such sandbox is running under this driver.
    #[error("sandbox {0} is not running on this host")]
    NotFound(String),
    /// A file or program the request names does not exist.
    #[error("{0}")]
    Missing(String),
    /// The request cannot be satisfied as asked (bad path, program not runnable, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// The driver cannot do this (e.g. warm pools on a driver without them).
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DriverError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How a sandbox ended on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// A short description ("keeper exit status 0", "init killed by signal 9", …).
    pub message: String,
    /// The out-of-memory killer ended it.
    pub oom_killed: bool,
}

impl Exit {
    pub fn plain(message: impl Into<String>) -> Self {
        Exit { message: message.into(), oom_killed: false }
    }
}

/// A started (or adopted) sandbox.
pub struct Started {
    /// Resolves when the sandbox ends, for whatever reason.
    pub exited: BoxFuture<'static, Exit>,
}

/// A process that an earlier dataplane left behind on this data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub sandbox_id: String,
    pub pid: i32,
    /// The sandbox's keeper (its lifetime), as opposed to something exec'd in it.
    pub keeper: bool,
}

/// One command to run inside a sandbox.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Request env, layered over the sandbox's own env.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox ("" = its root).
    pub cwd: String,
    pub timeout: Duration,
    pub stdin: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code, or 128+N when killed by signal N.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
    pub timed_out: bool,
}

/// One piece of a streamed exec; `Exit` is always last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The exit; its `stdout` and `stderr` are empty (they were streamed).
    Exit(ExecOutput),
}

/// Chunks of a running exec. Dropping it kills the command.
pub type ExecChunks = tokio::sync::mpsc::Receiver<Result<ExecChunk, DriverError>>;

pub trait Driver: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Starts a sandbox. Called at most once per id over the life of the
    /// data dir (the caller makes sure of that).
    fn start<'a>(
        &'a self,
        id: &'a str,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<Started, DriverError>>;

    /// Live sandboxes an earlier dataplane left on this data dir.
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, DriverError>>;

    /// Takes over a discovered keeper of a known sandbox.
    fn adopt(&self, id: &str, found: &Discovered) -> Result<Started, DriverError>;

    /// Kills a discovered process that belongs to nothing the dataplane knows.
    fn kill_stray(&self, found: &Discovered);

    /// Kills the sandbox and everything running in it. Its `exited` future
    /// resolves once it is gone.
    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Removes what is left of a stopped or ended sandbox (its files).
    fn remove(&self, id: &str) -> Result<(), DriverError>;

    fn exec<'a>(
        &'a self,
        id: &'a str,
        spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecOutput, DriverError>>;

    /// Runs a command and streams its output. Drivers that cannot stream
    /// inherit this: run it to the end, then hand out the whole output.
    fn exec_stream<'a>(
        &'a self,
        id: &'a str,
        spec: &'a SandboxSpec,
        req: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecChunks, DriverError>> {
        Box::pin(async move {
            let mut out = self.exec(id, spec, req).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(3);
            let (stdout, stderr) = (std::mem::take(&mut out.stdout), std::mem::take(&mut out.stderr));
            for chunk in [ExecChunk::Stdout(stdout), ExecChunk::Stderr(stderr)] {
                if !matches!(&chunk, ExecChunk::Stdout(b) | ExecChunk::Stderr(b) if b.is_empty()) {
                    let _ = tx.send(Ok(chunk)).await;
                }
            }
            let _ = tx.send(Ok(ExecChunk::Exit(out))).await;
            Ok(rx)
        })
    }

    fn read_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, DriverError>>;

    /// Writes a file (creating parent directories); `mode` 0 means 0644.
    fn write_file<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
        content: Vec<u8>,
        mode: u32,
    ) -> BoxFuture<'a, Result<(), DriverError>>;

    // ---- Warm pools. A pool member is a sandbox created ahead of time for a
    // template, with no tenant yet; it has its own id, distinct from any
    // sandbox id. Drivers without pools inherit these ("not supported") and
    // the dataplane then cold-starts everything.

    /// Whether [`Driver::prewarm`] works on this driver.
    fn supports_pools(&self) -> bool {
        false
    }

    /// Pre-creates a ready, unclaimed sandbox of `template` (everything a
    /// start does that does not depend on the tenant) and health-checks it.
    /// Returns the new member's id.
    fn prewarm<'a>(&'a self, template: &'a str) -> BoxFuture<'a, Result<String, DriverError>> {
        let _ = template;
        Box::pin(async { Err(DriverError::Unsupported(format!("the {} driver has no warm pools", self.name()))) })
    }

    /// Turns a ready member into sandbox `sandbox_id`: binds the id, applies
    /// the spec's limits and env. From then on every call names the sandbox
    /// by `sandbox_id` (the driver translates), including after a dataplane
    /// restart. On error the member is unusable and should be discarded.
    fn claim<'a>(
        &'a self,
        member: &'a str,
        sandbox_id: &'a str,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<Started, DriverError>> {
        let _ = (member, sandbox_id, spec);
        Box::pin(async { Err(DriverError::Unsupported(format!("the {} driver has no warm pools", self.name()))) })
    }

    /// Whether sandbox `id` runs on a pool member it claimed (so that a
    /// restarted dataplane counts an adopted claim as `allocated`).
    fn was_claimed(&self, _id: &str) -> bool {
        false
    }

    /// Destroys an unclaimed member.
    fn discard<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        let _ = member;
        Box::pin(async { Ok(()) })
    }

    /// Unclaimed members an earlier dataplane left behind (they are not in
    /// [`Driver::discover`]).
    fn discover_members(&self) -> BoxFuture<'_, Result<Vec<String>, DriverError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Network slots left for `nat` sandboxes (0: the driver or the host
    /// does not offer the mode). Reported with every heartbeat.
    fn free_net_slots(&self) -> u32 {
        0
    }

    /// The dataplane is exiting: undo host-wide setup nothing needs any more.
    fn on_shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
