//! Optional Landlock layer (best effort): when a sandbox config lists
//! `landlock_writable` paths, every exec'd command may modify files only
//! beneath those paths (and `/dev`, for `/dev/null`, ttys and `/dev/shm`);
//! reads are not restricted. It narrows what a compromised tool can change
//! inside its own sandbox (e.g. keep `/etc` and the workdir's code
//! read-only while `/tmp` stays writable). On kernels without Landlock the
//! call does nothing.
//!
//! Enforced per exec, by the child between clone and exec, so the init
//! itself (which serves `write_file`) is not restricted. No scoping of signals or abstract sockets:
//! commands of different execs may still signal each other, as users expect.

use std::os::fd::OwnedFd;

use landlock::{AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};

/// The ABI whose write rights we handle (newer kernels are fine; older ones
/// get the subset they know).
const TARGET_ABI: ABI = ABI::V5;

/// A ruleset that confines file modifications to beneath `writable` plus
/// `/dev`, for the exec'd child to enforce on itself (see
/// `init::spawn`). `None` when the kernel has no Landlock: nothing to enforce.
pub(crate) fn write_ruleset(writable: &[String]) -> Result<Option<OwnedFd>, String> {
    let write = AccessFs::from_write(TARGET_ABI);
    let mut ruleset = Ruleset::default()
        .handle_access(write)
        .and_then(|r| r.create())
        .map_err(|e| format!("landlock ruleset: {e}"))?;
    for path in writable
        .iter()
        .map(String::as_str)
        .chain(std::iter::once("/dev"))
    {
        // A missing path has nothing to allow.
        let Ok(fd) = PathFd::new(path) else { continue };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, write))
            .map_err(|e| format!("landlock rule {path}: {e}"))?;
    }
    Ok(ruleset.into())
}
