//! What a run leaves behind: `raw.jsonl`, `meta.json`, HdrHistograms, SVG
//! plots, and the summary table on stdout. Also `merge` (shards → one run of
//! the same shape) and the `compare` ratio table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{read_jsonl, write_jsonl, Record};
use crate::run::RunOutput;
use crate::sample::{usage_by_role, RoleUsage, Sample};
use crate::stats::{summarize, Dist, Summary};
use crate::svg::{self, CdfSeries};
use crate::{hdr, BenchError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Machine {
    pub cores: usize,
    pub memory_mb: u64,
    pub kernel: String,
    pub os: String,
    pub hostname: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
        let memory_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
            .unwrap_or(0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_mb: memory_kb / 1024,
            kernel: read("/proc/sys/kernel/osrelease"),
            os,
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub provider: String,
    /// Mode, readiness command, timeouts, provider settings, versions.
    pub config: serde_json::Value,
    pub machine: Machine,
    pub started_unix_ms: u64,
    pub interrupted: bool,
    pub summary: Summary,
    pub resources: Vec<RoleUsage>,
    pub samples: Vec<Sample>,
    /// Set when this run was merged from shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
}

impl Meta {
    pub fn new(provider: &str, config: serde_json::Value, out: &RunOutput) -> Meta {
        Meta {
            provider: provider.to_string(),
            config,
            machine: Machine::detect(),
            started_unix_ms: out.started_unix_ms,
            interrupted: out.interrupted,
            summary: summarize(&out.records),
            resources: usage_by_role(&out.samples),
            samples: out.samples.clone(),
            shards: Vec::new(),
        }
    }
}

/// A timestamped folder under `bench-results/`.
pub fn default_out(provider: &str, mode: &str) -> PathBuf {
    let secs = corral_core::time::now_ms() / 1000;
    let (d, s) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(d as i64);
    PathBuf::from("bench-results").join(format!(
        "{y:04}{m:02}{day:02}-{:02}{:02}{:02}-{provider}-{mode}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    ))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes every artifact of a run into `dir`.
pub fn write_all(dir: &Path, records: &[Record], meta: &Meta) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    write_jsonl(&dir.join("raw.jsonl"), records)?;
    let json = serde_json::to_string_pretty(meta).map_err(|e| BenchError::Config(e.to_string()))?;
    let p = dir.join("meta.json");
    std::fs::write(&p, json).map_err(|e| BenchError::io("write", &p, e))?;
    hdr::save_all(dir, &hdr::from_records(records))?;
    let series = [cdf_series(&meta.provider, records)];
    let title = format!("{}: time to interactive, {} attempts", meta.provider, records.len());
    write_text(&dir.join("tti_cdf.svg"), &svg::tti_cdf(&title, &series))?;
    let tl = &meta.summary.timeline;
    write_text(&dir.join("timeline.svg"), &svg::timeline(&format!("{}: live sandboxes", meta.provider), &tl.live, tl.step_ms))
}

pub fn cdf_series(label: &str, records: &[Record]) -> CdfSeries {
    CdfSeries {
        label: label.to_string(),
        values_ms: records.iter().filter(|r| r.status.was_ready()).filter_map(|r| r.tti_ms).collect(),
        attempts: records.len(),
    }
}

pub fn write_text(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io("write", path, e))
}

pub fn read_meta(dir: &Path) -> Result<Meta, BenchError> {
    let p = dir.join("meta.json");
    let text = std::fs::read_to_string(&p).map_err(|e| BenchError::io("read", &p, e))?;
    serde_json::from_str(&text).map_err(|e| BenchError::Parse { path: p, message: e.to_string() })
}

/// Concatenates shard records: indices are offset shard by shard, submission
/// order is re-derived from (submitted time, shard, order). Offsets are kept
/// as they are: shards are assumed released at the same instant.
pub fn merge_records(shards: Vec<Vec<Record>>) -> Vec<Record> {
    let mut all: Vec<(usize, Record)> = Vec::new();
    let mut offset = 0;
    for (k, shard) in shards.into_iter().enumerate() {
        let n = shard.len();
        all.extend(shard.into_iter().map(|mut r| {
            r.index += offset;
            (k, r)
        }));
        offset += n;
    }
    all.sort_by(|(ka, a), (kb, b)| a.submitted_at_ms.total_cmp(&b.submitted_at_ms).then(ka.cmp(kb)).then(a.order.cmp(&b.order)));
    let mut out: Vec<Record> = all.into_iter().enumerate().map(|(o, (_, mut r))| {
        r.order = o;
        r
    }).collect();
    out.sort_by_key(|r| r.index);
    out
}

/// `corral bench merge`: shards → one result folder of the same shape. The
/// histograms are added (exact); the statistics are recomputed from the
/// concatenated records (exact too).
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Meta, BenchError> {
    let first = dirs.first().ok_or_else(|| BenchError::Config("merge needs at least one folder".into()))?;
    let mut meta = read_meta(first)?;
    let mut shards = Vec::new();
    let mut hists = hdr::load_all(first)?;
    let mut samples = Vec::new();
    for (k, d) in dirs.iter().enumerate() {
        shards.push(read_jsonl(&d.join("raw.jsonl"))?);
        let m = read_meta(d)?;
        samples.extend(m.samples.into_iter().map(|mut s| {
            s.role = format!("shard{k}/{}", s.role);
            s
        }));
        meta.interrupted |= m.interrupted;
        meta.started_unix_ms = meta.started_unix_ms.min(m.started_unix_ms);
        if k > 0 {
            hdr::merge_into(&mut hists, &hdr::load_all(d)?)?;
        }
    }
    let records = merge_records(shards);
    meta.summary = summarize(&records);
    meta.resources = usage_by_role(&samples);
    meta.samples = samples;
    meta.shards = dirs.iter().map(|d| d.display().to_string()).collect();
    write_all(out, &records, &meta)?;
    // The summed histograms replace the ones recomputed from records; they
    // are equal, but the sum is what shards guarantee without raw data.
    hdr::save_all(out, &hists)?;
    Ok(meta)
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1}s", v / 1000.0),
        Some(v) => format!("{v:.0}"),
        None => "inf".into(),
    }
}

/// A duration with its unit; `never` for infinite (not all got there).
fn dur(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "never".into(),
    }
}

