//! The sandbox's filesystem, built by the init inside its own mount namespace
//! (nothing here is visible on the host, and everything disappears with the
//! namespace when the init dies — teardown needs no unmount).
//!
//! Layout: a tmpfs of `disk_mb` (the writable-layer limit) on the sandbox's
//! `mnt` dir holds `upper/`, `work/` and `root/`; `root/` is an overlay of the
//! read-only template layers under `upper/`. Then template binds, a fresh
//! `/proc` with runc's masks, a minimal `/dev`, a private `/tmp`, a read-only
//! `/sys`, and `pivot_root` into it. The template directories are never
//! written: every change lands in `upper/`.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::config::BindMount;
use crate::protocol::InitConfig;

/// /proc files hidden behind /dev/null.
const MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "kallsyms",
    "kmsg",
    "sysrq-trigger",
];
/// /proc dirs hidden behind an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &["acpi", "asound", "scsi", "firmware", "driver"];
/// /proc dirs made read-only.
const READONLY_DIRS: &[&str] = &["sys", "irq", "bus", "fs"];
/// Host device nodes bind-mounted into /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn ctx<T>(r: nix::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn io_ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Builds the whole root and pivots into it. Runs as the sandbox root with
/// all capabilities of the sandbox's user namespace.
pub(crate) fn build_root(
    cfg: &InitConfig,
    layers: Vec<OwnedFd>,
    phases: &mut crate::init::Phases,
) -> Result<(), String> {
    ctx(
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
        || "make / private".into(),
    )?;
    let root = mount_layers(cfg, layers)?;
    for b in &cfg.binds {
        bind(b, &root)?;
    }
    phases.mark("overlay, binds");
    mount_proc(&root.join("proc"))?;
    phases.mark("proc");
    mount_dev(&root.join("dev"), cfg.disk_mb)?;
    let tmp_opts = format!("mode=1777,size={}m", cfg.disk_mb.max(1));
    mount_fs(
        "tmpfs",
        &root.join("tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&tmp_opts),
    )?;
    mount_sys(&root.join("sys"));
    phases.mark("dev, tmp, sys");
    pivot(&root)?;
    phases.mark("pivot_root");
    Ok(())
}

/// tmpfs + overlay. Returns the merged root. `layers` are the spawner's
/// id-mapped clones of `cfg.lowers` (attached under the tmpfs, where
/// `pivot_root` will leave them unreachable), or empty to use the paths.
fn mount_layers(cfg: &InitConfig, layers: Vec<OwnedFd>) -> Result<PathBuf, String> {
    let mnt = &cfg.mount_dir;
    let opts = format!("size={}m,mode=0755", cfg.disk_mb.max(1));
    mount_fs(
        "tmpfs",
        mnt,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&opts),
    )?;
    let (upper, work, root) = (mnt.join("upper"), mnt.join("work"), mnt.join("root"));
    for d in [&upper, &work, &root] {
        mkdir(d, 0o755)?;
    }
    populate_upper(&upper, cfg)?;
    let lowers: Vec<String> = if !layers.is_empty() && layers.len() == cfg.lowers.len() {
        attach_layers(mnt, layers)?
    } else {
        cfg.lowers.iter().map(|p| p.display().to_string()).collect()
    };
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount_fs(
        "overlay",
        &root,
        "overlay",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&opts),
    )?;
    Ok(root)
}

/// Attaches the detached layer mounts at `mnt/lower<i>`; returns their paths.
fn attach_layers(mnt: &Path, layers: Vec<OwnedFd>) -> Result<Vec<String>, String> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let mut paths = Vec::with_capacity(layers.len());
    for (i, fd) in layers.into_iter().enumerate() {
        let target = mnt.join(format!("lower{i}"));
        mkdir(&target, 0o755)?;
        let c_target =
            std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: move_mount of a detached mount fd we own onto a dir we created.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                c_target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc != 0 {
            return Err(format!(
                "attach layer {i}: {}",
                std::io::Error::last_os_error()
            ));
        }
        paths.push(target.display().to_string());
    }
    Ok(paths)
}

/// Entries the sandbox root must own: the upper dir shadows the template's
/// (host-owned, hence unwritable) dirs of the same name, so `/`, `/etc`, the
/// workdir and `/root` are writable by the sandbox root.
fn populate_upper(upper: &Path, cfg: &InitConfig) -> Result<(), String> {
    // Mount points an image may lack (OCI images built `FROM scratch` have
    // no /proc or /dev): created in the upper dir, they merge with the
    // template's own where it has them.
    for d in ["proc", "dev", "sys", "tmp"] {
        mkdir(&upper.join(d), 0o755)?;
    }
    mkdir(&upper.join("etc"), 0o755)?;
    mkdir(&upper.join("root"), 0o700)?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        cfg.id
    );
    io_ctx(fs::write(upper.join("etc/hosts"), hosts), || {
        "write /etc/hosts".into()
    })?;
    io_ctx(
        fs::write(upper.join("etc/hostname"), format!("{}\n", cfg.id)),
        || "write /etc/hostname".into(),
    )?;
    let wd = cfg.workdir.trim_start_matches('/');
    if !wd.is_empty() {
        io_ctx(
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(upper.join(wd)),
            || format!("create workdir {}", cfg.workdir),
        )?;
    }
    Ok(())
}

