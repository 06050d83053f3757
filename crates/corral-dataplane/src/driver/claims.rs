//! The durable map from sandbox ids to the pool members they claimed.
//!
//! An append-only log (`+ <sandbox> <member>` / `- <sandbox>` lines) held
//! open for appending: a claim costs one small `write`, not a file created
//! and another unlinked. Nothing is fsync'd — the map only has to survive the
//! dataplane process, and a host crash takes the sandboxes with it. Loading
//! replays the log and rewrites it compacted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

pub struct ClaimLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// Replays log text into the live mapping (later lines win).
pub fn replay(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("+"), Some(sb), Some(member)) => {
                map.insert(sb.to_string(), member.to_string());
            }
            (Some("-"), Some(sb), None) => {
                map.remove(sb);
            }
            _ => {} // a torn last line from a crash mid-write
        }
    }
    map
}

fn compacted(map: &HashMap<String, String>) -> String {
    let mut lines: Vec<String> = map.iter().map(|(sb, m)| format!("+ {sb} {m}\n")).collect();
    lines.sort();
    lines.concat()
}

impl ClaimLog {
    /// Loads `path` (missing = empty), rewrites it compacted, opens it for appending.
    pub fn open(path: &Path) -> std::io::Result<(ClaimLog, HashMap<String, String>)> {
        let text = std::fs::read_to_string(path).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(String::new()),
            _ => Err(e),
        })?;
        let map = replay(&text);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, compacted(&map))?;
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok((ClaimLog { path: path.to_path_buf(), file: Mutex::new(file) }, map))
    }

    pub fn claimed(&self, sandbox_id: &str, member: &str) -> std::io::Result<()> {
        self.append(&format!("+ {sandbox_id} {member}\n"))
    }

    pub fn released(&self, sandbox_id: &str) -> std::io::Result<()> {
        self.append(&format!("- {sandbox_id}\n"))
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        self.file.lock().write_all(line.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_applies_claims_and_releases_in_order_and_skips_torn_lines() {
        let map = replay("+ a m1\n+ b m2\n- a\n+ c m3\n+ a m4\n+ d");
        let mut got: Vec<_> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        got.sort();
        assert_eq!(got, vec![("a", "m4"), ("b", "m2"), ("c", "m3")]);
    }

    #[test]
    fn the_log_survives_reopening_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claims.log");
        {
            let (log, map) = ClaimLog::open(&path).unwrap();
            assert!(map.is_empty());
            log.claimed("a", "m1").unwrap();
            log.claimed("b", "m2").unwrap();
            log.released("a").unwrap();
        }
        let (_log, map) = ClaimLog::open(&path).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map["b"], "m2");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "+ b m2\n");
    }
}
