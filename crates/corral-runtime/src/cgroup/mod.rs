//! Per-sandbox cgroups on v1, v2 or hybrid hosts.
//!
//! At start the runtime finds, for each controller it uses (memory, pids,
//! cpu), whether a v1 hierarchy has it or the v2 unified hierarchy does
//! ([`Layout::detect`]). A sandbox gets one cgroup named after its id under
//! `<own cgroup>/<cgroup_parent>` in every hierarchy involved, plus one in the
//! unified hierarchy when it is mounted (for `cgroup.kill` and the cgroup
//! namespace) even if it holds no controller. Files are written directly.
//!
//! Invariant: the spawner writes the init's pid into every `cgroup.procs`
//! returned by [`Cgroup::procs_files`] *before* the init runs any sandbox
//! code, so nothing in a sandbox ever runs outside its limits.

mod v1;
mod v2;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{AppliedLimits, SandboxStats};
use crate::error::{Result, RuntimeError};

/// Where one controller lives for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    V1(PathBuf),
    V2(PathBuf),
}

impl Place {
    fn dir(&self) -> &Path {
        match self {
            Place::V1(p) | Place::V2(p) => p,
        }
    }
}

/// The limits asked for a sandbox (0 = unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub cpu_millis: u32,
    pub memory_mb: u32,
    pub pids_max: u32,
}

/// A sandbox's CPU weight relative to the other sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuWeight {
    /// The kernel's default (v1 `cpu.shares` 1024, v2 `cpu.weight` 100).
    Normal,
    /// The lowest the kernel takes (2 and 1): ~0.2% (v1) or 1% (v2) of a
    /// normal sibling's share when both want the CPU, all of it otherwise.
    Idle,
}

impl CpuWeight {
    fn v1_shares(self) -> &'static str {
        match self {
            CpuWeight::Normal => "1024",
            CpuWeight::Idle => "2",
        }
    }

    fn v2_weight(self) -> &'static str {
        match self {
            CpuWeight::Normal => "100",
            CpuWeight::Idle => "1",
        }
    }
}

/// CFS period used for every sandbox (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Where each controller's parent directory is on this host.
#[derive(Debug, Clone)]
pub struct Layout {
    memory: Option<Place>,
    pids: Option<Place>,
    cpu: Option<Place>,
    unified: Option<PathBuf>,
}

/// One mounted hierarchy: its mount point, the controllers it carries and our
/// own cgroup path in it.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    v2: bool,
    controllers: Vec<String>,
    own: PathBuf,
}

