//! Who may call the API, and how often: bearer tokens and a per-token
//! request rate (token bucket). Both answer before any handler runs, so a
//! refused request changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::error::ApiError;

/// A token bucket per caller: `rate` requests per second, bursts up to `rate`.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_s: u32) -> Self {
        RateLimiter { rate: f64::from(rate_per_s.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `who`'s bucket; `Err(seconds)` says when one is free again.
    pub fn take(&self, who: &str, now: Instant) -> Result<(), f64> {
        let mut buckets = self.buckets.lock();
        let (level, last) = buckets.entry(who.to_string()).or_insert((self.rate, now));
        *level = (*level + now.saturating_duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *level) / self.rate)
        }
    }
}

/// What the gate checks.
pub struct Gate {
    /// Accepted bearer tokens; empty = open.
    pub tokens: Vec<String>,
    /// Per-token request rate; `None` = unlimited.
    pub limiter: Option<RateLimiter>,
    /// Live sandboxes one token may hold; `None` = unlimited. Checked by the
    /// create handlers against the [`Caller`] the gate attaches.
    pub max_live_per_token: Option<usize>,
}

/// Who is calling, attached to every request that passed the gate: the
/// fingerprint of the presented token, or `anonymous` on an open server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// Health, readiness and the API description stay open for probes and tools.
fn is_open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json")
}

pub async fn check(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    if is_open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(corral_core::auth::bearer)
        .map(str::to_string);
    let caller = match (&presented, gate.tokens.is_empty()) {
        (_, true) => presented.clone().unwrap_or_else(|| "anonymous".into()),
        (Some(t), false) if corral_core::auth::token_accepted(&gate.tokens, t) => t.clone(),
        _ => {
            let mut resp =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API token is required (Authorization: Bearer …)")
                    .into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    };
    if let Some(limiter) = &gate.limiter {
        if let Err(wait_s) = limiter.take(&caller, Instant::now()) {
            let mut resp =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this token; slow down")
                    .into_response();
            let secs = wait_s.ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    let owner = match &presented {
        Some(t) => corral_core::auth::fingerprint(t),
        None => corral_core::auth::ANONYMOUS.to_string(),
    };
    req.extensions_mut().insert(Caller(owner));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_refills() {
        let l = RateLimiter::new(2);
        let t0 = Instant::now();
        assert!(l.take("a", t0).is_ok());
        assert!(l.take("a", t0).is_ok());
        let wait = l.take("a", t0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert!(l.take("b", t0).is_ok(), "callers have their own buckets");
        assert!(l.take("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take("a", t0 + Duration::from_millis(500)).is_err());
    }
}
