//! OCI whiteouts: how a layer deletes what lower layers made.
//! `.wh.<name>` deletes `<name>`; `.wh..wh..opq` empties its directory of
//! everything from lower layers. Entries of the current layer survive either
//! way, whatever order the tar has them in (the spec only says "should").

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil::remove_tree;

const PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a tar entry's file name means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// An ordinary entry.
    None,
    /// Delete this sibling.
    Remove(&'a OsStr),
    /// Empty the parent directory of lower-layer content.
    Opaque,
}

pub(crate) fn classify(file_name: &OsStr) -> Result<Whiteout<'_>, String> {
    let Some(s) = file_name.to_str() else { return Ok(Whiteout::None) };
    if s == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    match s.strip_prefix(PREFIX) {
        None => Ok(Whiteout::None),
        Some("" | "." | "..") => Err(format!("invalid whiteout {s:?}")),
        Some(rest) if rest.starts_with(PREFIX) => Err(format!("invalid whiteout {s:?}")),
        Some(_) => Ok(Whiteout::Remove(OsStr::new(&s[PREFIX.len()..]))),
    }
}

/// Deletes `rel` (relative to `root`, not followed) unless this layer made it.
pub(crate) fn remove(root: &Path, rel: &Path, this_layer: &HashSet<PathBuf>) -> std::io::Result<()> {
    if this_layer.contains(rel) {
        return Ok(());
    }
    remove_tree(&root.join(rel))
}

/// Deletes every child of directory `rel` that this layer did not make.
pub(crate) fn opaque(root: &Path, rel: &Path, this_layer: &HashSet<PathBuf>) -> std::io::Result<()> {
    let dir = root.join(rel);
    if !fs::symlink_metadata(&dir).map(|m| m.is_dir()).unwrap_or(false) {
        return Ok(());
    }
    for entry in fs::read_dir(&dir)? {
        let child = rel.join(entry?.file_name());
        remove(root, &child, this_layer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(OsStr::new("a")).unwrap(), Whiteout::None);
        assert_eq!(classify(OsStr::new(".wh.a")).unwrap(), Whiteout::Remove(OsStr::new("a")));
        assert_eq!(classify(OsStr::new(".wh..wh..opq")).unwrap(), Whiteout::Opaque);
        assert!(classify(OsStr::new(".wh...")).is_err());
        assert!(classify(OsStr::new(".wh.")).is_err());
    }
}
