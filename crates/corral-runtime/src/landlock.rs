//! Optional Landlock layer (best effort): when a sandbox config lists
//! `landlock_writable` paths, every exec'd command may modify files only
//! beneath those paths (and `/dev`, for `/dev/null`, ttys and `/dev/shm`);
//! reads are not restricted. It narrows what a compromised tool can change
//! inside its own sandbox (e.g. keep `/etc` and the workdir's code
//! read-only while `/tmp` stays writable). On kernels without Landlock the
//! call does nothing.
//!
//! Applied per exec, between fork and exec, so the init itself (which serves
//! `write_file`) is not restricted. No scoping of signals or abstract sockets:
//! commands of different execs may still signal each other, as users expect.

use landlock::{
    AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};

/// The ABI whose write rights we handle (newer kernels are fine; older ones
/// get the subset they know).
const TARGET_ABI: ABI = ABI::V5;

/// Restricts the calling process's file modifications to beneath `writable`
/// plus `/dev`. Returns whether the kernel enforced it.
pub(crate) fn restrict_writes(writable: &[String]) -> Result<bool, String> {
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
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("landlock restrict: {e}"))?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}
