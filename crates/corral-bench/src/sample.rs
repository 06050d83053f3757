//! Resource samples from /proc, once a second, of the client (this process)
//! and of the processes behind the system under test: CPU, RSS, open file
//! descriptors and sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_ms: f64,
    pub role: String,
    pub pid: i32,
    /// Share of one core since the previous sample (100 = one core busy).
    pub cpu_pct: f64,
    pub rss_mb: f64,
    pub fds: u64,
    pub sockets: u64,
}

/// CPU time (user + system) of `pid`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// (open fds, of which sockets).
pub fn fds(pid: i32) -> Option<(u64, u64)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let (mut n, mut s) = (0, 0);
    for e in dir.flatten() {
        n += 1;
        if std::fs::read_link(e.path()).map(|l| l.to_string_lossy().starts_with("socket:")).unwrap_or(false) {
            s += 1;
        }
    }
    Some((n, s))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

/// Pids of the processes listening on the TCP port of `url` (loopback or any).
pub fn listeners_of_url(url: &str) -> Vec<i32> {
    let port = url
        .rsplit(':')
        .next()
        .map(|p| p.trim_end_matches('/').split('/').next().unwrap_or(""))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(80);
    listeners_of_port(port)
}

pub fn listeners_of_port(port: u16) -> Vec<i32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let lport = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && lport == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return pids };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).map(|l| inodes.iter().any(|i| l.to_string_lossy() == *i)).unwrap_or(false)
        });
        if owns && pid != std::process::id() as i32 {
            pids.push(pid);
        }
    }
    pids
}

/// Samples a fixed set of processes every second, and once more at the end
/// (so even a sub-second run has a sample of each).
pub struct Sampler {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    origin: Instant,
    tps: f64,
    /// (role, pid, time and CPU ticks of the previous sample).
    targets: Vec<(String, i32, Instant, Option<u64>)>,
    samples: Vec<Sample>,
}

impl State {
    /// One sample of each target. The final one is skipped for a target
    /// sampled less than half a second ago: CPU ticks are 10 ms coarse, so a
    /// short interval would report nonsense percentages.
    fn sample_all(&mut self, last: bool) {
        let now = Instant::now();
        for i in 0..self.targets.len() {
            let (role, pid, last_t, last_ticks) = self.targets[i].clone();
            let secs = now.duration_since(last_t).as_secs_f64();
            let has_sample = self.samples.iter().any(|s| s.pid == pid);
            if last && has_sample && secs < 0.5 {
                continue;
            }
            let ticks = cpu_ticks(pid);
            let cpu_pct = match (ticks, last_ticks) {
                (Some(a), Some(b)) if secs > 0.0 => a.saturating_sub(b) as f64 / self.tps / secs * 100.0,
                _ => 0.0,
            };
            self.targets[i].2 = now;
            self.targets[i].3 = ticks;
            let Some(rss) = rss_bytes(pid) else { continue };
            let (fds, sockets) = fds(pid).unwrap_or((0, 0));
            self.samples.push(Sample {
                t_ms: now.duration_since(self.origin).as_secs_f64() * 1000.0,
                role,
                pid,
                cpu_pct,
                rss_mb: rss as f64 / (1 << 20) as f64,
                fds,
                sockets,
            });
        }
    }
}

impl Sampler {
    pub fn start(mut targets: Vec<(String, i32)>, origin: Instant, every: Duration) -> Sampler {
        targets.insert(0, ("client".into(), std::process::id() as i32));
        let now = Instant::now();
        let state = Arc::new(Mutex::new(State {
            origin,
            tps: ticks_per_s(),
            targets: targets.into_iter().map(|(r, p)| (r, p, now, cpu_ticks(p))).collect(),
            samples: Vec::new(),
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                st.lock().sample_all(false);
            }
        });
        Sampler { state, task }
    }

    /// Takes a last sample, stops, and returns everything collected.
    pub fn finish(self) -> Vec<Sample> {
        self.task.abort();
        let mut st = self.state.lock();
        st.sample_all(true);
        std::mem::take(&mut st.samples)
    }
}

/// Peak RSS and mean/peak CPU per role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleUsage {
    pub role: String,
    pub peak_rss_mb: f64,
    pub mean_cpu_pct: f64,
    pub peak_cpu_pct: f64,
    pub peak_fds: u64,
    pub peak_sockets: u64,
}

pub fn usage_by_role(samples: &[Sample]) -> Vec<RoleUsage> {
    let mut roles: Vec<String> = samples.iter().map(|s| s.role.clone()).collect();
    roles.dedup();
    roles.sort();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| {
            let s: Vec<&Sample> = samples.iter().filter(|s| s.role == role).collect();
            let n = s.len().max(1) as f64;
            RoleUsage {
                peak_rss_mb: s.iter().map(|x| x.rss_mb).fold(0.0, f64::max),
                mean_cpu_pct: s.iter().map(|x| x.cpu_pct).sum::<f64>() / n,
                peak_cpu_pct: s.iter().map(|x| x.cpu_pct).fold(0.0, f64::max),
                peak_fds: s.iter().map(|x| x.fds).max().unwrap_or(0),
                peak_sockets: s.iter().map(|x| x.sockets).max().unwrap_or(0),
                role,
            }
        })
        .collect()
}
