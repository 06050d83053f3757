//! podman, the container tool a self-hosting user would reach for.
//!
//! A "sandbox" is one `podman run --rm -i` container, alive from create to
//! destroy, running a keeper shell (see [`super::stdio`]); the readiness
//! command is exec'd by that shell inside the container. Flags are the ones
//! that work on hybrid-cgroup hosts: `--runtime runc --network none` and
//! rlimits within ours.
//!
//! Images cannot be pulled here, so the image is built locally with
//! `podman import` from a tarball of the base content and cached by name. The
//! full base content is the host's `/usr` (gigabytes), so the image holds the
//! part of it that the readiness command and the keeper use: the readiness
//! program, `/bin/sh`, their shared libraries (from `ldd`), the usr-merge
//! symlinks and the base `/etc` files — the same bytes the bwrap sandbox sees.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::bwrap::{BASE_ETC, BASE_TOP};
use super::stdio::{keeper_argv, StdioSandbox};
use super::{tool_version, BoxFuture, Provider, ProviderConfig, ProviderError, Sandbox};
use crate::BenchError;

/// Every container this process starts carries this label with our pid, so
/// leftovers can be removed after an interrupted run.
const LABEL: &str = "corral-bench";

pub struct PodmanProvider {
    image: String,
    program: String,
}

impl PodmanProvider {
    pub fn new(c: &ProviderConfig) -> Self {
        PodmanProvider { image: c.image.clone(), program: c.readiness_program.clone() }
    }

    /// The image name, versioned by what goes into it.
    pub fn image_ref(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.program.hash(&mut h);
        if let Ok(m) = std::fs::metadata(&self.program) {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
        format!("localhost/{}:{:012x}", self.image, h.finish() & 0xffff_ffff_ffff)
    }

    fn run_args(&self, name: &str) -> Vec<String> {
        let mut a: Vec<String> = ["run", "--rm", "-i", "--runtime", "runc", "--network", "none"].map(String::from).to_vec();
        a.extend(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"].map(String::from));
        a.extend(["--label".into(), format!("{LABEL}={}", std::process::id()), "--name".into(), name.into()]);
        a.push(self.image_ref());
        a
    }
}

fn unavailable(m: impl Into<String>) -> BenchError {
    BenchError::Unavailable { provider: "podman".into(), message: m.into() }
}

async fn run_ok(cmd: &mut Command) -> Result<String, BenchError> {
    let out = cmd.kill_on_drop(true).output().await.map_err(|e| unavailable(e.to_string()))?;
    if !out.status.success() {
        return Err(unavailable(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Shared libraries `ldd` lists for `program`.
async fn libraries(program: &str) -> Result<Vec<PathBuf>, BenchError> {
    let out = run_ok(Command::new("ldd").arg(program)).await?;
    Ok(out.split_whitespace().filter(|w| w.starts_with('/')).map(PathBuf::from).collect())
}

/// Paths (relative to `/`) to put in the image: each file as named and as
/// resolved, with every parent directory.
async fn closure(program: &str) -> Result<(Vec<String>, Vec<String>), BenchError> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for bin in [program, "/bin/sh"] {
        files.insert(PathBuf::from(bin));
        files.extend(libraries(bin).await?);
    }
    let mut entries: BTreeSet<PathBuf> = BTreeSet::new();
    for f in &files {
        let (Some(parent), Some(name)) = (f.parent(), f.file_name()) else { continue };
        let parent = parent.canonicalize().map_err(|e| BenchError::io("resolve", parent, e))?;
        entries.insert(parent.join(name));
        entries.insert(f.canonicalize().map_err(|e| BenchError::io("resolve", f, e))?);
    }
    for top in BASE_TOP {
        if std::fs::symlink_metadata(top).is_ok() {
            entries.insert(PathBuf::from(top));
        }
    }
    let mut with_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for e in &entries {
        with_dirs.extend(e.ancestors().filter(|a| *a != Path::new("/")).map(Path::to_path_buf));
    }
    let rel = |p: &Path| p.strip_prefix("/").unwrap_or(p).display().to_string();
    let flat = with_dirs.iter().map(|p| rel(p)).collect();
    let etc = BASE_ETC.iter().filter(|p| Path::new(p).exists()).map(|p| rel(Path::new(p))).collect();
    Ok((flat, etc))
}

impl PodmanProvider {
    async fn build_image(&self) -> Result<(), BenchError> {
        let (flat, etc) = closure(&self.program).await?;
        let dir = std::env::temp_dir().join(format!("corral-bench-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        let tar = dir.join("rootfs.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("-cf").arg(&tar).args(["-C", "/", "--no-recursion"]).args(&flat).arg("--recursion").args(&etc);
        let built = run_ok(&mut cmd).await;
        let imported = match built {
            Ok(_) => run_ok(Command::new("podman").arg("import").arg(&tar).arg(self.image_ref())).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&dir);
        imported
    }

    /// Removes containers this process started and left behind.
    pub async fn cleanup(&self) {
        let filter = format!("label={LABEL}={}", std::process::id());
        let Ok(ids) = run_ok(Command::new("podman").args(["ps", "-aq", "--filter", &filter])).await else { return };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = run_ok(Command::new("podman").args(["rm", "-f"]).args(&ids)).await;
        }
        kill_orphan_monitors(&format!("corral-bench-{}-", std::process::id()));
    }
}

impl Provider for PodmanProvider {
    fn name(&self) -> &'static str {
        "podman"
    }

    /// Checks podman, builds the image if it is not cached, runs it once.
    fn prepare<'a>(&'a self) -> BoxFuture<'a, Result<(), BenchError>> {
        Box::pin(async move {
            tool_version("podman").await.map_err(unavailable)?;
            let exists = Command::new("podman").args(["image", "exists", &self.image_ref()]).status().await;
            if !matches!(exists, Ok(s) if s.success()) {
                self.build_image().await?;
            }
            let mut args = self.run_args(&format!("corral-bench-check-{}", std::process::id()));
            args.push(self.program.clone());
            args.push("--version".into());
            run_ok(Command::new("podman").args(&args)).await.map(|_| ())
        })
    }

    fn create<'a>(&'a self, index: usize, timeout: Duration) -> BoxFuture<'a, Result<Box<dyn Sandbox>, ProviderError>> {
        Box::pin(async move {
            let name = format!("corral-bench-{}-{index}", std::process::id());
            let mut cmd = Command::new("podman");
            cmd.args(self.run_args(&name)).args(keeper_argv());
            let sb = StdioSandbox::spawn(name, cmd, timeout).await?;
            Ok(Box::new(sb) as Box<dyn Sandbox>)
        })
    }

    fn cleanup<'a>(&'a self) -> BoxFuture<'a, ()> {
        Box::pin(PodmanProvider::cleanup(self))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "image": self.image_ref(), "run": self.run_args("NAME").join(" ") })
    }
}

/// A create interrupted mid-way (its `podman run` killed) can leave a
/// `conmon` and its container process behind that podman no longer lists:
/// kill those whose command line names one of our containers.
fn kill_orphan_monitors(name_prefix: &str) {
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !(cmdline.starts_with("/usr/bin/conmon") || cmdline.starts_with("conmon")) || !cmdline.contains(name_prefix) {
            continue;
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
            // SAFETY: signalling a process by pid.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
