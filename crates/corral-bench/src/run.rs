//! The load generator: releases creates on the mode's schedule, runs the
//! readiness command in each sandbox, keeps survivors until every create has
//! settled, probes them all once more, destroys everything, and returns the
//! records. An interrupt (SIGINT/SIGTERM) ends the waiting early; what had
//! not settled is recorded as `interrupted` and every sandbox that exists is
//! still destroyed, so partial results are flushed and nothing leaks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::mode::Mode;
use crate::provider::{Provider, Sandbox};
use crate::record::{FailureClass, Record, Status};
use crate::sample::{Sample, Sampler};
use crate::BenchError;

/// Time between building the schedule and releasing it, so spawning a
/// thousand tasks is not part of anyone's latency.
const RELEASE_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub mode: Mode,
    /// The readiness command (argv), run in every sandbox once created and
    /// again as the final liveness probe.
    pub readiness: Vec<String>,
    /// What its output (trimmed) must match.
    pub expect: String,
    /// Limit for each single operation (create, command, destroy).
    pub timeout_ms: u64,
    /// Show a progress bar (on stderr, only when it is a terminal).
    #[serde(skip)]
    pub progress: bool,
}

pub struct RunOutput {
    pub records: Vec<Record>,
    pub samples: Vec<Sample>,
    pub interrupted: bool,
    /// Wall-clock time of the release, ms since the Unix epoch.
    pub started_unix_ms: u64,
}

struct Shared {
    provider: Arc<dyn Provider>,
    readiness: Vec<String>,
    expect: Regex,
    timeout: Duration,
    release: Instant,
    records: Mutex<Vec<Record>>,
    sandboxes: Mutex<Vec<Option<Arc<dyn Sandbox>>>>,
    bar: ProgressBar,
}

impl Shared {
    fn now_ms(&self) -> f64 {
        ms_since(self.release)
    }
}

fn ms_since(t: Instant) -> f64 {
    let now = Instant::now();
    let ms = if now < t {
        -(t.duration_since(now).as_secs_f64() * 1000.0)
    } else {
        now.duration_since(t).as_secs_f64() * 1000.0
    };
    crate::record::round_us(ms)
}

pub async fn run(
    provider: Arc<dyn Provider>,
    cfg: &RunConfig,
    interrupt: impl Future<Output = ()>,
) -> Result<RunOutput, BenchError> {
    cfg.mode.validate()?;
    if cfg.readiness.is_empty() {
        return Err(BenchError::Config("the readiness command is empty".into()));
    }
    let expect = Regex::new(&cfg.expect).map_err(|e| BenchError::Config(format!("--expect: {e}")))?;
    provider.prepare().await?;
    raise_fd_limit();
    let count = cfg.mode.count();
    let schedule = cfg.mode.schedule();
    let release = Instant::now() + RELEASE_DELAY;
    let started_unix_ms = corral_core::time::now_ms() + RELEASE_DELAY.as_millis() as u64;
    let records = (0..count)
        .map(|i| Record::pending(i, i, schedule.as_ref().map(|s| s[i]).unwrap_or(0.0)))
        .collect();
    let shared = Arc::new(Shared {
        provider: provider.clone(),
        readiness: cfg.readiness.clone(),
        expect,
        timeout: Duration::from_millis(cfg.timeout_ms),
        release,
        records: Mutex::new(records),
        sandboxes: Mutex::new(vec![None; count]),
        bar: progress_bar(count, cfg.progress),
    });
    let sampler = Sampler::start(provider.processes(), release, Duration::from_secs(1));
    tokio::pin!(interrupt);
    let mut interrupted = tokio::select! {
        _ = settle_all(&shared, schedule) => false,
        _ = &mut interrupt => true,
    };
    shared.bar.finish_and_clear();
    if !interrupted {
        interrupted = tokio::select! {
            _ = probe_all(&shared) => false,
            _ = &mut interrupt => true,
        };
    }
    destroy_all(&shared).await;
    provider.cleanup().await;
    let samples = sampler.finish();
    let mut records = std::mem::take(&mut *shared.records.lock());
    for r in &mut records {
        if r.failure_class == Some(FailureClass::Interrupted) && r.created_at_ms.is_some() {
            r.status = Status::ReadinessFailed;
        }
    }
    Ok(RunOutput { records, samples, interrupted, started_unix_ms })
}

