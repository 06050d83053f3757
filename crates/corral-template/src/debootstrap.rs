//! The `debootstrap` kind: a minimal Debian rootfs (`--variant=minbase`) plus
//! the packages asked for, downloaded from this machine's apt mirror.
//!
//! Results are cached under `<root>/.cache/debootstrap/<key>/`, keyed by
//! (suite, architecture, mirror, sorted packages): a second template with the
//! same inputs is a hard-linked clone made in a blink, with no download.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result, TemplateError};
use crate::fsutil;
use crate::host::DEFAULT_PATH;
use crate::manifest::{ImageConfig, TemplateKind, TemplateSource};
use crate::progress::Progress;
use crate::store::{Built, Template, TemplateStore, CACHE};

pub const DEFAULT_SUITE: &str = "bookworm";

/// What to debootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebootstrapSpec {
    pub suite: String,
    /// Extra packages (`--include`).
    pub packages: Vec<String>,
    /// `None`: the mirror of this machine's apt sources that serves `suite`.
    pub mirror: Option<String>,
}

impl Default for DebootstrapSpec {
    fn default() -> Self {
        Self { suite: DEFAULT_SUITE.to_string(), packages: Vec::new(), mirror: None }
    }
}

/// The inputs after validation and defaulting: what the cache key is made of.
struct Resolved {
    suite: String,
    packages: Vec<String>,
    mirror: String,
    arch: &'static str,
}

impl Resolved {
    fn new(spec: &DebootstrapSpec) -> Result<Self> {
        let bad = |m: String| Err(TemplateError::InvalidArgument(m));
        let suite_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !suite_ok(&spec.suite) {
            return bad(format!("invalid suite {:?}", spec.suite));
        }
        let mut packages = spec.packages.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect::<Vec<_>>();
        packages.sort();
        packages.dedup();
        if let Some(p) = packages.iter().find(|p| !package_ok(p)) {
            return bad(format!("invalid Debian package name {p:?}"));
        }
        let mirror = match &spec.mirror {
            Some(m) => m.trim_end_matches('/').to_string(),
            None => crate::apt_sources::default_mirror(&spec.suite)?,
        };
        let scheme_ok = ["http://", "https://", "file:/"].iter().any(|s| mirror.starts_with(s));
        if !scheme_ok || mirror.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad(format!("invalid mirror {mirror:?} (want an http://, https:// or file:/ URL)"));
        }
        let arch = debian_arch().ok_or_else(|| TemplateError::InvalidArgument("unsupported CPU architecture".into()))?;
        Ok(Self { suite: spec.suite.clone(), packages, mirror, arch })
    }

    fn cache_key(&self) -> String {
        let input = format!("v1\n{}\n{}\n{}\n{}\n", self.suite, self.arch, self.mirror, self.packages.join(","));
        let hex = format!("{:x}", Sha256::digest(input.as_bytes()));
        format!("{}-{}", self.suite, &hex[..16])
    }
}

/// Debian package names: lowercase letters, digits, `+`, `-`, `.`, at least 2 long.
fn package_ok(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn debian_arch() -> Option<&'static str> {
    Some(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        _ => return None,
    })
}

