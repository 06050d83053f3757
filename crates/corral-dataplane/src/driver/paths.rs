//! Resolving user-supplied paths and program names inside a sandbox directory.
//! Pure functions, plus one check against symlinks that needs the filesystem.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::DriverError;

/// Resolves `path` under `root`: absolute paths are taken relative to `root`,
/// `.` is ignored and any `..` is rejected (there is nothing above the root).
pub fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, DriverError> {
    if path.contains('\0') {
        return Err(DriverError::InvalidArgument(
            "path must not contain a NUL byte".into(),
        ));
    }
    let mut out = root.to_path_buf();
    for comp in Path::new(path).components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(c) => out.push(c),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(DriverError::InvalidArgument(format!(
                    "path {path:?} escapes the sandbox ('..' is not allowed)"
                )))
            }
        }
    }
    Ok(out)
}

/// Fails unless `existing` (a path that exists) really lies under `root` once
/// symlinks are followed.
pub fn ensure_inside(root: &Path, existing: &Path) -> Result<(), DriverError> {
    let real = existing
        .canonicalize()
        .map_err(|e| DriverError::io(format!("resolve {}", existing.display()), e))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| DriverError::io(format!("resolve {}", root.display()), e))?;
    if real.starts_with(&real_root) {
        Ok(())
    } else {
        Err(DriverError::InvalidArgument(format!(
            "{} leads outside the sandbox",
            existing.display()
        )))
    }
}

/// Finds the program to run the way a shell would: a name containing `/` is a
/// path (relative to `cwd`), anything else is looked up in `path_var`.
pub fn resolve_program(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, DriverError> {
    if program.is_empty() {
        return Err(DriverError::InvalidArgument(
            "cmd must name a program".into(),
        ));
    }
    if program.contains('/') {
        let p = cwd.join(program);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(DriverError::Missing(format!(
                "program {program:?} does not exist"
            )))
        };
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(OsStr::new(program)))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            DriverError::Missing(format!(
                "program {program:?} not found in PATH {path_var:?}"
            ))
        })
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/data/sb");
        assert_eq!(
            resolve_in(root, "a/b.txt").unwrap(),
            Path::new("/data/sb/a/b.txt")
        );
        assert_eq!(
            resolve_in(root, "/etc/passwd").unwrap(),
            Path::new("/data/sb/etc/passwd")
        );
        assert_eq!(
            resolve_in(root, "./x/./y").unwrap(),
            Path::new("/data/sb/x/y")
        );
        assert_eq!(resolve_in(root, "").unwrap(), Path::new("/data/sb"));
        assert!(resolve_in(root, "../other").is_err());
        assert!(resolve_in(root, "a/../../x").is_err());
        assert!(resolve_in(root, "/../x").is_err());
        assert!(resolve_in(root, "a\0b").is_err());
    }

    #[test]
    fn programs_are_found_in_path_or_by_path() {
        let cwd = Path::new("/");
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin", cwd).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(matches!(
            resolve_program("no-such-prog-xyz", "/bin", cwd),
            Err(DriverError::Missing(_))
        ));
        assert_eq!(
            resolve_program("/bin/sh", "", cwd).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            resolve_program("bin/sh", "", cwd).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(resolve_program("", "/bin", cwd).is_err());
    }
}
