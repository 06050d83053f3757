//! Progress of long operations, handed to a caller's callback so the CLI can
//! draw a spinner or print lines, and a server can log it.

use std::time::Duration;

/// One step of a long operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Time since the operation started (monotonic).
    pub elapsed: Duration,
    /// One human line: a debootstrap output line, "layer 2/5 applied", ...
    pub message: String,
}