fn dist_row(out: &mut String, name: &str, d: &Dist) {
    let _ = writeln!(
        out,
        "  {name:<26} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        cell(d.min), cell(d.p50), cell(d.p90), cell(d.p95), cell(d.p99), cell(d.p999), cell(d.max), cell(d.mean)
    );
}

/// The human summary printed at the end of a run.
pub fn summary_table(meta: &Meta, out_dir: &Path) -> String {
    let s = &meta.summary;
    let mut out = String::new();
    let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "{} — {} attempts{}: {}", meta.provider, s.attempts, if meta.interrupted { " (INTERRUPTED)" } else { "" }, counts.join(", "));
    let _ = writeln!(out, "  {:<26} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}", "ms", "min", "p50", "p90", "p95", "p99", "p99.9", "max", "mean");
    dist_row(&mut out, "allocate", &s.allocate_ms.successes);
    dist_row(&mut out, "first command", &s.first_command_ms.successes);
    dist_row(&mut out, "TTI", &s.tti_ms.successes);
    dist_row(&mut out, "TTI, all attempts", &s.tti_ms.all_attempts);
    let r = &s.ready_after;
    let _ = writeln!(out, "  ready after: 50% {}, 90% {}, 99% {}, 100% {}", dur(r.p50_ms), dur(r.p90_ms), dur(r.p99_ms), dur(r.p100_ms));
    let _ = writeln!(out, "  peak live sandboxes: {} at {:.1} s; run took {:.2} s", s.timeline.peak, s.timeline.peak_at_ms / 1000.0, s.duration_ms / 1000.0);
    if !s.errors.is_empty() {
        let e: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "  errors: {}", e.join(", "));
    }
    for u in &meta.resources {
        let _ = writeln!(out, "  {:<8} peak RSS {:.0} MB, CPU mean {:.0}% peak {:.0}%, peak fds {}, sockets {}", u.role, u.peak_rss_mb, u.mean_cpu_pct, u.peak_cpu_pct, u.peak_fds, u.peak_sockets);
    }
    let _ = writeln!(out, "  results: {}", out_dir.display());
    out
}

/// Ratios of each run to the first: TTI p50/p99 and time until all ready.
pub fn compare_table(runs: &[Meta]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<10} {:>9} {:>9} {:>11} {:>8}   ratio to {} (p50, p99, all ready)", "provider", "TTI p50", "TTI p99", "all ready", "ok", runs.first().map(|m| m.provider.as_str()).unwrap_or("-"));
    let base = runs.first().map(|m| &m.summary);
    for m in runs {
        let s = &m.summary;
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "-".into(),
        };
        let (bp50, bp99, ball) = base.map(|b| (b.tti_ms.all_attempts.p50, b.tti_ms.all_attempts.p99, b.ready_after.p100_ms)).unwrap_or_default();
        let ok = s.counts.get("success").copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>9} {:>11} {:>8}   {} {} {}",
            m.provider, dur(s.tti_ms.all_attempts.p50), dur(s.tti_ms.all_attempts.p99), dur(s.ready_after.p100_ms), format!("{ok}/{}", s.attempts),
            ratio(s.tti_ms.all_attempts.p50, bp50), ratio(s.tti_ms.all_attempts.p99, bp99), ratio(s.ready_after.p100_ms, ball)
        );
    }
    out
}
