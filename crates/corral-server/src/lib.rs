//! Corral's server.

pub mod scheduler;
pub mod state;
