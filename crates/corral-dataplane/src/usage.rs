//! Host usage for heartbeats: CPU busy percentage since the previous sample
//! and memory in use, read from `/proc`.

/// The value in kB of `key` in `/proc/meminfo` text.
pub fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `(busy, total)` jiffies from the aggregate `cpu` line of `/proc/stat`.
pub fn cpu_jiffies(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    // idle + iowait are not busy.
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy percentage between two `(busy, total)` samples.
pub fn cpu_pct(prev: (u64, u64), now: (u64, u64)) -> u64 {
    let busy = now.0.saturating_sub(prev.0);
    let total = now.1.saturating_sub(prev.1);
    (busy * 100 + total / 2).checked_div(total).unwrap_or(0)
}

/// Remembers the last CPU sample so each heartbeat reports the interval since.
#[derive(Default)]
pub struct Sampler {
    last_cpu: Option<(u64, u64)>,
}

impl Sampler {
    /// `(cpu_pct, memory_used_mb)`; zeros when `/proc` cannot be read.
    pub fn sample(&mut self) -> (u64, u64) {
        let cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| cpu_jiffies(&t));
        let pct = match (self.last_cpu, cpu) {
            (Some(prev), Some(now)) => cpu_pct(prev, now),
            _ => 0,
        };
        self.last_cpu = cpu.or(self.last_cpu);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                Some(
                    meminfo_kb(&t, "MemTotal")?.saturating_sub(meminfo_kb(&t, "MemAvailable")?)
                        / 1024,
                )
            })
            .unwrap_or(0);
        (pct, mem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_stat() {
        let mem =
            "MemTotal:       16315412 kB\nMemFree:         1000 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(meminfo_kb(mem, "MemTotal"), Some(16315412));
        assert_eq!(meminfo_kb(mem, "MemAvailable"), Some(8000000));
        assert_eq!(meminfo_kb(mem, "Mem"), None);
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_jiffies(stat), Some((200, 1000)));
        assert_eq!(cpu_pct((200, 1000), (300, 1200)), 50);
        assert_eq!(cpu_pct((200, 1000), (200, 1000)), 0);
    }
}