impl Layout {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup` and decides, for
    /// each controller, which hierarchy to use (v1 wins when it has it, as on
    /// hybrid hosts where v2 is mounted but empty). Creates the parent dirs.
    pub fn detect(parent: &str) -> Result<Layout> {
        let hier = hierarchies()?;
        let layout = Layout::choose(&hier, parent);
        if layout.memory.is_none() || layout.pids.is_none() {
            return Err(RuntimeError::Unsupported(
                "memory and pids cgroup controllers are required".into(),
            ));
        }
        layout.create_parents(&hier)?;
        tracing::debug!(?layout, "cgroup layout");
        Ok(layout)
    }

    /// The pure decision. On v1 the parent nests under our own cgroup (the
    /// sandboxes stay inside whatever limits the dataplane was given). On v2
    /// it sits at the hierarchy root: v2 forbids enabling controllers for
    /// children of a cgroup that holds processes, and ours does (this is what
    /// container managers do with their own slices).
    fn choose(hier: &[Hierarchy], parent: &str) -> Layout {
        let v1_dir = |h: &Hierarchy| h.mount.join(&h.own).join(parent);
        let v2_dir = |h: &Hierarchy| h.mount.join(parent);
        let pick = |name: &str| -> Option<Place> {
            if let Some(h) = hier
                .iter()
                .find(|h| !h.v2 && h.controllers.iter().any(|c| c == name))
            {
                return Some(Place::V1(v1_dir(h)));
            }
            hier.iter()
                .find(|h| h.v2 && h.controllers.iter().any(|c| c == name))
                .map(|h| Place::V2(v2_dir(h)))
        };
        Layout {
            memory: pick("memory"),
            pids: pick("pids"),
            cpu: pick("cpu"),
            unified: hier.iter().find(|h| h.v2).map(v2_dir),
        }
    }

    fn create_parents(&self, hier: &[Hierarchy]) -> Result<()> {
        for dir in self.dirs(None) {
            fs::create_dir_all(&dir)
                .map_err(|e| RuntimeError::io(format!("mkdir {}", dir.display()), e))?;
        }
        if let Some(unified) = &self.unified {
            let wanted: Vec<&str> = [
                ("memory", &self.memory),
                ("pids", &self.pids),
                ("cpu", &self.cpu),
            ]
            .iter()
            .filter(|(_, p)| matches!(p, Some(Place::V2(_))))
            .map(|(n, _)| *n)
            .collect();
            if let Some(h) = hier.iter().find(|h| h.v2) {
                v2::enable_controllers(&h.mount, unified, &wanted);
            }
        }
        Ok(())
    }

    /// The distinct parent dirs (or, given an id, the sandbox dirs).
    fn dirs(&self, id: Option<&str>) -> Vec<PathBuf> {
        let mut set = BTreeSet::new();
        for p in [&self.memory, &self.pids, &self.cpu].into_iter().flatten() {
            set.insert(p.dir().to_path_buf());
        }
        if let Some(u) = &self.unified {
            set.insert(u.clone());
        }
        set.into_iter()
            .map(|d| id.map_or(d.clone(), |i| d.join(i)))
            .collect()
    }

    /// The (not yet created) cgroup of sandbox `id`.
    pub fn sandbox(&self, id: &str) -> Cgroup {
        let child = |p: &Option<Place>| {
            p.as_ref().map(|p| match p {
                Place::V1(d) => Place::V1(d.join(id)),
                Place::V2(d) => Place::V2(d.join(id)),
            })
        };
        Cgroup {
            memory: child(&self.memory),
            pids: child(&self.pids),
            cpu: child(&self.cpu),
            unified: self.unified.as_ref().map(|u| u.join(id)),
        }
    }

    /// Removes the parent dirs if they are empty (tests use unique parents).
    pub fn remove_parents(&self) {
        for d in self.dirs(None) {
            let _ = fs::remove_dir(&d);
        }
    }
}

fn hierarchies() -> Result<Vec<Hierarchy>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read mountinfo", e))?;
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| RuntimeError::io("read /proc/self/cgroup", e))?;
    Ok(parse_hierarchies(&mountinfo, &own, v2_controllers))
}

/// The cgroup hierarchies in `mountinfo`, with our path in each (from the
/// text of `/proc/self/cgroup`); `v2_ctrls` lists a v2 mount's controllers.
fn parse_hierarchies(
    mountinfo: &str,
    own: &str,
    v2_ctrls: impl Fn(&Path) -> Vec<String>,
) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mount, fstype) = (pre[3], PathBuf::from(pre[4]), post[0]);
        let (v2, controllers) = match fstype {
            "cgroup2" => (true, v2_ctrls(&mount)),
            "cgroup" => (
                false,
                post[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro"))
                    .map(String::from)
                    .collect(),
            ),
            _ => continue,
        };
        let own_path = own_cgroup(own, v2, &controllers).unwrap_or_default();
        let rel = own_path
            .strip_prefix(root)
            .unwrap_or(&own_path)
            .trim_start_matches('/')
            .to_string();
        out.push(Hierarchy {
            mount,
            v2,
            controllers,
            own: PathBuf::from(rel),
        });
    }
    out
}

fn v2_controllers(mount: &Path) -> Vec<String> {
    fs::read_to_string(mount.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Our own path in a hierarchy, from `/proc/self/cgroup`.
fn own_cgroup(proc_cgroup: &str, v2: bool, controllers: &[String]) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if v2 {
            ctrls.is_empty()
        } else {
            !ctrls.is_empty() && ctrls.split(',').any(|c| controllers.iter().any(|m| m == c))
        };
        matches.then(|| path.to_string())
    })
}

/// The cgroup of one sandbox, in every hierarchy involved. Serialized into the
/// sandbox's meta file so a restarted runtime can find and remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub memory: Option<Place>,
    pub pids: Option<Place>,
    pub cpu: Option<Place>,
    pub unified: Option<PathBuf>,
}

impl Cgroup {
    fn dirs(&self) -> Vec<PathBuf> {
        let mut set = BTreeSet::new();
        for p in [&self.memory, &self.pids, &self.cpu].into_iter().flatten() {
            set.insert(p.dir().to_path_buf());
        }
        if let Some(u) = &self.unified {
            set.insert(u.clone());
        }
        set.into_iter().collect()
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self, limits: Limits) -> Result<()> {
        for d in self.dirs() {
            match fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RuntimeError::io(format!("mkdir {}", d.display()), e)),
            }
        }
        self.apply(limits)
    }

    /// Writes the limits (can be called again to change them, e.g. on a warm-pool claim).
    pub fn apply(&self, l: Limits) -> Result<()> {
        let pids = (l.pids_max > 0).then_some(u64::from(l.pids_max));
        match &self.pids {
            Some(Place::V1(d)) => v1::set_pids(d, pids)?,
            Some(Place::V2(d)) => v2::set_pids(d, pids)?,
            None => {}
        }
        self.apply_cpu_memory(l.cpu_millis, l.memory_mb)
    }

    /// Writes only the cpu and memory limits (0 = unlimited), leaving the
    /// task limit as it is: what a warm-pool claim changes.
    pub fn apply_cpu_memory(&self, cpu_millis: u32, memory_mb: u32) -> Result<()> {
        let mem = (memory_mb > 0).then(|| u64::from(memory_mb) << 20);
        let quota =
            (cpu_millis > 0).then(|| (u64::from(cpu_millis) * CPU_PERIOD_US / 1000).max(1000));
        match &self.memory {
            Some(Place::V1(d)) => v1::set_memory(d, mem)?,
            Some(Place::V2(d)) => v2::set_memory(d, mem)?,
            None => {}
        }
        match &self.cpu {
            Some(Place::V1(d)) => v1::set_cpu(d, quota, CPU_PERIOD_US)?,
            Some(Place::V2(d)) => v2::set_cpu(d, quota, CPU_PERIOD_US)?,
            None => {}
        }
        Ok(())
    }

    /// Sets the sandbox's CPU weight among its siblings (no-op without a
    /// cpu controller). `Idle` lets a pool member be made from CPU the
    /// running sandboxes leave over; a claim sets `Normal` again.
    pub fn set_cpu_weight(&self, w: CpuWeight) -> Result<()> {
        match &self.cpu {
            Some(Place::V1(d)) => write(&d.join("cpu.shares"), w.v1_shares()),
            Some(Place::V2(d)) => write(&d.join("cpu.weight"), w.v2_weight()),
            None => Ok(()),
        }
    }

    /// Reads the limits back from the files.
    pub fn read_limits(&self) -> Result<AppliedLimits> {
        let mut out = AppliedLimits::default();
        match &self.memory {
            Some(Place::V1(d)) => (out.memory_bytes, out.memory_swap_bytes) = v1::read_memory(d)?,
            Some(Place::V2(d)) => (out.memory_bytes, out.memory_swap_bytes) = v2::read_memory(d)?,
            None => {}
        }
        if let Some(p) = &self.pids {
            out.pids_max = read_max(&p.dir().join("pids.max"))?;
        }
        match &self.cpu {
            Some(Place::V1(d)) => {
                out.cpu_quota = v1::read_cpu(d)?;
                out.cpu_weight = read_max(&d.join("cpu.shares"))?;
            }
            Some(Place::V2(d)) => {
                out.cpu_quota = v2::read_cpu(d)?;
                out.cpu_weight = read_max(&d.join("cpu.weight"))?;
            }
            None => {}
        }
        Ok(out)
    }

    /// Live counters (memory use, tasks, OOM kills, refused forks).
    pub fn stats(&self) -> SandboxStats {
        let mut s = SandboxStats::default();
        match &self.memory {
            Some(Place::V1(d)) => {
                s.memory_bytes = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
                s.oom_kills = v1::oom_kills(d);
            }
            Some(Place::V2(d)) => {
                s.memory_bytes = read_u64(&d.join("memory.current")).unwrap_or(0);
                s.oom_kills = keyed(&d.join("memory.events"), "oom_kill");
            }
            None => {}
        }
        if let Some(p) = &self.pids {
            s.pids = read_u64(&p.dir().join("pids.current")).unwrap_or(0);
            s.pids_limit_hits = keyed(&p.dir().join("pids.events"), "max");
        }
        s
    }

    /// The `cgroup.procs` files the init's pid goes into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Kills every task in the cgroup (v2 `cgroup.kill` when there is one,
    /// else SIGKILL to each pid listed in the v1 hierarchies).
    pub fn kill_all(&self) {
        if let Some(u) = &self.unified {
            if fs::write(u.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        for d in self.dirs() {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
        }
    }

    /// Removes the directories, killing stragglers and retrying while the
    /// kernel still counts exiting tasks (up to `patience`).
    pub fn remove(&self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        for d in self.dirs() {
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::trace!(dir = %d.display(), error = %e, "cgroup busy, retrying");
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(RuntimeError::io(format!("rmdir {}", d.display()), e)),
                }
            }
        }
        Ok(())
    }
}

/// Reads a file holding one number.
fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Reads a `max`-or-number file (`pids.max`, `memory.max`).
fn read_max(p: &Path) -> Result<Option<u64>> {
    let s =
        fs::read_to_string(p).map_err(|e| RuntimeError::io(format!("read {}", p.display()), e))?;
    let s = s.trim();
    if s == "max" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| RuntimeError::Protocol(format!("{}: unexpected {s:?}", p.display())))
}

/// Reads `key N` from a flat keyed file (`memory.events`, `pids.events`, `memory.oom_control`).
fn keyed(p: &Path, key: &str) -> u64 {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes a control file, naming it in the error.
fn write(p: &Path, v: &str) -> Result<()> {
    fs::write(p, v).map_err(|e| RuntimeError::io(format!("write {v:?} to {}", p.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_hosts_use_v1_controllers_under_our_own_cgroup() {
        let own = "4:memory:/api/x\n1:cpu:/\n8:pids:/\n0::/svc\n";
        let hier = parse_hierarchies(HYBRID, own, |_| vec![]);
        let l = Layout::choose(&hier, "corral");
        assert_eq!(
            l.memory,
            Some(Place::V1("/sys/fs/cgroup/memory/api/x/corral".into()))
        );
        assert_eq!(l.pids, Some(Place::V1("/sys/fs/cgroup/pids/corral".into())));
        assert_eq!(l.cpu, Some(Place::V1("/sys/fs/cgroup/cpu/corral".into())));
        assert_eq!(l.unified, Some("/sys/fs/cgroup/unified/corral".into()));
        let cg = l.sandbox("sb");
        assert_eq!(cg.procs_files().len(), 4);
    }

    #[test]
    fn pure_v2_hosts_use_the_unified_hierarchy_at_its_root() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/system.slice/corral.service\n";
        let hier = parse_hierarchies(mi, own, |_| {
            vec!["cpu".into(), "memory".into(), "pids".into(), "io".into()]
        });
        let l = Layout::choose(&hier, "corral");
        let dir = PathBuf::from("/sys/fs/cgroup/corral");
        assert_eq!(
            (l.memory.clone(), l.pids.clone(), l.cpu.clone()),
            (
                Some(Place::V2(dir.clone())),
                Some(Place::V2(dir.clone())),
                Some(Place::V2(dir.clone()))
            )
        );
        assert_eq!(
            l.sandbox("sb").procs_files(),
            vec![dir.join("sb/cgroup.procs")]
        );
    }

    #[test]
    fn own_cgroup_matches_v1_and_v2_lines() {
        let pc = "4:memory:/a/b\n1:cpu:/\n0::/x\n";
        assert_eq!(
            own_cgroup(pc, false, &["memory".into()]).as_deref(),
            Some("/a/b")
        );
        assert_eq!(own_cgroup(pc, true, &[]).as_deref(), Some("/x"));
        assert_eq!(own_cgroup(pc, false, &["pids".into()]), None);
    }
}
