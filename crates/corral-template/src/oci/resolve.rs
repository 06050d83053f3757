//! Path handling for untrusted layer entries: every path is relative to the
//! rootfs being built, and symlinks already in it are followed the way they
//! would be inside the sandbox (absolute targets mean the rootfs root), never
//! out of it. A path that would climb above the root is refused.

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Why a path is unsafe (the caller adds the layer and the path).
pub(crate) type Unsafe = String;

const MAX_SYMLINK_HOPS: usize = 40;

/// Splits an entry path into plain components, refusing absolute paths and
/// `..`. `./a/./b/` → `[a, b]`; an empty result means the root itself.
pub(crate) fn clean_components(path: &Path) -> Result<Vec<OsString>, Unsafe> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("it contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path".into()),
        }
    }
    Ok(out)
}

/// Resolves `parts` under `root`, following every symlink met on the way with
/// `root` as `/`. Returns the resolved path relative to `root`, whose existing
/// components are all real directories or the (unfollowed) last component.
/// Missing components are kept as they are (the caller creates them).
pub(crate) fn resolve_in_root(root: &Path, parts: &[OsString], follow_last: bool) -> Result<PathBuf, Unsafe> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: Vec<OsString> = parts.iter().rev().cloned().collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.to_str() {
            Some(".") => continue,
            Some("..") => {
                done.pop().ok_or("a symlink on its way points above the image root")?;
                continue;
            }
            _ => {}
        }
        done.push(part);
        if todo.is_empty() && !follow_last {
            break;
        }
        let here: PathBuf = root.join(done.iter().collect::<PathBuf>());
        let Ok(meta) = fs::symlink_metadata(&here) else { continue };
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err("too many levels of symlinks".into());
        }
        let target = fs::read_link(&here).map_err(|e| format!("reading symlink: {e}"))?;
        done.pop();
        if target.is_absolute() {
            done.clear();
        }
        // Push the target's components (".." kept, handled above) in front of the rest.
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    }
    Ok(done.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn parts(s: &str) -> Vec<OsString> {
        clean_components(Path::new(s)).unwrap()
    }

    #[test]
    fn cleans_and_refuses() {
        assert_eq!(parts("./a/./b/"), [OsString::from("a"), OsString::from("b")]);
        assert!(clean_components(Path::new("/etc/passwd")).is_err());
        assert!(clean_components(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn follows_symlinks_inside_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/usr/lib", r.join("abs")).unwrap();
        symlink("../../..", r.join("up")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, &parts("lib/x"), true).unwrap(), PathBuf::from("usr/lib/x"));
        assert_eq!(resolve_in_root(r, &parts("abs/x"), true).unwrap(), PathBuf::from("usr/lib/x"));
        assert_eq!(resolve_in_root(r, &parts("lib"), false).unwrap(), PathBuf::from("lib"));
        assert!(resolve_in_root(r, &parts("up/etc"), true).is_err());
        assert!(resolve_in_root(r, &parts("loop/x"), true).is_err());
    }
}