fn mkdir(p: &Path, mode: u32) -> Result<(), String> {
    match fs::DirBuilder::new().mode(mode).create(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("mkdir {}: {e}", p.display())),
    }
    // The umask must not narrow modes like 1777.
    io_ctx(
        fs::set_permissions(p, fs::Permissions::from_mode(mode)),
        || format!("chmod {}", p.display()),
    )
}

fn mount_fs(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    ctx(mount(Some(src), target, Some(fstype), flags, data), || {
        format!("mount {fstype} on {}", target.display())
    })
}

/// Bind-mounts `src` on `target`, then remounts it with `flags` (read-only,
/// nosuid, …). The remount must repeat flags the kernel locked on the source.
fn bind_with(src: &Path, target: &Path, flags: MsFlags) -> Result<(), String> {
    ctx(
        mount(
            Some(src),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
        || format!("bind {} on {}", src.display(), target.display()),
    )?;
    if flags.is_empty() {
        return Ok(());
    }
    let re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
    ctx(
        mount(None::<&str>, target, None::<&str>, re, None::<&str>),
        || format!("remount {}", target.display()),
    )
}

/// A template bind (always nosuid, nodev; read-only when asked).
fn bind(b: &BindMount, root: &Path) -> Result<(), String> {
    let target = root.join(b.target.trim_start_matches('/'));
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if b.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    bind_with(&b.source, &target, flags)
}

/// A fresh procfs for the sandbox's pid namespace, with runc's masks.
fn mount_proc(proc: &Path) -> Result<(), String> {
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", proc, "proc", locked, None)?;
    for f in MASKED_FILES {
        let p = proc.join(f);
        if p.exists() {
            bind_with(Path::new("/dev/null"), &p, MsFlags::empty())?;
        }
    }
    for d in MASKED_DIRS {
        let p = proc.join(d);
        if p.is_dir() {
            mount_fs(
                "tmpfs",
                &p,
                "tmpfs",
                locked | MsFlags::MS_RDONLY,
                Some("size=0"),
            )?;
        }
    }
    for d in READONLY_DIRS {
        let p = proc.join(d);
        if p.is_dir() {
            bind_with(&p, &p, locked | MsFlags::MS_RDONLY)?;
        }
    }
    Ok(())
}

/// A minimal /dev: a few host nodes, a private devpts, /dev/shm.
fn mount_dev(dev: &Path, disk_mb: u32) -> Result<(), String> {
    mount_fs(
        "tmpfs",
        dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    for name in DEVICES {
        let node = dev.join(name);
        io_ctx(fs::File::create(&node), || {
            format!("create {}", node.display())
        })?;
        bind_with(&Path::new("/dev").join(name), &node, MsFlags::empty())?;
    }
    let pts = dev.join("pts");
    mkdir(&pts, 0o755)?;
    mount_fs(
        "devpts",
        &pts,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    let shm_opts = format!("mode=1777,size={}m", disk_mb.max(1));
    mount_fs(
        "tmpfs",
        &shm,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&shm_opts),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        io_ctx(std::os::unix::fs::symlink(to, dev.join(link)), || {
            format!("symlink /dev/{link}")
        })?;
    }
    Ok(())
}

/// Read-only sysfs of the sandbox's network namespace, best effort (left
/// empty if the kernel refuses).
fn mount_sys(sys: &Path) {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount_fs("sysfs", sys, "sysfs", flags, None) {
        tracing::debug!(error = %e, "no /sys in sandbox");
        return;
    }
    let fw = sys.join("firmware");
    if fw.is_dir() {
        let _ = mount_fs("tmpfs", &fw, "tmpfs", flags, Some("size=0"));
    }
}

/// `pivot_root` into `root` and detach the old root, so no host path stays reachable.
fn pivot(root: &Path) -> Result<(), String> {
    ctx(nix::unistd::chdir(root), || {
        format!("chdir {}", root.display())
    })?;
    ctx(nix::unistd::pivot_root(".", "."), || "pivot_root".into())?;
    ctx(umount2(".", MntFlags::MNT_DETACH), || {
        "detach old root".into()
    })?;
    ctx(nix::unistd::chdir("/"), || "chdir /".into())
}

/// Creates the workdir (inside the new root) if a lower layer lacks it, and enters it.
pub(crate) fn enter_workdir(workdir: &str) -> Result<(), String> {
    let wd = if workdir.is_empty() { "/" } else { workdir };
    io_ctx(
        fs::DirBuilder::new().recursive(true).mode(0o755).create(wd),
        || format!("create workdir {wd}"),
    )?;
    ctx(nix::unistd::chdir(wd), || format!("chdir {wd}"))
}
