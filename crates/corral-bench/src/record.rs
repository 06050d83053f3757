//! One line of `raw.jsonl`: what happened to one sandbox of a run.
//!
//! Offsets (`*_at_ms`) count from the run's release instant (the moment a
//! burst is fired); durations are differences of those offsets. `submitted_at_ms`
//! is the *intended* send time, so in open-loop modes queueing in the
//! generator or the system under test shows up in the latencies.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::BenchError;

/// How one sandbox ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ready (readiness command passed) and still alive at the final probe.
    Success,
    /// Was ready, but failed the final liveness probe.
    Partial,
    /// Created, but the readiness command failed or printed the wrong thing.
    ReadinessFailed,
    /// The create itself failed (or never finished).
    Failed,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Success, Status::Partial, Status::ReadinessFailed, Status::Failed];

    /// Reached readiness: counts as a success for the latency distributions.
    pub fn was_ready(self) -> bool {
        matches!(self, Status::Success | Status::Partial)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Partial => "partial",
            Status::ReadinessFailed => "readiness_failed",
            Status::Failed => "failed",
        }
    }
}

/// Why something failed, coarse enough to histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    Timeout,
    HttpError,
    NetworkError,
    /// The provider reported that the sandbox failed to start.
    StartFailed,
    /// The readiness command exited non-zero.
    ExitCode,
    /// The readiness command exited 0 but its output did not match.
    UnexpectedOutput,
    /// The sandbox was gone (or broken) at the final probe.
    Lost,
    /// The run was interrupted (SIGINT/SIGTERM) before this one settled.
    Interrupted,
    Other,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::HttpError => "http_error",
            FailureClass::NetworkError => "network_error",
            FailureClass::StartFailed => "start_failed",
            FailureClass::ExitCode => "exit_code",
            FailureClass::UnexpectedOutput => "unexpected_output",
            FailureClass::Lost => "lost",
            FailureClass::Interrupted => "interrupted",
            FailureClass::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub index: usize,
    /// The order creates were submitted in (0 = first).
    pub order: usize,
    pub submitted_at_ms: f64,
    /// When the provider said the sandbox exists (create answered).
    pub created_at_ms: Option<f64>,
    /// When the readiness command finished.
    pub first_command_at_ms: Option<f64>,
    /// When the final liveness probe finished.
    pub liveness_at_ms: Option<f64>,
    pub destroyed_at_ms: Option<f64>,
    /// submitted → created.
    pub allocate_ms: Option<f64>,
    /// created → readiness command done (the command's own round trip).
    pub first_command_ms: Option<f64>,
    /// submitted → readiness command exited 0 with the expected output.
    pub tti_ms: Option<f64>,
    pub status: Status,
    pub failure_class: Option<FailureClass>,
    pub error: Option<String>,
    /// The provider's id of the sandbox (Corral id, container name, pid).
    pub provider_id: Option<String>,
    pub host: Option<String>,
    /// Destroy failures do not change the status but are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_error: Option<String>,
}

impl Record {
    /// A record not yet settled: it counts as failed/interrupted until updated.
    pub fn pending(index: usize, order: usize, submitted_at_ms: f64) -> Record {
        Record {
            index,
            order,
            submitted_at_ms,
            created_at_ms: None,
            first_command_at_ms: None,
            liveness_at_ms: None,
            destroyed_at_ms: None,
            allocate_ms: None,
            first_command_ms: None,
            tti_ms: None,
            status: Status::Failed,
            failure_class: Some(FailureClass::Interrupted),
            error: Some("did not settle before the run ended".into()),
            provider_id: None,
            host: None,
            destroy_error: None,
        }
    }

    pub fn set_created(&mut self, at_ms: f64) {
        let at_ms = round_us(at_ms);
        self.created_at_ms = Some(at_ms);
        self.allocate_ms = Some(round_us(at_ms - self.submitted_at_ms));
    }

    /// The readiness command succeeded at `at_ms`.
    pub fn set_ready(&mut self, at_ms: f64) {
        let at_ms = round_us(at_ms);
        self.first_command_at_ms = Some(at_ms);
        self.first_command_ms = self.created_at_ms.map(|c| round_us(at_ms - c));
        self.tti_ms = Some(round_us(at_ms - self.submitted_at_ms));
        self.status = Status::Success;
        self.failure_class = None;
        self.error = None;
    }

    pub fn fail(&mut self, status: Status, class: FailureClass, error: impl Into<String>) {
        self.status = status;
        self.failure_class = Some(class);
        self.error = Some(error.into());
    }
}

/// Milliseconds rounded to whole microseconds: what the clocks resolve, and
/// short decimals survive a JSON round trip exactly (so merged shards equal
/// a single run bit for bit).
pub fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<(), BenchError> {
    let file = std::fs::File::create(path).map_err(|e| BenchError::io("create", path, e))?;
    let mut w = std::io::BufWriter::new(file);
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| BenchError::Parse { path: path.into(), message: e.to_string() })?;
        writeln!(w, "{line}").map_err(|e| BenchError::io("write", path, e))?;
    }
    w.flush().map_err(|e| BenchError::io("write", path, e))
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, BenchError> {
    let file = std::fs::File::open(path).map_err(|e| BenchError::io("open", path, e))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| BenchError::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(&line)
            .map_err(|e| BenchError::Parse { path: path.into(), message: format!("line {}: {e}", n + 1) })?;
        out.push(r);
    }
    Ok(out)
}
