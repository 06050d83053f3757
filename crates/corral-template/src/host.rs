//! The `host` kind: a template that borrows the host's own read-only `/usr`
//! (and `/bin`, `/lib`, ... where they are real dirs), so `/usr/bin/python3`
//! and `/usr/bin/node` work in a sandbox with nothing downloaded or copied.
//!
//! The rootfs stored here is only a small skeleton: empty mount targets, the
//! merged-/usr symlinks the host has, and a minimal `/etc`. The runtime
//! bind-mounts the host dirs listed in [`default_host_binds`] read-only
//! (nosuid, nodev) onto those targets when a sandbox starts. The builder is a
//! parameter of [`TemplateStore::ensure_host_template`], so the runtime crate
//! can plug in its own.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TemplateError};
use crate::manifest::{ImageConfig, TemplateKind, TemplateSource, TemplateStatus};
use crate::store::{Built, Template, TemplateStore};

/// A host directory the runtime mounts into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBind {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Top-level host dirs that hold programs and libraries.
const PROGRAM_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/usr`, plus each of `/bin`, `/lib`, ... that is a real directory on this
/// host (on merged-/usr hosts they are symlinks into `/usr` and need no bind).
pub fn default_host_binds() -> Vec<HostBind> {
    let ro = |p: &str| HostBind { source: PathBuf::from(p), target: PathBuf::from(p), read_only: true };
    let mut binds = vec![ro("/usr")];
    for d in PROGRAM_DIRS {
        let host = Path::new("/").join(d);
        if fs::symlink_metadata(&host).map(|m| m.is_dir()).unwrap_or(false) {
            binds.push(ro(&host.to_string_lossy()));
        }
    }
    binds
}

/// Builds the skeleton rootfs: mount targets for [`default_host_binds`], the
/// host's merged-/usr symlinks, the usual empty dirs and a minimal `/etc`.
pub fn default_host_builder(rootfs: &Path) -> io::Result<()> {
    for bind in default_host_binds() {
        fs::create_dir_all(rootfs.join(bind.target.strip_prefix("/").unwrap_or(&bind.target)))?;
    }
    for d in PROGRAM_DIRS {
        if let Ok(target) = fs::read_link(Path::new("/").join(d)) {
            symlink(target, rootfs.join(d))?;
        }
    }
    for (d, mode) in [("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("root", 0o700)]
        .into_iter()
        .chain([("home", 0o755), ("run", 0o755), ("var/tmp", 0o1777), ("etc", 0o755)])
    {
        let p = rootfs.join(d);
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    }
    write_etc(&rootfs.join("etc"))
}

/// Just enough `/etc` for `id`, `getent`, Python and Node to work: a root and
/// a nobody user, localhost, and no DNS server (isolated sandboxes have no network).
fn write_etc(etc: &Path) -> io::Result<()> {
    let files: [(&str, &str); 5] = [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        ("group", "root:x:0:\nnogroup:x:65534:\n"),
        ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ("resolv.conf", "# no DNS: the runtime replaces this file when the sandbox has a network\n"),
        ("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"),
    ];
    for (name, body) in files {
        fs::write(etc.join(name), body)?;
        fs::set_permissions(etc.join(name), fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// A PATH that finds programs on Debian-like hosts.
pub(crate) const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl TemplateStore {
    /// Returns the `host` template `name`, building it with `build` if it is
    /// missing or failed. `binds` is recorded for the runtime (use
    /// [`default_host_binds`] with [`default_host_builder`]).
    pub fn ensure_host_template(
        &self,
        name: &str,
        binds: Vec<HostBind>,
        build: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<Template> {
        match self.get(name) {
            Ok(t) if t.meta.status == TemplateStatus::Ready && t.meta.kind == TemplateKind::Host => return Ok(t),
            Ok(t) if t.meta.status == TemplateStatus::Ready => {
                return Err(TemplateError::InvalidArgument(format!(
                    "template {name:?} exists but is of kind {:?}, not host",
                    t.meta.kind
                )))
            }
            _ => {}
        }
        let built = self.build_with(name, TemplateKind::Host, |rootfs| {
            build(rootfs).map_err(TemplateError::HostBuild)?;
            let config = ImageConfig { env: vec![DEFAULT_PATH.to_string()], cwd: Some("/".into()), ..Default::default() };
            Ok(Built { config, source: TemplateSource::Host { binds } })
        });
        match built {
            // Another process built it between our look and our lock.
            Err(TemplateError::AlreadyExists(_)) => self.get(name),
            other => other,
        }
    }
}
