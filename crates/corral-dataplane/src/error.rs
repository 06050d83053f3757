//! The dataplane's error type. Only what stops the dataplane as a whole ends up
//! here; a single sandbox that fails to start is an event, not an error.

use std::path::PathBuf;

use crate::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cursor database cannot be read or written; without it the
    /// dataplane cannot promise to apply each command once, so it stops.
    #[error("cursor database: {0}")]
    Store(#[from] redb::Error),
    #[error("corrupt record for sandbox {id}: {source}")]
    CorruptRecord {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot bind the agent service on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server url {url:?}: {message}")]
    ServerUrl { url: String, message: String },
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    #[error("internal: {0}")]
    Internal(String),
    #[error("agent service: {0}")]
    Agent(#[from] tonic::transport::Error),
}

impl DataplaneError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataplaneError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Every redb error kind converts into the umbrella `redb::Error`; these let
/// `?` work on each call site without spelling the conversion out.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DataplaneError {
            fn from(e: $t) -> Self {
                DataplaneError::Store(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
