//! Holt's double exponential smoothing of a claim rate.
//!
//! Claims arrive as per-second counts. A level and a trend are smoothed
//! separately, so a steadily rising demand is anticipated rather than chased:
//! the forecast `h` seconds ahead is `level + h × trend`. The one-step-ahead
//! error is tracked as an exponentially weighted mean absolute error, which
//! is what the `corral_pool_forecast_error` metric reports.

#[derive(Debug, Clone, PartialEq)]
pub struct Holt {
    /// Weight of the newest observation in the level (0..1).
    pub alpha: f64,
    /// Weight of the newest slope in the trend (0..1).
    pub beta: f64,
    level: f64,
    trend: f64,
    seen: u64,
    mean_abs_error: f64,
}

impl Holt {
    pub fn new(alpha: f64, beta: f64) -> Self {
        Holt { alpha, beta, level: 0.0, trend: 0.0, seen: 0, mean_abs_error: 0.0 }
    }

    /// Feeds one second's claim count.
    pub fn observe(&mut self, count: f64) {
        if self.seen == 0 {
            self.level = count;
        } else {
            let predicted = self.forecast(1.0);
            self.mean_abs_error = 0.8 * self.mean_abs_error + 0.2 * (count - predicted).abs();
            let previous = self.level;
            self.level = self.alpha * count + (1.0 - self.alpha) * (self.level + self.trend);
            self.trend = self.beta * (self.level - previous) + (1.0 - self.beta) * self.trend;
        }
        self.seen += 1;
    }

    /// Claims per second expected `h` seconds from now (never negative).
    pub fn forecast(&self, h: f64) -> f64 {
        (self.level + h * self.trend).max(0.0)
    }

    /// Expected claims over the next `seconds` seconds.
    pub fn claims_over(&self, seconds: f64) -> f64 {
        // The integral of a linear rate: seconds × rate at the midpoint.
        seconds * self.forecast(seconds / 2.0)
    }

    pub fn mean_abs_error(&self) -> f64 {
        self.mean_abs_error
    }
}

impl Default for Holt {
    fn default() -> Self {
        Holt::new(0.5, 0.3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_is_forecast_exactly() {
        let mut h = Holt::default();
        for _ in 0..20 {
            h.observe(10.0);
        }
        assert!((h.forecast(1.0) - 10.0).abs() < 1e-9);
        assert!((h.claims_over(5.0) - 50.0).abs() < 1e-9);
        assert!(h.mean_abs_error() < 1e-9);
    }

    #[test]
    fn a_linear_ramp_is_anticipated() {
        let mut h = Holt::default();
        for t in 0..60 {
            h.observe(t as f64);
        }
        // After a minute of +1/s the trend has converged to 1.
        assert!((h.forecast(1.0) - 60.0).abs() < 0.5, "{}", h.forecast(1.0));
        assert!((h.forecast(10.0) - 69.0).abs() < 0.5, "{}", h.forecast(10.0));
    }

    #[test]
    fn first_observation_sets_the_level_and_forecasts_never_go_negative() {
        let mut h = Holt::new(0.5, 0.5);
        h.observe(4.0);
        assert_eq!(h.forecast(1.0), 4.0);
        h.observe(0.0);
        h.observe(0.0);
        assert_eq!(h.forecast(100.0), 0.0);
    }
}
