//! `starts.log`: one line per sandbox id, appended once its spawn returned and
//! before the start is reported.
//!
//! It is the witness that separates "crashed after persisting the intent but
//! before the start was done" (start it now) from "it ran and is gone"
//! (report it exited), and it lets tests prove that no sandbox is ever
//! started twice. A spawn whose line was never written was never reported
//! either, so nothing ran in it on a user's behalf: if it died in that window
//! (microseconds), starting it again is the first start anyone sees; if it
//! lives, the next boot adopts it and writes the line.
//! Appends are single `write`s on an `O_APPEND` file, so concurrent starts
//! never interleave lines.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::DataplaneError;

pub struct StartsLog {
    path: PathBuf,
    file: File,
}

impl StartsLog {
    pub fn open(data_dir: &Path) -> Result<Self, DataplaneError> {
        let path = data_dir.join("starts.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| DataplaneError::io("open", &path, e))?;
        Ok(StartsLog { path, file })
    }

    /// Every id ever started here.
    pub fn load(&self) -> Result<HashSet<String>, DataplaneError> {
        let text =
            std::fs::read(&self.path).map_err(|e| DataplaneError::io("read", &self.path, e))?;
        Ok(parse(&text))
    }

    /// Records that `id` is about to be spawned.
    pub fn append(&self, id: &str) -> std::io::Result<()> {
        let line = format!("{id}\n");
        (&self.file).write_all(line.as_bytes())
    }
}

/// The complete lines of the log; a torn last line (crash mid-write) is not a
/// start that happened.
fn parse(text: &[u8]) -> HashSet<String> {
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..=end],
        None => return HashSet::new(),
    };
    String::from_utf8_lossy(complete)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_does_not_count() {
        let set = parse(b"a\nb\nc");
        assert_eq!(set, ["a", "b"].iter().map(|s| s.to_string()).collect());
        assert!(parse(b"").is_empty());
        assert!(parse(b"partial").is_empty());
    }
}
