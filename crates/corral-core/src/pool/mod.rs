//! Warm-pool policy: how many ready sandboxes a template's pool should hold,
//! and which idle ones to give up when a host is full. Pure functions and
//! small state machines, driven by whoever owns a clock (the dataplane).

pub mod evict;
pub mod forecast;
pub mod sizing;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use evict::{class_at, eviction_order, first_eviction, EvictionCandidate, EvictionClass, PoolBounds};
pub use forecast::Holt;
pub use sizing::{PoolSettings, PoolSizer, PrewarmWindow, SizingInput};

/// The pool settings of one template, as the server stores them and sends
/// them to every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolSpec {
    pub template: String,
    /// Ready sandboxes kept at all times.
    pub min: u32,
    /// The pool never grows past this.
    pub max: u32,
    /// Ready sandboxes kept beyond the forecast demand.
    pub buffer: u32,
    /// Scheduled times when the pool holds at least a given size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prewarm: Vec<PrewarmWindow>,
}

/// Largest pool a template may have on one host.
pub const MAX_POOL_SIZE: u32 = 10_000;

impl PoolSpec {
    /// Checks the bounds; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.max > MAX_POOL_SIZE {
            return Err(format!("max must be at most {MAX_POOL_SIZE}, got {}", self.max));
        }
        if self.min > self.max {
            return Err(format!("min ({}) must not exceed max ({})", self.min, self.max));
        }
        if self.buffer > self.max {
            return Err(format!("buffer ({}) must not exceed max ({})", self.buffer, self.max));
        }
        if self.prewarm.len() > 64 {
            return Err(format!("at most 64 prewarm windows, got {}", self.prewarm.len()));
        }
        for w in &self.prewarm {
            if w.start_ms >= w.end_ms || w.size > self.max {
                return Err(format!(
                    "prewarm window {}..{} of size {} must start before it ends and not exceed max ({})",
                    w.start_ms, w.end_ms, w.size, self.max
                ));
            }
        }
        Ok(())
    }
}
