//! The one error type of this crate: every failure says what it was doing.

use std::io;
use std::path::Path;

pub type Result<T, E = TemplateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid template name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("template {0:?} not found")]
    NotFound(String),
    #[error("template {0:?} already exists (remove it first: corral template rm {0})")]
    AlreadyExists(String),
    #[error("template {0:?} is being built or removed by another process; try again when it is done")]
    Busy(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("bad template.json at {path}: {message}")]
    BadMeta { path: String, message: String },
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("digest mismatch for {what}: expected sha256:{expected}, got sha256:{actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("refusing {path:?} in {layer}: {reason}")]
    UnsafePath { layer: String, path: String, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("debootstrap failed: {0}")]
    Debootstrap(String),
    #[error("host template builder failed: {0}")]
    HostBuild(#[source] io::Error),
}

/// Attaches "what we were doing, on which path" to io errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|source| TemplateError::Io { context: format!("{what} {}", path.display()), source })
    }
}
