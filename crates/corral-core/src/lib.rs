//! Corral's shared vocabulary.
//!
//! Everything here is plain data and pure functions: the sandbox model and its
//! state machine, the commands the server sends to dataplanes, request
//! validation, and the two sequencing rules both sides must agree on
//! ([`sequence`] for applying outbox commands in order, [`reconcile`] for the
//! full-sync diff). No I/O lives in this crate, so every rule is unit-tested
//! with exact expectations.

pub mod api;
pub mod auth;
pub mod command;
pub mod host;
pub mod id;
pub mod pool;
pub mod reconcile;
pub mod sandbox;
pub mod sequence;
pub mod text;
pub mod time;
pub mod validate;

pub use command::{Command, OutboxEntry};
pub use host::Host;
pub use sandbox::{EndReason, NetworkMode, Sandbox, SandboxSpec, SandboxState};
