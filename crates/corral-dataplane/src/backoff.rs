//! Exponential backoff with jitter for reconnecting to the server, so a fleet
//! of dataplanes does not hammer a restarting server in lockstep.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay: `base·2^attempt` capped, then scaled by a random
    /// factor in [0.5, 1.0).
    pub fn next_delay(&mut self) -> Duration {
        let full = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        full.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// The un-jittered delay of the next attempt.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Call after a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_below_the_ceiling() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(
            ceilings,
            vec![50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(50));
    }
}
