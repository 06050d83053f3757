//! Zombie reaping for PID 1. Every child of the init — exec'd commands and
//! orphans reparented to it — is reaped here with `waitpid(-1)`; the exec
//! handlers register the pids they wait for and get the status through a
//! oneshot. Nothing else in the init may call `wait`.

use std::cell::RefCell;
use std::collections::HashMap;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ChildExit {
    /// Shell convention: the code, or 128+signal.
    pub fn exit_code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

#[derive(Default)]
pub(crate) struct Reaper {
    waiters: RefCell<HashMap<i32, oneshot::Sender<ChildExit>>>,
}

impl Reaper {
    /// Registers interest in `pid`. Call right after spawning it, before
    /// yielding to the executor (the reaper only runs when we yield).
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<ChildExit> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(pid, tx);
        rx
    }

    /// Reaps every dead child. Returns false once the init has no child left.
    pub fn reap(&self) -> bool {
        loop {
            let (pid, exit) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) => (
                    p,
                    ChildExit {
                        code: Some(c),
                        signal: None,
                    },
                ),
                Ok(WaitStatus::Signaled(p, s, _)) => (
                    p,
                    ChildExit {
                        code: None,
                        signal: Some(s as i32),
                    },
                ),
                Ok(WaitStatus::StillAlive) => return true,
                Ok(_) => continue,
                Err(_) => return false, // ECHILD
            };
            if let Some(tx) = self.waiters.borrow_mut().remove(&pid.as_raw()) {
                let _ = tx.send(exit);
            }
        }
    }
}
