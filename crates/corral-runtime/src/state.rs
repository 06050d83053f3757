//! What the runtime keeps on disk per sandbox, so a restarted dataplane can
//! find, reconnect to and tear down sandboxes whose inits outlived it.
//!
//! `<state_dir>/<id>/meta.json` (0600) holds a [`Meta`]; next to it are the
//! init socket `init.sock` (0600) and the empty mount point `mnt/` that only
//! the sandbox's own mount namespace has anything mounted on.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::error::{Result, RuntimeError};

/// Persistent record of one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    /// Host pid of the init.
    pub pid: i32,
    /// Its start time (field 22 of /proc/pid/stat), to tell it from a reused pid.
    pub start_time: u64,
    pub slot: u32,
    pub host_id_base: u32,
    pub cgroup: Cgroup,
    /// The `nat` slot it owns (its veth pair is named after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_slot: Option<u32>,
}

/// Paths of one sandbox's state.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path, id: &str) -> Self {
        Paths {
            dir: state_dir.join(id),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("init.sock")
    }
    pub fn meta(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    pub fn mount_dir(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// Creates the dir atomically (fails if it exists: two creates of one id
    /// cannot both pass). Mode 0711: the sandbox root must traverse it to reach `mnt`
    /// while building its root; nothing in it is readable but by host root).
    pub fn create(&self) -> Result<()> {
        match fs::DirBuilder::new().mode(0o711).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(self.dir.display().to_string()))
            }
            Err(e) => return Err(RuntimeError::io(format!("mkdir {}", self.dir.display()), e)),
        }
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o711))
            .map_err(|e| RuntimeError::io("chmod state dir", e))?;
        match fs::DirBuilder::new().mode(0o700).create(self.mount_dir()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(RuntimeError::io("mkdir mnt", e)),
        }
    }

    pub fn write_meta(&self, meta: &Meta) -> Result<()> {
        let body = serde_json::to_vec(meta).map_err(|e| RuntimeError::Protocol(e.to_string()))?;
        let tmp = self.dir.join("meta.json.tmp");
        fs::write(&tmp, body).map_err(|e| RuntimeError::io("write meta", e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .map_err(|e| RuntimeError::io("chmod meta", e))?;
        fs::rename(&tmp, self.meta()).map_err(|e| RuntimeError::io("rename meta", e))
    }

    pub fn read_meta(&self) -> Option<Meta> {
        serde_json::from_slice(&fs::read(self.meta()).ok()?).ok()
    }

    /// Removes everything (the mount point is an empty dir on the host side).
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(
                format!("remove {}", self.dir.display()),
                e,
            )),
        }
    }
}

/// Start time of a live (non-zombie) process, `None` if it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the init recorded in `meta` is still the live process with that pid.
pub fn init_alive(meta: &Meta) -> bool {
    process_start_time(meta.pid) == Some(meta.start_time)
}

/// Ids that have a state dir.
pub fn list_ids(state_dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join("meta.json").exists() || e.path().join("mnt").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

/// Validates a sandbox id: `[A-Za-z0-9_.-]{1,63}`, not starting with a dot
/// (it names a dir, a cgroup and the hostname).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidArgument(format!(
            "bad sandbox id {id:?}: want [A-Za-z0-9_.-]{{1,63}}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("sb-1_a.b").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(64)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start_time(std::process::id() as i32).is_some());
    }
}
