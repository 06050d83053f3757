//! Prometheus metrics. The names are part of the contract (DESIGN.md).

use std::sync::OnceLock;
use std::time::Duration;

use corral_core::SandboxState;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::State;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide recorder once and returns its handle for `/metrics`.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (embedding); render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

pub fn set_state_gauges(st: &State) {
    for s in SandboxState::ALL {
        gauge!("corral_sandboxes", "state" => s.as_str()).set(st.count(s) as f64);
    }
}

pub fn set_backlog(host: &str, backlog: usize) {
    gauge!("corral_outbox_backlog", "host" => host.to_string()).set(backlog as f64);
}

/// One group commit: how many jobs, how many writes, how long, and the
/// commit → ack latency of every command it acknowledged.
pub fn record_commit(jobs: usize, writes: usize, took: Duration, drained_ms: &[u64]) {
    histogram!("corral_commit_seconds").record(took.as_secs_f64());
    histogram!("corral_commit_jobs").record(jobs as f64);
    counter!("corral_store_writes_total").increment(writes as u64);
    if !drained_ms.is_empty() {
        counter!("corral_outbox_drained_total").increment(drained_ms.len() as u64);
        let h = histogram!("corral_outbox_drain_seconds");
        for ms in drained_ms {
            h.record(*ms as f64 / 1000.0);
        }
    }
}

/// A batch the store refused (I/O error, full disk): its callers got 503.
pub fn record_commit_failure() {
    counter!("corral_store_commit_failures_total").increment(1);
}

pub fn record_schedule(took: Duration) {
    histogram!("corral_schedule_seconds").record(took.as_secs_f64());
}


pub fn record_full_sync(reason: &str) {
    counter!("corral_full_syncs_total", "reason" => reason.to_string()).increment(1);
}

pub fn record_http(status: u16) {
    counter!("corral_http_responses_total", "status" => status.to_string()).increment(1);
}

/// Refreshes the heartbeat-age gauge of every known host (at scrape time).
pub fn set_heartbeat_ages(shared: &crate::shared::Shared) {
    let now = corral_core::time::now_ms();
    for (host, l) in shared.liveness.read().iter() {
        set_heartbeat_age(host, Duration::from_millis(now.saturating_sub(l.last_seen_ms)));
    }
}

fn set_heartbeat_age(host: &str, age: Duration) {
    gauge!("corral_host_heartbeat_age_seconds", "host" => host.to_string()).set(age.as_secs_f64());
}

/// A host's report on one of its pools.
pub fn set_pool(host: &str, p: &corral_proto::v1::PoolStatus) {
    let labels = [("template", p.template.clone()), ("host", host.to_string())];
    gauge!("corral_pool_ready", &labels).set(f64::from(p.ready));
    gauge!("corral_pool_target", &labels).set(f64::from(p.target));
    let used = f64::from(p.allocated + p.ready);
    gauge!("corral_pool_utilization", &labels).set(if used > 0.0 { f64::from(p.allocated) / used } else { 0.0 });
    gauge!("corral_pool_forecast_error", &labels).set(p.forecast_error);
}

/// A sandbox reached `running`: how long it took from the create, by path.
pub fn record_start(path: &str, seconds: f64) {
    histogram!("corral_sandbox_start_seconds", "path" => path.to_string()).record(seconds);
    if path == "cold" {
        counter!("corral_cold_starts_total").increment(1);
    }
}