fn progress_bar(count: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} settled  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// Runs every create and readiness check, on schedule (or one by one).
async fn settle_all(shared: &Arc<Shared>, schedule: Option<Vec<f64>>) {
    let Some(schedule) = schedule else {
        tokio::time::sleep_until(shared.release.into()).await;
        let n = shared.records.lock().len();
        for i in 0..n {
            let at = shared.now_ms();
            shared.records.lock()[i].submitted_at_ms = at;
            one(shared, i).await;
        }
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, at_ms) in schedule.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until((shared.release + Duration::from_secs_f64(at_ms / 1000.0)).into()).await;
            one(&shared, i).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Creates sandbox `i` and runs the readiness command in it.
async fn one(shared: &Shared, i: usize) {
    let created = shared.provider.create(i, shared.timeout).await;
    let at = shared.now_ms();
    let sb: Arc<dyn Sandbox> = match created {
        Ok(sb) => Arc::from(sb),
        Err(e) => {
            shared.records.lock()[i].fail(Status::Failed, e.class, e.message);
            shared.bar.inc(1);
            return;
        }
    };
    {
        let mut recs = shared.records.lock();
        let r = &mut recs[i];
        r.set_created(at);
        r.provider_id = Some(sb.id());
        r.host = sb.host();
        r.status = Status::ReadinessFailed;
    }
    shared.sandboxes.lock()[i] = Some(sb.clone());
    let verdict = check(shared, sb.as_ref()).await;
    let at = shared.now_ms();
    let mut recs = shared.records.lock();
    match verdict {
        Ok(()) => recs[i].set_ready(at),
        Err((class, msg)) => recs[i].fail(Status::ReadinessFailed, class, msg),
    }
    shared.bar.inc(1);
}

/// Runs the readiness command; Ok when it exits 0 with matching output.
async fn check(shared: &Shared, sb: &dyn Sandbox) -> Result<(), (FailureClass, String)> {
    let r = sb.exec(&shared.readiness, shared.timeout).await.map_err(|e| (e.class, e.message))?;
    let out = r.stdout.trim();
    let short: String = out.chars().take(200).collect();
    if r.exit_code != 0 {
        return Err((FailureClass::ExitCode, format!("exit code {}: {short}", r.exit_code)));
    }
    if !shared.expect.is_match(out) {
        return Err((FailureClass::UnexpectedOutput, format!("output {short:?} does not match {}", shared.expect)));
    }
    Ok(())
}

/// The final liveness probe, against every sandbox that became ready.
async fn probe_all(shared: &Arc<Shared>) {
    let ready: Vec<(usize, Arc<dyn Sandbox>)> = {
        let recs = shared.records.lock();
        let sbs = shared.sandboxes.lock();
        (0..recs.len())
            .filter(|&i| recs[i].status == Status::Success)
            .filter_map(|i| sbs[i].clone().map(|s| (i, s)))
            .collect()
    };
    let probes = ready.into_iter().map(|(i, sb)| async move {
        let verdict = check(shared, sb.as_ref()).await;
        let at = shared.now_ms();
        let mut recs = shared.records.lock();
        recs[i].liveness_at_ms = Some(at);
        if let Err((_, msg)) = verdict {
            recs[i].status = Status::Partial;
            recs[i].failure_class = Some(FailureClass::Lost);
            recs[i].error = Some(format!("final liveness probe: {msg}"));
        }
    });
    futures::future::join_all(probes).await;
}

async fn destroy_all(shared: &Arc<Shared>) {
    let all: Vec<(usize, Arc<dyn Sandbox>)> = shared
        .sandboxes
        .lock()
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| s.take().map(|s| (i, s)))
        .collect();
    let destroys = all.into_iter().map(|(i, sb)| async move {
        let r = sb.destroy(shared.timeout).await;
        let at = shared.now_ms();
        let mut recs = shared.records.lock();
        recs[i].destroyed_at_ms = Some(at);
        if let Err(e) = r {
            recs[i].destroy_error = Some(e.message);
        }
    });
    futures::future::join_all(destroys).await;
}

/// Local providers hold three pipes per live sandbox and REST ones a socket:
/// lift the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
