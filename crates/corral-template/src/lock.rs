//! Per-name build locks. `flock` is released by the kernel when the holder
//! dies, so a crashed build never blocks the next one, and a stale staging
//! folder can be told from a live build by trying the lock.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{IoContext, Result, TemplateError};

/// Held while a template is built or removed; dropping it unlocks.
pub(crate) struct NameLock {
    _lock: Flock<File>,
}

impl NameLock {
    /// Takes the lock for `name` or fails at once with [`TemplateError::Busy`].
    pub(crate) fn try_acquire(locks_dir: &Path, name: &str) -> Result<Self> {
        fs::create_dir_all(locks_dir).ctx("creating", locks_dir)?;
        let path = locks_dir.join(format!("{name}.lock"));
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).ctx("opening", &path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(TemplateError::Busy(name.to_string())),
            Err((_, errno)) => Err(TemplateError::Io {
                context: format!("locking {}", path.display()),
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Whether some process holds the lock for `name` right now.
    pub(crate) fn is_held(locks_dir: &Path, name: &str) -> bool {
        matches!(Self::try_acquire(locks_dir, name), Err(TemplateError::Busy(_)))
    }
}
