//! Errors of the runtime. One enum for the whole crate so callers (the
//! dataplane driver) can map each kind to a sandbox end reason or an API error.

use std::io;

/// Everything that can go wrong while creating, driving or tearing down a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The sandbox id is not known to this runtime (and not found in its state dir).
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// A sandbox with this id already exists.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    /// The request is malformed (bad id, bad path, empty argv, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file or program named by the request does not exist inside the sandbox.
    #[error("{0}")]
    Missing(String),
    /// This host cannot run the runtime (not root, a kernel feature is missing).
    #[error("unsupported host: {0}")]
    Unsupported(String),
    /// The sandbox init reported an error while setting the sandbox up.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// The spawner process is gone or answered something unexpected.
    #[error("spawner: {0}")]
    Spawner(String),
    /// The init of a sandbox answered something unexpected or hung up.
    #[error("init protocol: {0}")]
    Protocol(String),
    /// No free uid/gid slot is left for a new sandbox.
    #[error("no free id-map slot (all {0} in use)")]
    NoSlot(u32),
    /// Every /30 of the `nat` range is taken by a live sandbox.
    #[error("no free network slot (all {slots} of {range} in use)")]
    NoNetSlot { slots: u32, range: String },
    /// An operating system call failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl RuntimeError {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        RuntimeError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a nix errno with a short description.
    pub fn errno(what: impl Into<String>, e: nix::errno::Errno) -> Self {
        RuntimeError::Io {
            what: what.into(),
            source: io::Error::from(e),
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
