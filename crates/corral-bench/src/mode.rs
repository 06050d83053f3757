//! How creates are released over time.
//!
//! Burst, staggered and rate are *open loop*: each create has an intended send
//! time fixed before the run, and its latencies are measured from that time,
//! so a system that falls behind cannot hide its queue by slowing the
//! generator down. Sequential is closed loop by definition: the next create
//! is sent when the previous one has settled, and measured from its real send.

use serde::{Deserialize, Serialize};

use crate::BenchError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// All `count` creates at once, no ramp.
    Burst { count: usize },
    /// One after another.
    Sequential { count: usize },
    /// `batch` creates at once every `every_ms`, until `count`.
    Staggered { count: usize, batch: usize, every_ms: u64 },
    /// `per_second` creates per second, evenly spaced, for `duration_s`.
    Rate { per_second: f64, duration_s: f64 },
}

impl Mode {
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Config(m.to_string()));
        match *self {
            Mode::Burst { count } | Mode::Sequential { count } if count == 0 => bad("count must be at least 1"),
            Mode::Staggered { count, batch, .. } if count == 0 || batch == 0 => bad("count and batch must be at least 1"),
            Mode::Rate { per_second, duration_s } if !(per_second > 0.0 && duration_s > 0.0) => {
                bad("per-second and duration must be positive")
            }
            Mode::Rate { per_second, duration_s } if per_second * duration_s > 10_000_000.0 => bad("too many creates"),
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Burst { .. } => "burst",
            Mode::Sequential { .. } => "sequential",
            Mode::Staggered { .. } => "staggered",
            Mode::Rate { .. } => "rate",
        }
    }

    /// How many creates the run makes.
    pub fn count(&self) -> usize {
        match *self {
            Mode::Burst { count } | Mode::Sequential { count } | Mode::Staggered { count, .. } => count,
            Mode::Rate { per_second, duration_s } => (per_second * duration_s).floor().max(1.0) as usize,
        }
    }

    /// Intended send offsets (ms from release) for open-loop modes; `None`
    /// for sequential, whose send times depend on the system.
    pub fn schedule(&self) -> Option<Vec<f64>> {
        match *self {
            Mode::Burst { count } => Some(vec![0.0; count]),
            Mode::Sequential { .. } => None,
            Mode::Staggered { count, batch, every_ms } => {
                Some((0..count).map(|i| (i / batch) as f64 * every_ms as f64).collect())
            }
            Mode::Rate { per_second, .. } => {
                Some((0..self.count()).map(|i| i as f64 * 1000.0 / per_second).collect())
            }
        }
    }
}
