//! File-tree helpers that are careful about mounts: a rootfs being built may
//! have `/proc` or a bind of the host's `/dev` mounted inside it (debootstrap
//! does that), and deleting through such a mount would destroy host files.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Unmounts everything mounted at or below `dir`, deepest first. Only root can
/// have mounted anything there, so others skip this.
pub(crate) fn unmount_below(dir: &Path) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Ok(canon) = fs::canonicalize(dir) else { return Ok(()) };
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&canon))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io::Error::other(format!("unmounting {}: {e}", p.display())))?;
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes a file or a whole tree. Unmounts what is mounted below first, and
/// refuses to descend into another filesystem should anything remain.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    unmount_below(path)?;
    remove_dir_same_fs(path, meta.dev())
}

fn remove_dir_same_fs(dir: &Path, dev: u64) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.dev() != dev {
        return Err(io::Error::other(format!("refusing to delete across a mount point at {}", dir.display())));
    }
    // Images may ship read-only dirs (0555); as non-root we could not empty them.
    if meta.mode() & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() | 0o700))?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_dir_same_fs(&entry.path(), dev)?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Disk usage of a tree in bytes, like `du -s`: allocated blocks, hard links
/// counted once, not crossing into other filesystems.
pub(crate) fn disk_usage(root: &Path) -> io::Result<u64> {
    let dev = fs::symlink_metadata(root)?.dev();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let m = entry.metadata()?;
            if m.dev() != dev || (m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Recreates the tree `src` at `dst` sharing every non-directory inode by hard
/// link: instant and free in space. Safe because templates are read-only
/// (overlay lower dirs): nothing writes into either copy after the build.
pub(crate) fn clone_tree_hardlinked(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir_all(dst)?;
    copy_dir_attrs(&meta, dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let ft = entry.file_type()?;
        if ft.is_dir() {
            clone_tree_hardlinked(&from, &to)?;
        } else if ft.is_symlink() {
            let m = fs::symlink_metadata(&from)?;
            symlink(fs::read_link(&from)?, &to)?;
            if nix::unistd::geteuid().is_root() {
                lchown(&to, Some(m.uid()), Some(m.gid()))?;
            }
        } else {
            fs::hard_link(&from, &to)?;
        }
    }
    Ok(())
}

fn copy_dir_attrs(meta: &fs::Metadata, dir: &Path) -> io::Result<()> {
    if nix::unistd::geteuid().is_root() {
        lchown(dir, Some(meta.uid()), Some(meta.gid()))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn clone_shares_inodes_and_keeps_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"hi").unwrap();
        symlink("d/f", src.join("l")).unwrap();
        clone_tree_hardlinked(&src, &t.path().join("dst")).unwrap();
        let (a, b) = (fs::metadata(src.join("d/f")).unwrap(), fs::metadata(t.path().join("dst/d/f")).unwrap());
        assert_eq!(a.ino(), b.ino());
        assert_eq!(fs::read_link(t.path().join("dst/l")).unwrap(), PathBuf::from("d/f"));
        remove_tree(&t.path().join("dst")).unwrap();
        assert!(!t.path().join("dst").exists());
        assert_eq!(fs::read(src.join("d/f")).unwrap(), b"hi");
    }
}
