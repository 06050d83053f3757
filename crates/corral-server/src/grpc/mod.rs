//! The dataplane-facing gRPC side: the `Control` service dataplanes dial, and
//! the pool of `Agent` clients the server dials for exec and files.

mod agents;
mod control;
mod convert;

pub use agents::AgentPool;
pub use control::ControlService;
