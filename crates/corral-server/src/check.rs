//! `corral server check`: the store invariants of [`state::invariants`], run
//! on the data dir of a server that is not running.

use std::path::Path;

use corral_store::{RedbStore, Store};

use crate::state::invariants::{self, Violation};
use crate::{ServerError, STORE_FILE};

/// What a check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub sandboxes: usize,
    pub hosts: usize,
    pub outbox_rows: usize,
    /// Empty when the store is consistent.
    pub violations: Vec<Violation>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Loads the store in `data_dir` and checks every rule. Fails, creating
/// nothing, when the dir holds no store; fails when a server holds it open.
pub fn check_data_dir(data_dir: &Path) -> Result<CheckReport, ServerError> {
    let path = data_dir.join(STORE_FILE);
    if !path.is_file() {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {STORE_FILE} here: not a server data dir"));
        return Err(ServerError::DataDir(data_dir.to_path_buf(), e));
    }
    let snap = RedbStore::open(&path)?.load()?;
    let violations = invariants::check(&snap);
    Ok(CheckReport { sandboxes: snap.sandboxes.len(), hosts: snap.hosts.len(), outbox_rows: snap.outbox.len(), violations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::{EndReason, Sandbox, SandboxSpec, SandboxState};
    use corral_store::Write;

    fn ended_without_reason() -> Sandbox {
        let spec = SandboxSpec {
            template: "base".into(),
            cpu_millis: 100,
            memory_mb: 64,
            ttl_s: 60,
            ..Default::default()
        };
        let mut sb = Sandbox::new("sb-1".into(), spec, None, 1);
        sb.state = SandboxState::Terminated;
        sb.ended_at_ms = Some(2);
        sb
    }

    #[test]
    fn a_dir_without_a_store_is_an_error_and_stays_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_data_dir(dir.path()).expect_err("no store");
        assert!(err.to_string().contains("no corral.redb here"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "nothing was created");
    }

    #[test]
    fn a_broken_store_on_disk_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join(STORE_FILE)).expect("open");
        let mut sb = ended_without_reason();
        store.commit(&[Write::PutSandbox(sb.clone())]).expect("commit");
        drop(store);
        let report = check_data_dir(dir.path()).expect("check");
        assert_eq!((report.sandboxes, report.hosts, report.outbox_rows), (1, 0, 0));
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].rule, "sandbox-end");

        sb.end_reason = Some(EndReason::Deleted);
        let store = RedbStore::open(&dir.path().join(STORE_FILE)).expect("open");
        store.commit(&[Write::PutSandbox(sb)]).expect("commit");
        drop(store);
        assert!(check_data_dir(dir.path()).expect("check").ok());
    }
}
