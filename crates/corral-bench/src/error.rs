//! Errors of the benchmark harness itself (not of the sandboxes it measures:
//! those end up in each record's `failure_class`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad data in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("provider {provider} cannot run here: {message}")]
    Unavailable { provider: String, message: String },
}

impl BenchError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io { what, path: path.into(), source }
    }
}
