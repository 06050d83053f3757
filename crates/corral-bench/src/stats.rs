//! Statistics of a run, computed exactly from the records (no trimming, no
//! interpolation): nearest-rank percentiles, the all-attempts view where a
//! failure counts as infinitely slow, time until a share of all sandboxes was
//! ready, the live-sandbox timeline and the error histogram.
//!
//! In JSON an infinite value is written as `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{Record, Status};

/// Timeline resolution.
pub const TIMELINE_STEP_MS: f64 = 100.0;

/// min, percentiles, max and mean of one latency. `None` means infinite
/// (a failure ranked there) or no data at all (`n == 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Dist {
    /// Attempts counted (including failures in the all-attempts view).
    pub n: usize,
    /// Of those, how many are failures (infinitely slow).
    pub failures: usize,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// Nearest rank: the smallest value with at least `q` of all `total` attempts
/// at or below it. `sorted` are the finite values ascending; the other
/// `total - sorted.len()` attempts rank above all of them, at infinity.
pub fn percentile(sorted: &[f64], total: usize, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as usize).clamp(1, total);
    sorted.get(rank - 1).copied()
}

/// The distribution of `values` plus `failures` infinitely slow attempts.
pub fn dist(values: &[f64], failures: usize) -> Dist {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let total = v.len() + failures;
    let p = |q| percentile(&v, total, q);
    let finite_mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Dist {
        n: total,
        failures,
        min: v.first().copied(),
        p50: p(0.5),
        p90: p(0.9),
        p95: p(0.95),
        p99: p(0.99),
        p999: p(0.999),
        max: if failures > 0 { None } else { v.last().copied() },
        mean: if failures > 0 { None } else { finite_mean },
    }
}

/// One latency over the ready sandboxes, and over every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Views {
    pub successes: Dist,
    pub all_attempts: Dist,
}

fn views(records: &[Record], f: impl Fn(&Record) -> Option<f64>) -> Views {
    let ok: Vec<f64> = records.iter().filter(|r| r.status.was_ready()).filter_map(&f).collect();
    let failures = records.len() - ok.len();
    Views { successes: dist(&ok, 0), all_attempts: dist(&ok, failures) }
}

/// Time from release until 50/90/99/100 % of *all* attempts were ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReadyAfter {
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p100_ms: Option<f64>,
}

pub fn ready_after(records: &[Record]) -> ReadyAfter {
    let mut at: Vec<f64> =
        records.iter().filter(|r| r.status.was_ready()).filter_map(|r| r.first_command_at_ms).collect();
    at.sort_by(f64::total_cmp);
    let n = records.len();
    ReadyAfter {
        p50_ms: percentile(&at, n, 0.5),
        p90_ms: percentile(&at, n, 0.9),
        p99_ms: percentile(&at, n, 0.99),
        p100_ms: percentile(&at, n, 1.0),
    }
}

/// Live sandboxes per `step_ms` bucket from 0 through `end_ms`: each bucket
/// holds the most sandboxes alive at once during it, so a sandbox that lives
/// for less than a bucket still counts and `peak` is the exact peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timeline {
    pub step_ms: f64,
    pub live: Vec<u32>,
    pub peak: u32,
    pub peak_at_ms: f64,
}

/// A sandbox is live from `created_at_ms` (inclusive) until `destroyed_at_ms`
/// (exclusive), or until the end if it was never destroyed.
pub fn timeline(records: &[Record], end_ms: f64, step_ms: f64) -> Timeline {
    let buckets = if end_ms <= 0.0 { 1 } else { (end_ms / step_ms).floor() as usize + 1 };
    let mut events: Vec<(f64, i64)> = Vec::new();
    for r in records {
        let Some(c) = r.created_at_ms else { continue };
        match r.destroyed_at_ms {
            Some(d) if d <= c => continue,
            Some(d) => events.extend([(c, 1), (d, -1)]),
            None => events.push((c, 1)),
        }
    }
    // Ends before starts at the same instant: the interval is half-open.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let bucket = |t: f64| ((t.max(0.0) / step_ms).floor() as usize).min(buckets - 1);
    let mut live = vec![0u32; buckets];
    let (mut now, mut peak, mut peak_at) = (0i64, 0i64, 0.0);
    let mut filled = 0; // buckets before this one carry `now` as their level
    for (t, d) in events {
        let b = bucket(t);
        while filled < b {
            filled += 1;
            live[filled] = live[filled].max(now as u32);
        }
        now += d;
        live[b] = live[b].max(now.max(0) as u32);
        if now > peak {
            (peak, peak_at) = (now, t);
        }
    }
    while filled + 1 < buckets {
        filled += 1;
        live[filled] = live[filled].max(now.max(0) as u32);
    }
    Timeline { step_ms, live, peak: peak as u32, peak_at_ms: peak_at }
}

/// A stretch of submissions with no gap longer than the timeline step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub from_ms: f64,
    pub to_ms: f64,
    pub submitted: usize,
}

pub fn segments(records: &[Record], gap_ms: f64) -> Vec<Segment> {
    let mut at: Vec<f64> = records.iter().map(|r| r.submitted_at_ms).collect();
    at.sort_by(f64::total_cmp);
    let mut out: Vec<Segment> = Vec::new();
    for t in at {
        match out.last_mut() {
            Some(s) if t - s.to_ms <= gap_ms => {
                s.to_ms = t;
                s.submitted += 1;
            }
            _ => out.push(Segment { from_ms: t, to_ms: t, submitted: 1 }),
        }
    }
    out
}

/// Failure classes (plus `destroy_error`) and how often each occurred.
pub fn errors(records: &[Record]) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for r in records {
        if let Some(c) = r.failure_class {
            *h.entry(c.as_str().to_string()).or_insert(0) += 1;
        }
        if r.destroy_error.is_some() {
            *h.entry("destroy_failed".to_string()).or_insert(0) += 1;
        }
    }
    h
}

/// Everything `meta.json` says about the outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub attempts: usize,
    pub counts: BTreeMap<String, usize>,
    pub allocate_ms: Views,
    pub first_command_ms: Views,
    pub tti_ms: Views,
    pub ready_after: ReadyAfter,
    pub timeline: Timeline,
    pub segments: Vec<Segment>,
    pub errors: BTreeMap<String, usize>,
    /// Release → last event of the run (destroy or settle).
    pub duration_ms: f64,
}

/// The latest offset any record mentions.
pub fn end_of(records: &[Record]) -> f64 {
    let mut end: f64 = 0.0;
    for r in records {
        for t in [r.submitted_at_ms, r.created_at_ms.unwrap_or(0.0), r.first_command_at_ms.unwrap_or(0.0),
            r.liveness_at_ms.unwrap_or(0.0), r.destroyed_at_ms.unwrap_or(0.0)]
        {
            end = end.max(t);
        }
    }
    end
}

pub fn summarize(records: &[Record]) -> Summary {
    let mut counts: BTreeMap<String, usize> = Status::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
    for r in records {
        *counts.entry(r.status.as_str().to_string()).or_insert(0) += 1;
    }
    let end = end_of(records);
    Summary {
        attempts: records.len(),
        counts,
        allocate_ms: views(records, |r| r.allocate_ms),
        first_command_ms: views(records, |r| r.first_command_ms),
        tti_ms: views(records, |r| r.tti_ms),
        ready_after: ready_after(records),
        timeline: timeline(records, end, TIMELINE_STEP_MS),
        segments: segments(records, TIMELINE_STEP_MS),
        errors: errors(records),
        duration_ms: end,
    }
}
