//! Warm-pool policy: how many ready sandboxes a template's pool should hold,
//! and which idle ones to give up when a host is full. Pure functions and
//! small state machines, driven by whoever owns a clock (the dataplane).

pub mod evict;
pub mod forecast;
pub mod sizing;

pub use evict::{eviction_order, EvictionCandidate, PoolBounds};
pub use forecast::Holt;
pub use sizing::{PoolSettings, PoolSizer, PrewarmWindow, SizingInput};