impl TemplateStore {
    /// Builds template `name` with debootstrap (or from the cache), streaming
    /// debootstrap's output lines to `progress`. Needs root and `debootstrap`.
    pub fn build_debootstrap(
        &self,
        name: &str,
        spec: &DebootstrapSpec,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Template> {
        crate::name::validate_name(name)?;
        let resolved = Resolved::new(spec)?;
        if !nix::unistd::geteuid().is_root() {
            return Err(TemplateError::Debootstrap("debootstrap needs root".into()));
        }
        let started = Instant::now();
        self.build_with(name, TemplateKind::Debootstrap, |rootfs| {
            let key = resolved.cache_key();
            let cached = self.cached_debootstrap(&resolved, &key, started, progress)?;
            progress(Progress { elapsed: started.elapsed(), message: "linking the rootfs from the cache".into() });
            fsutil::clone_tree_hardlinked(&cached, rootfs).ctx("cloning the cached rootfs into", rootfs)?;
            let Resolved { suite, packages, mirror, .. } = resolved;
            Ok(Built {
                config: ImageConfig { env: vec![DEFAULT_PATH.to_string()], cwd: Some("/".into()), ..Default::default() },
                source: TemplateSource::Debootstrap { suite, packages, mirror, cache_key: key },
            })
        })
    }

    /// The cached rootfs for `key`, running debootstrap first if it is missing.
    /// Concurrent builds of one key may both run; the first rename wins.
    fn cached_debootstrap(
        &self,
        r: &Resolved,
        key: &str,
        started: Instant,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<std::path::PathBuf> {
        let dir = self.root().join(CACHE).join("debootstrap");
        let done = dir.join(key);
        if done.is_dir() {
            progress(Progress { elapsed: started.elapsed(), message: format!("cache hit {key}: no download") });
            return Ok(done);
        }
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        fsutil::remove_tree(&tmp).ctx("cleaning up", &tmp)?;
        fs::create_dir_all(&tmp).ctx("creating", &tmp)?;
        let run = run_debootstrap(r, &tmp, started, progress);
        let renamed = run.and_then(|()| match fs::rename(&tmp, &done) {
            Ok(()) => Ok(()),
            Err(_) if done.is_dir() => Ok(()), // another build finished first
            Err(e) => Err(e).ctx("renaming into the cache", &done),
        });
        fsutil::remove_tree(&tmp).ctx("cleaning up", &tmp)?;
        renamed.map(|()| done)
    }
}

/// Runs debootstrap into `target`, forwarding each stdout/stderr line.
fn run_debootstrap(r: &Resolved, target: &Path, started: Instant, progress: &mut dyn FnMut(Progress)) -> Result<()> {
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase").arg(format!("--arch={}", r.arch));
    if !r.packages.is_empty() {
        cmd.arg(format!("--include={}", r.packages.join(",")));
    }
    cmd.arg(&r.suite).arg(target).arg(&r.mirror);
    cmd.env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    progress(Progress { elapsed: started.elapsed(), message: format!("running {cmd:?}") });
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            TemplateError::Debootstrap("the debootstrap program is not installed (apt-get install debootstrap)".into())
        }
        _ => TemplateError::Debootstrap(format!("cannot start debootstrap: {e}")),
    })?;
    let (tx, rx) = mpsc::channel();
    let readers: Vec<_> = [child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>), child.stderr.take().map(|e| Box::new(e) as _)]
        .into_iter()
        .flatten()
        .map(|out| {
            let tx = tx.clone();
            std::thread::spawn(move || BufReader::new(out).lines().map_while(|l| l.ok()).for_each(|l| drop(tx.send(l))))
        })
        .collect();
    drop(tx);
    let mut tail = VecDeque::new();
    for line in rx {
        if tail.len() == 8 {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        progress(Progress { elapsed: started.elapsed(), message: line });
    }
    readers.into_iter().for_each(|h| drop(h.join()));
    let status = child.wait().map_err(|e| TemplateError::Debootstrap(format!("waiting for debootstrap: {e}")))?;
    if !status.success() {
        let tail: Vec<_> = tail.into_iter().collect();
        return Err(TemplateError::Debootstrap(format!("{status}; last output:\n{}", tail.join("\n"))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_ignores_package_order_and_duplicates() {
        let spec = |p: &[&str]| DebootstrapSpec {
            suite: "bookworm".into(),
            packages: p.iter().map(|s| s.to_string()).collect(),
            mirror: Some("http://m.example/debian/".into()),
        };
        let a = Resolved::new(&spec(&["python3", "curl"])).unwrap();
        let b = Resolved::new(&spec(&["curl", "python3", "curl", " "])).unwrap();
        assert_eq!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), Resolved::new(&spec(&["curl"])).unwrap().cache_key());
        assert_eq!(a.mirror, "http://m.example/debian");
    }

    #[test]
    fn refuses_bad_inputs() {
        let mk = |suite: &str, pkg: &str, mirror: &str| {
            Resolved::new(&DebootstrapSpec { suite: suite.into(), packages: vec![pkg.into()], mirror: Some(mirror.into()) })
        };
        assert!(mk("bookworm", "python3", "http://m/d").is_ok());
        assert!(mk("../x", "python3", "http://m/d").is_err());
        assert!(mk("bookworm", "--evil", "http://m/d").is_err());
        assert!(mk("bookworm", "a,b", "http://m/d").is_err());
        assert!(mk("bookworm", "python3", "ftp://m/d").is_err());
        assert!(mk("bookworm", "python3", "http://m/d x").is_err());
    }
}
