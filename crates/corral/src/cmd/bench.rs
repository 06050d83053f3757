//! `corral bench`: thin glue from flags to the `corral-bench` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use corral_bench::mode::Mode;
use corral_bench::provider::{self, Kind, ProviderConfig};
use corral_bench::report::{self, Meta};
use corral_bench::run::{self, RunConfig};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fire `--count` creates at once (no ramp).
    Burst {
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// One create at a time, each after the previous settled.
    Sequential {
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// `--batch` creates every `--every` ms until `--count`.
    Staggered {
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        batch: usize,
        /// Milliseconds between batches.
        #[arg(long = "every", value_name = "MS", default_value_t = 100)]
        every_ms: u64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Open loop: `--per-second` creates per second for `--duration` seconds,
    /// latency measured from each intended send time.
    Rate {
        #[arg(long)]
        per_second: f64,
        /// Seconds.
        #[arg(long = "duration", value_name = "S")]
        duration_s: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The same burst against several providers back to back, with ratios.
    Compare {
        /// Comma-separated providers, the first is the reference.
        #[arg(long, default_value = "corral,bwrap,podman", value_delimiter = ',')]
        providers: Vec<String>,
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Control plane at fleet scale: a server plus `--hosts` simulated hosts
    /// (started from this binary on loopback), a create burst, then `--live`
    /// sandboxes kept alive while the server is sampled.
    Sim(SimArgs),
    /// Merge shard result folders into one folder shaped like a single run.
    Merge {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    #[arg(long, default_value_t = 1000)]
    pub hosts: usize,
    /// Single creates fired at once (from `--clients` concurrent clients).
    #[arg(long, default_value_t = 10_000)]
    pub burst: usize,
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Sandboxes alive while the server is sampled.
    #[arg(long, default_value_t = 100_000)]
    pub live: usize,
    /// How long a simulated start takes.
    #[arg(long, default_value_t = 0)]
    pub sim_start_ms: u64,
    /// Seconds to sample the server once `--live` sandboxes run.
    #[arg(long, default_value_t = 10)]
    pub sample_s: u64,
    /// Where the server and the hosts keep their data (default: a fresh
    /// folder under /var/tmp, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the simulated hosts keep their state (default: a fresh folder
    /// on tmpfs, /dev/shm, removed afterwards: real hosts fsync on their own
    /// disks, not on the server's).
    #[arg(long)]
    pub hosts_data_dir: Option<PathBuf>,
    /// Results folder (default: bench-results/<timestamp>-sim-<hosts>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// corral, bwrap, podman, or plain (no isolation: the work's own cost).
    #[arg(long, default_value = "corral")]
    pub provider: String,
    /// Corral's REST URL (provider corral).
    #[arg(long, env = "CORRAL_URL", default_value = corral_client::DEFAULT_URL)]
    pub url: String,
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, default_value = "base")]
    pub template: String,
    /// The readiness command, split on whitespace.
    #[arg(long, default_value = "/usr/bin/node -v")]
    pub readiness: String,
    /// Regex its trimmed output must match.
    #[arg(long, default_value = r"^v\d+")]
    pub expect: String,
    /// Limit for each create, command and destroy.
    #[arg(long, default_value_t = 300_000)]
    pub timeout_ms: u64,
    /// Results folder (default: bench-results/<timestamp>-<provider>-<mode>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// podman image name (built locally from the base content if missing).
    #[arg(long, default_value = "corral-bench-base")]
    pub image: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let (mode, args) = match cmd {
        BenchCommand::Burst { count, run } => (Mode::Burst { count }, run),
        BenchCommand::Sequential { count, run } => (Mode::Sequential { count }, run),
        BenchCommand::Staggered { count, batch, every_ms, run } => (Mode::Staggered { count, batch, every_ms }, run),
        BenchCommand::Rate { per_second, duration_s, run } => (Mode::Rate { per_second, duration_s }, run),
        BenchCommand::Compare { providers, count, run } => return compare(&providers, count, run).await,
        BenchCommand::Sim(a) => return sim(a).await,
        BenchCommand::Merge { dirs, out } => {
            let meta = report::merge(&dirs, &out)?;
            print!("{}", report::summary_table(&meta, &out));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let kind = Kind::parse(&args.provider)?;
    let out = args.out.clone().unwrap_or_else(|| report::default_out(kind.as_str(), mode.name()));
    let meta = run_one(kind, mode, &args, &out).await?;
    print!("{}", report::summary_table(&meta, &out));
    Ok(if meta.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// One run of one provider, written to `out`.
async fn run_one(kind: Kind, mode: Mode, a: &RunArgs, out: &std::path::Path) -> anyhow::Result<Meta> {
    let readiness: Vec<String> = a.readiness.split_whitespace().map(String::from).collect();
    let pcfg = ProviderConfig {
        kind,
        url: a.url.clone(),
        token: a.token.clone(),
        template: a.template.clone(),
        readiness_program: readiness.first().cloned().unwrap_or_default(),
        image: a.image.clone(),
    };
    let provider = provider::build(&pcfg)?;
    let cfg = RunConfig { mode, readiness, expect: a.expect.clone(), timeout_ms: a.timeout_ms, progress: !a.quiet };
    eprintln!("corral bench: {} {} → {}", kind.as_str(), cfg.mode.name(), out.display());
    let result = run::run(provider.clone(), &cfg, super::shutdown_signal()).await?;
    let tool = match kind {
        Kind::Corral => Ok(format!("corral {}", env!("CARGO_PKG_VERSION"))),
        Kind::Bwrap => provider::tool_version("bwrap").await,
        Kind::Podman => provider::tool_version("podman").await,
        Kind::Plain => Ok("none (plain fork/exec)".to_string()),
    };
    let config = serde_json::json!({
        "run": cfg,
        "provider": provider.describe(),
        "tool_version": tool.unwrap_or_else(|e| e),
        "bench_version": env!("CARGO_PKG_VERSION"),
        "argv": std::env::args().collect::<Vec<_>>(),
    });
    let meta = Meta::new(kind.as_str(), config, &result);
    report::write_all(out, &result.records, &meta).with_context(|| format!("writing {}", out.display()))?;
    Ok(meta)
}

/// Bursts of the same size against each provider, one after the other.
async fn compare(providers: &[String], count: usize, a: RunArgs) -> anyhow::Result<ExitCode> {
    let root = a.out.clone().unwrap_or_else(|| report::default_out("compare", "burst"));
    let mut metas = Vec::new();
    let mut series = Vec::new();
    for name in providers {
        let kind = Kind::parse(name)?;
        let dir = root.join(kind.as_str());
        match run_one(kind, Mode::Burst { count }, &a, &dir).await {
            Ok(meta) => {
                print!("{}", report::summary_table(&meta, &dir));
                let records = corral_bench::record::read_jsonl(&dir.join("raw.jsonl"))?;
                series.push(report::cdf_series(kind.as_str(), &records));
                let stop = meta.interrupted;
                metas.push(meta);
                if stop {
                    break;
                }
            }
            Err(e) => eprintln!("skipping {}: {e:#}", kind.as_str()),
        }
    }
    let title = format!("time to interactive, burst of {count}");
    report::write_text(&root.join("tti_cdf.svg"), &corral_bench::svg::tti_cdf(&title, &series))?;
    let table = report::compare_table(&metas);
    report::write_text(&root.join("compare.txt"), &table)?;
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// `corral bench sim`: runs the simulated fleet and writes `sim.json`.
async fn sim(a: SimArgs) -> anyhow::Result<ExitCode> {
    let temp = a.data_dir.is_none();
    let data_dir = a.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("/var/tmp/corral-bench-sim-{}", std::process::id())));
    let temp_hosts = a.hosts_data_dir.is_none();
    let hosts_data_dir = a.hosts_data_dir.clone().unwrap_or_else(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { data_dir.clone() };
        base.join(format!("corral-bench-sim-hosts-{}", std::process::id()))
    });
    let out = a.out.clone().unwrap_or_else(|| report::default_out("sim", &a.hosts.to_string()));
    let cfg = corral_bench::sim::SimConfig {
        binary: std::env::current_exe().context("finding the corral binary")?,
        hosts: a.hosts,
        burst: a.burst,
        clients: a.clients,
        live: a.live,
        start_delay_ms: a.sim_start_ms,
        sample_s: a.sample_s,
        data_dir: data_dir.clone(),
        hosts_data_dir: hosts_data_dir.clone(),
    };
    eprintln!("corral bench sim: {} hosts, data in {} → {}", a.hosts, data_dir.display(), out.display());
    let result = tokio::select! {
        r = corral_bench::sim::run(&cfg) => r,
        _ = super::shutdown_signal() => Err(corral_bench::BenchError::Config("interrupted".into())),
    };
    if temp {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    if temp_hosts {
        let _ = std::fs::remove_dir_all(&hosts_data_dir);
    }
    let result = result?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({ "config": cfg, "machine": report::Machine::detect(), "result": result });
    report::write_text(&out.join("sim.json"), &serde_json::to_string_pretty(&json)?)?;
    print!("{}", corral_bench::sim::table(&cfg, &result));
    Ok(ExitCode::SUCCESS)
}
