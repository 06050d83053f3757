//! Pool sizing: the target number of sandboxes a template's pool should hold.
//!
//! The base is the forecast: `max(min, claims expected over the refill lead
//! time × 1.2 headroom + buffer)`. On top of it, triggers react to what the
//! forecast cannot see yet: utilization over 80% grows the pool by half, a
//! sustained burst doubles it, and utilization under 30% shrinks it by a
//! quarter at most once per `shrink_every_ms` (gradual, so a lull between two
//! waves does not throw the pool away). A pre-warm window holds the target at
//! its size while it lasts. The result is clamped to `[min, max]`.

use super::forecast::Holt;

/// A pre-warm window: while `start_ms <= now < end_ms` (wall clock, ms since
/// the epoch) the pool holds at least `size`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PrewarmWindow {
    pub start_ms: u64,
    pub end_ms: u64,
    pub size: u32,
}

impl PrewarmWindow {
    /// Parses `START/END=SIZE` as typed on a command line; START and END are
    /// anything [`crate::time::parse_instant_ms`] takes (`+0s/+1h=50`,
    /// `2026-11-24T09:00Z/2026-11-24T10:00Z=200`).
    pub fn parse(s: &str, now_ms: u64) -> Result<PrewarmWindow, String> {
        let bad = |why: &str| format!("bad pre-warm window {s:?}: {why} (want START/END=SIZE, e.g. +0s/+1h=50)");
        let (span, size) = s.rsplit_once('=').ok_or_else(|| bad("no =SIZE"))?;
        let (start, end) = span.split_once('/').ok_or_else(|| bad("no START/END"))?;
        let start_ms = crate::time::parse_instant_ms(start, now_ms).map_err(|e| bad(&e))?;
        let end_ms = crate::time::parse_instant_ms(end, now_ms).map_err(|e| bad(&e))?;
        let size = size.trim().parse().map_err(|_| bad("SIZE is not a number"))?;
        if end_ms <= start_ms {
            return Err(bad("END is not after START"));
        }
        Ok(PrewarmWindow { start_ms, end_ms, size })
    }
}

/// What an operator sets per template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub min: u32,
    pub max: u32,
    /// Ready sandboxes kept beyond the forecast demand.
    pub buffer: u32,
    pub prewarm: Vec<PrewarmWindow>,
}

/// One second of observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizingInput {
    pub now_ms: u64,
    pub ready: u32,
    pub allocated: u32,
    /// Claims served during the last second.
    pub claims: u32,
}

#[derive(Debug, Clone)]
pub struct PoolSizer {
    pub settings: PoolSettings,
    /// Seconds it takes to bring a new pool sandbox to ready.
    pub refill_lead_s: f64,
    pub shrink_every_ms: u64,
    forecast: Holt,
    target: u32,
    last_shrink_ms: Option<u64>,
    /// A slow average of the claim rate: what "normal" looks like, against
    /// which a burst is recognised (the forecast itself adapts too fast).
    baseline: Option<f64>,
    burst_seconds: u32,
}

const HEADROOM: f64 = 1.2;
const GROW_ABOVE: f64 = 0.8;
const SHRINK_BELOW: f64 = 0.3;
/// A second counts as bursty when claims exceed this multiple of the baseline.
const BURST_FACTOR: f64 = 3.0;
/// Weight of each second in the baseline (a time constant of ~20 s).
const BASELINE_ALPHA: f64 = 0.05;
/// Bursty seconds in a row that make a sustained burst.
const BURST_SECONDS: u32 = 3;

