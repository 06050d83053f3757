//! The `base` template: the host's own read-only `/usr` (and merged-usr
//! symlinks) under a tiny skeleton with a minimal `/etc`, so the host's
//! `/usr/bin/python3`, `/usr/bin/node`, `/bin/sh` … run in a sandbox with
//! nothing downloaded. Nothing else of the host (its `/etc`, `/root`,
//! `/home`, `/var`) is visible.
//!
//! Built once under `<cache>/base/rootfs` (into a temporary dir renamed into
//! place, so a crash never leaves a half template) and reused afterwards.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Template;
use crate::config::BindMount;
use crate::error::{Result, RuntimeError};

/// Bumped when the skeleton changes, so caches are rebuilt.
const VERSION: &str = "corral-base-v2";
/// File in the rootfs root holding [`VERSION`]; written last, so its presence means complete.
const STAMP: &str = ".corral-template";

/// Top-level dirs of the skeleton, with their modes.
const DIRS: &[(&str, u32)] = &[
    ("usr", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    // World-searchable for hosts without id-mapped mounts, where overlay
    // looks names up in the lower layers as the (unmapped) sandbox root.
    // The sandbox still sees /root as 0700: its copy in the upper layer wins.
    ("root", 0o755),
    ("home", 0o755),
    ("run", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
];

/// Top-level paths that are either merged-usr symlinks or, on older hosts,
/// directories to bind.
const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

fn io<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| RuntimeError::io(what(), e))
}

/// Builds (or reuses) the base template under `cache_dir`.
pub fn base_template(cache_dir: &Path) -> Result<Template> {
    let home = cache_dir.join("base");
    let rootfs = home.join("rootfs");
    io(fs::create_dir_all(&home), || {
        format!("mkdir {}", home.display())
    })?;
    for d in [cache_dir, home.as_path()] {
        // The sandbox root (an unprivileged host uid) must traverse these.
        io(
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)),
            || format!("chmod {}", d.display()),
        )?;
    }
    let binds = host_binds();
    if fs::read_to_string(rootfs.join(STAMP)).ok().as_deref() == Some(VERSION) {
        return Ok(Template {
            name: "base".into(),
            layers: vec![rootfs],
            binds,
        });
    }
    let pid = std::process::id();
    let tmp = home.join(format!("rootfs.tmp.{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    build(&tmp)?;
    io(fs::write(tmp.join(STAMP), VERSION), || {
        "write template stamp".into()
    })?;
    if rootfs.exists() {
        // An outdated or broken build: move it aside (sandboxes may still use it).
        let _ = fs::rename(&rootfs, home.join(format!("rootfs.old.{pid}")));
    }
    if fs::rename(&tmp, &rootfs).is_err() {
        // Someone built it concurrently; theirs is as good as ours.
        let _ = fs::remove_dir_all(&tmp);
        if fs::read_to_string(rootfs.join(STAMP)).ok().as_deref() != Some(VERSION) {
            return Err(RuntimeError::Setup(format!(
                "cannot install {}",
                rootfs.display()
            )));
        }
    }
    Ok(Template {
        name: "base".into(),
        layers: vec![rootfs],
        binds,
    })
}

/// `/usr`, plus any of [`USR_LINKS`] that is a real directory on this host.
fn host_binds() -> Vec<BindMount> {
    let mut binds = vec![BindMount {
        source: "/usr".into(),
        target: "/usr".into(),
        readonly: true,
    }];
    for name in USR_LINKS {
        let p = Path::new("/").join(name);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            binds.push(BindMount {
                source: p,
                target: format!("/{name}"),
                readonly: true,
            });
        }
    }
    binds
}

fn build(root: &Path) -> Result<()> {
    io(fs::create_dir_all(root), || {
        format!("mkdir {}", root.display())
    })?;
    io(
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)),
        || "chmod rootfs".into(),
    )?;
    for (d, mode) in DIRS {
        let p = root.join(d);
        io(fs::create_dir_all(&p), || format!("mkdir {}", p.display()))?;
        io(
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)),
            || format!("chmod {}", p.display()),
        )?;
    }
    for name in USR_LINKS {
        let host = Path::new("/").join(name);
        match fs::read_link(&host) {
            Ok(target) => io(symlink(&target, root.join(name)), || {
                format!("symlink {name}")
            })?,
            Err(_) if host.is_dir() => {
                io(fs::create_dir(root.join(name)), || format!("mkdir {name}"))?
            }
            Err(_) => {}
        }
    }
    write_etc(&root.join("etc"))
}

fn write_etc(etc: &Path) -> Result<()> {
    let files: &[(&str, &str)] = &[
        ("passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        ("group", "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n"),
        ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        ("resolv.conf", "# sandboxes have loopback only\n"),
        ("nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"),
        ("hostname", "sandbox\n"),
    ];
    for (name, body) in files {
        io(fs::write(etc.join(name), body), || {
            format!("write /etc/{name}")
        })?;
        io(
            fs::set_permissions(etc.join(name), fs::Permissions::from_mode(0o644)),
            || format!("chmod /etc/{name}"),
        )?;
    }
    copy_host(Path::new("/etc/ld.so.cache"), &etc.join("ld.so.cache"))?;
    for name in ["os-release", "debian_version", "mime.types"] {
        copy_host(&Path::new("/etc").join(name), &etc.join(name))?;
    }
    copy_alternatives(etc)
}

/// Copies a host file (or symlink) if it exists, world-readable.
fn copy_host(src: &Path, dst: &Path) -> Result<()> {
    match fs::symlink_metadata(src) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = io(fs::read_link(src), || format!("readlink {}", src.display()))?;
            io(symlink(target, dst), || {
                format!("symlink {}", dst.display())
            })
        }
        Ok(_) => {
            io(fs::copy(src, dst), || format!("copy {}", src.display()))?;
            io(
                fs::set_permissions(dst, fs::Permissions::from_mode(0o644)),
                || format!("chmod {}", dst.display()),
            )
        }
        Err(_) => Ok(()),
    }
}

/// Debian's `/etc/alternatives` symlinks (awk, editors, …) point into `/usr`.
fn copy_alternatives(etc: &Path) -> Result<()> {
    let Ok(rd) = fs::read_dir("/etc/alternatives") else {
        return Ok(());
    };
    let dst: PathBuf = etc.join("alternatives");
    io(fs::create_dir_all(&dst), || "mkdir alternatives".into())?;
    for entry in rd.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            let _ = symlink(target, dst.join(entry.file_name()));
        }
    }
    Ok(())
}