impl PoolSizer {
    pub fn new(settings: PoolSettings, refill_lead_s: f64) -> Self {
        let target = settings.min.max(settings.buffer).min(settings.max);
        PoolSizer {
            settings,
            refill_lead_s,
            shrink_every_ms: 10_000,
            forecast: Holt::default(),
            target,
            last_shrink_ms: None,
            baseline: None,
            burst_seconds: 0,
        }
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    /// Claims per second the model expects next.
    pub fn forecast_rate(&self) -> f64 {
        self.forecast.forecast(1.0)
    }

    pub fn forecast_error(&self) -> f64 {
        self.forecast.mean_abs_error()
    }

    /// Takes one second's observations and returns the new target.
    pub fn tick(&mut self, input: SizingInput) -> u32 {
        let claims = f64::from(input.claims);
        let baseline = *self.baseline.get_or_insert(claims);
        let bursty = claims > BURST_FACTOR * baseline.max(1.0);
        self.burst_seconds = if bursty { self.burst_seconds + 1 } else { 0 };
        self.baseline = Some(baseline + BASELINE_ALPHA * (claims - baseline));
        self.forecast.observe(claims);

        let (min, max, buffer) = (self.settings.min, self.settings.max, self.settings.buffer);
        let base = ((self.forecast.claims_over(self.refill_lead_s) * HEADROOM).ceil() as u32 + buffer).max(min);
        let prev = self.target;
        let mut desired = base;
        let used = input.allocated + input.ready;
        let utilization = if used == 0 { 0.0 } else { f64::from(input.allocated) / f64::from(used) };
        if utilization > GROW_ABOVE {
            desired = desired.max(((f64::from(prev) * 1.5).ceil() as u32).max(prev + 1));
        }
        if self.burst_seconds >= BURST_SECONDS {
            desired = desired.max(prev.saturating_mul(2).max(1));
            self.burst_seconds = 0;
        }
        if desired < prev {
            desired = self.gradual_shrink(prev, desired, utilization, input.now_ms);
        }
        for w in &self.settings.prewarm {
            if w.start_ms <= input.now_ms && input.now_ms < w.end_ms {
                desired = desired.max(w.size);
            }
        }
        self.target = desired.clamp(min, max.max(min));
        self.target
    }

    /// Shrinks towards `desired` by at most a quarter, only when utilization
    /// is low and the last shrink is old enough; otherwise holds `prev`.
    fn gradual_shrink(&mut self, prev: u32, desired: u32, utilization: f64, now_ms: u64) -> u32 {
        let rested = self.last_shrink_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.shrink_every_ms);
        if utilization >= SHRINK_BELOW || !rested {
            return prev;
        }
        self.last_shrink_ms = Some(now_ms);
        desired.max((f64::from(prev) * 0.75).floor() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prewarm_windows_parse_from_the_command_line() {
        let now = 1_000_000;
        assert_eq!(
            PrewarmWindow::parse("+0s/+1h=50", now),
            Ok(PrewarmWindow { start_ms: now, end_ms: now + 3_600_000, size: 50 })
        );
        assert_eq!(
            PrewarmWindow::parse("1970-01-01T00:00Z/1970-01-01T00:01Z=3", now),
            Ok(PrewarmWindow { start_ms: 0, end_ms: 60_000, size: 3 })
        );
        for bad in ["+0s/+1h", "+1h=5", "+1h/+0s=5", "+0s/+1h=x", "soon/+1h=5"] {
            assert!(PrewarmWindow::parse(bad, now).unwrap_err().contains("START/END=SIZE"), "{bad}");
        }
    }

    fn settings(min: u32, max: u32, buffer: u32) -> PoolSettings {
        PoolSettings { min, max, buffer, prewarm: Vec::new() }
    }

    fn input(t: u64, ready: u32, allocated: u32, claims: u32) -> SizingInput {
        SizingInput { now_ms: t * 1000, ready, allocated, claims }
    }

    #[test]
    fn an_idle_pool_holds_min_or_buffer() {
        let mut p = PoolSizer::new(settings(2, 100, 5), 2.0);
        assert_eq!(p.target(), 5);
        assert_eq!(p.tick(input(0, 5, 0, 0)), 5);
    }

    #[test]
    fn steady_demand_sizes_to_lead_time_times_headroom_plus_buffer() {
        let mut p = PoolSizer::new(settings(0, 1000, 4), 2.0);
        for t in 0..30 {
            // 10 claims/s, half of the pool in use: no trigger fires.
            p.tick(input(t, 20, 20, 10));
        }
        // 10/s × 2 s × 1.2 = 24, + 4 buffer.
        assert_eq!(p.target(), 28);
    }

    #[test]
    fn rising_demand_grows_the_pool_ahead_of_it() {
        let mut p = PoolSizer::new(settings(0, 10_000, 0), 2.0);
        let mut last = 0;
        for t in 0..30u64 {
            let target = p.tick(input(t, 10, 10, 20 + t as u32));
            assert!(target >= last, "never shrinks while demand rises ({last} → {target} at {t}s)");
            last = target;
        }
        // At 29 s the rate is 49/s rising 1/s², so the next second brings ~50:
        // over a 2 s lead 2 × 50 × 1.2 = 120. The pool is sized ahead of demand.
        assert!((115..=125).contains(&last), "{last}");
    }

    #[test]
    fn high_utilization_grows_by_half() {
        let mut p = PoolSizer::new(settings(10, 1000, 0), 2.0);
        assert_eq!(p.tick(input(0, 1, 9, 0)), 15);
        assert_eq!(p.tick(input(1, 1, 14, 0)), 23);
    }

    #[test]
    fn falling_demand_shrinks_by_a_quarter_at_most_every_ten_seconds() {
        let mut p = PoolSizer::new(settings(0, 1000, 0), 2.0);
        p.target = 100;
        // No claims, nothing allocated: utilization 0.
        assert_eq!(p.tick(input(0, 100, 0, 0)), 75);
        assert_eq!(p.tick(input(1, 75, 0, 0)), 75, "rate-limited");
        assert_eq!(p.tick(input(9, 75, 0, 0)), 75);
        assert_eq!(p.tick(input(10, 75, 0, 0)), 56);
        assert_eq!(p.tick(input(20, 56, 0, 0)), 42);
    }

    #[test]
    fn a_busy_pool_is_not_shrunk_even_if_the_forecast_falls() {
        let mut p = PoolSizer::new(settings(0, 1000, 0), 2.0);
        p.target = 40;
        assert_eq!(p.tick(input(0, 20, 20, 0)), 40, "50% utilization holds the size");
    }

    #[test]
    fn a_sustained_burst_doubles_the_pool() {
        // A tiny lead time keeps the forecast term near zero, so only the
        // burst trigger can grow the pool; utilization stays at 50%.
        let mut p = PoolSizer::new(settings(0, 10_000, 0), 0.01);
        for t in 0..20 {
            p.tick(input(t, 50, 50, 1));
        }
        p.target = 100;
        assert_eq!(p.tick(input(20, 50, 50, 50)), 100, "one bursty second is not yet a burst");
        assert_eq!(p.tick(input(21, 50, 50, 50)), 100);
        assert_eq!(p.tick(input(22, 50, 50, 50)), 200, "the third in a row doubles");
        assert_eq!(p.tick(input(23, 50, 50, 1)), 200);
    }

    #[test]
    fn prewarm_windows_and_bounds_are_honoured() {
        let mut s = settings(1, 50, 0);
        s.prewarm.push(PrewarmWindow { start_ms: 5_000, end_ms: 10_000, size: 40 });
        let mut p = PoolSizer::new(s, 2.0);
        assert_eq!(p.tick(input(4, 1, 0, 0)), 1);
        assert_eq!(p.tick(input(5, 1, 0, 0)), 40);
        assert_eq!(p.tick(input(9, 40, 0, 0)), 40);
        let mut big = PoolSizer::new(settings(0, 50, 0), 2.0);
        for t in 0..10 {
            big.tick(input(t, 0, 10, 1000));
        }
        assert_eq!(big.target(), 50, "clamped to max");
    }
}
