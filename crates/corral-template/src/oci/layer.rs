//! Applies one image layer (a tar stream) onto the rootfs being built.
//!
//! Layers are untrusted input: entry paths are cleaned (no `..`, no absolute
//! paths), parents are resolved through existing symlinks with the rootfs as
//! `/` (see [`super::resolve`]), existing entries are unlinked rather than
//! written through, and files are created with `O_EXCL` so a symlink planted
//! at the destination is never followed. Modes (setuid included), owners (when
//! running as root), mtimes, symlinks and hard links are preserved. Device
//! nodes are skipped: the runtime gives every sandbox its own minimal `/dev`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{fchown, lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tar::{Entry, EntryType};

use super::resolve::{clean_components, resolve_in_root};
use super::whiteout::{self, Whiteout};
use crate::error::{Result, TemplateError};
use crate::fsutil::remove_tree;

/// State of one layer's application.
struct LayerCtx<'a> {
    root: &'a Path,
    label: &'a str,
    as_root: bool,
    /// Paths (relative to root) this layer made, and their ancestors: whiteouts spare them.
    made: HashSet<PathBuf>,
    /// Directory modes, applied at the end so read-only dirs can be filled first.
    dir_modes: Vec<(PathBuf, u32)>,
}

/// Applies the tar stream `reader` onto `root`. Returns entries skipped (device nodes).
pub(crate) fn apply_layer(root: &Path, reader: impl Read, label: &str) -> Result<usize> {
    let mut ctx = LayerCtx {
        root,
        label,
        as_root: nix::unistd::geteuid().is_root(),
        made: HashSet::new(),
        dir_modes: Vec::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut skipped = 0;
    for entry in archive.entries().map_err(|e| ctx.io("reading", e))? {
        let mut entry = entry.map_err(|e| ctx.io("reading", e))?;
        if !ctx.apply_entry(&mut entry)? {
            skipped += 1;
        }
    }
    for (dir, mode) in ctx.dir_modes.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(|e| ctx.io("setting the mode of a directory", e))?;
    }
    // Read to the end so a hashing reader underneath sees every byte.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| TemplateError::InvalidImage(format!("{label}: {e}")))?;
    Ok(skipped)
}

impl LayerCtx<'_> {
    fn io(&self, what: &str, e: io::Error) -> TemplateError {
        TemplateError::InvalidImage(format!("{}: {what}: {e}", self.label))
    }

    fn unsafe_path(&self, path: &Path, reason: String) -> TemplateError {
        TemplateError::UnsafePath { layer: self.label.to_string(), path: path.display().to_string(), reason }
    }

    /// Resolves an entry path to (parent resolved through symlinks) + file name.
    fn place(&self, raw: &Path) -> Result<Option<(PathBuf, OsString)>> {
        let mut parts = clean_components(raw).map_err(|r| self.unsafe_path(raw, r))?;
        let Some(name) = parts.pop() else { return Ok(None) };
        let parent = resolve_in_root(self.root, &parts, true).map_err(|r| self.unsafe_path(raw, r))?;
        Ok(Some((parent, name)))
    }

    /// Applies one entry; false when it was skipped.
    fn apply_entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<bool> {
        let raw = entry.path().map_err(|e| self.io("reading an entry path", e))?.into_owned();
        let Some((parent, name)) = self.place(&raw)? else { return Ok(true) };
        match whiteout::classify(&name).map_err(|r| self.unsafe_path(&raw, r))? {
            Whiteout::Opaque => {
                return whiteout::opaque(self.root, &parent, &self.made).map(|()| true).map_err(|e| self.io("opaque whiteout", e))
            }
            Whiteout::Remove(target) => {
                let rel = parent.join(target);
                return whiteout::remove(self.root, &rel, &self.made).map(|()| true).map_err(|e| self.io("whiteout", e));
            }
            Whiteout::None => {}
        }
        let rel = parent.join(&name);
        let dest = self.root.join(&rel);
        fs::create_dir_all(self.root.join(&parent)).map_err(|e| self.io("creating parent directories", e))?;
        let written = self.write(entry, &raw, &dest).map_err(|e| match e {
            WriteError::Io(e) => self.io(&format!("writing {}", raw.display()), e),
            WriteError::Template(t) => t,
        })?;
        if written {
            self.made.extend(rel.ancestors().filter(|a| !a.as_os_str().is_empty()).map(Path::to_path_buf));
        }
        Ok(written)
    }

    /// Creates `dest` from the entry, replacing whatever lower layers put there.
    fn write<R: Read>(&mut self, entry: &mut Entry<'_, R>, raw: &Path, dest: &Path) -> Result<bool, WriteError> {
        let h = entry.header();
        let (mode, kind) = (h.mode()? & 0o7777, h.entry_type());
        let (uid, gid) = (id32(h.uid()?)?, id32(h.gid()?)?);
        let mtime = h.mtime().unwrap_or(0);
        let link = if kind == EntryType::Link { Some(self.link_target(entry, raw)?) } else { None };
        if link.as_deref() == Some(dest) {
            return Err(WriteError::Template(self.unsafe_path(raw, "hard link to itself".into())));
        }
        let existing = fs::symlink_metadata(dest).ok();
        let keep_dir = kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            remove_tree(dest)?;
        }
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    fs::create_dir(dest)?;
                }
                self.chown(dest, uid, gid)?;
                self.dir_modes.push((dest.to_path_buf(), mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest)?;
                io::copy(entry, &mut f)?;
                if self.as_root {
                    fchown(&f, Some(uid), Some(gid))?;
                }
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))?;
            }
            EntryType::Symlink => {
                let target = entry.link_name()?.ok_or_else(|| io::Error::other("symlink without a target"))?;
                symlink(&*target, dest)?;
                self.chown(dest, uid, gid)?;
            }
            EntryType::Link => {
                if let Some(target) = link {
                    fs::hard_link(target, dest)?;
                }
            }
            EntryType::Fifo => {
                nix::unistd::mkfifo(dest, nix::sys::stat::Mode::from_bits_truncate(mode)).map_err(io::Error::from)?;
                self.chown(dest, uid, gid)?;
            }
            _ => return Ok(false), // device nodes, sockets, unknown types
        }
        Ok(true)
    }

    /// A hard link's target, which must be an existing non-directory in the rootfs.
    fn link_target<R: Read>(&self, entry: &Entry<'_, R>, raw: &Path) -> Result<PathBuf, WriteError> {
        let name = entry.link_name()?.ok_or_else(|| io::Error::other("hard link without a target"))?;
        let refuse = |r: String| WriteError::Template(self.unsafe_path(raw, format!("hard link to {}: {r}", name.display())));
        let mut parts = clean_components(&name).map_err(refuse)?;
        let last = parts.pop().ok_or_else(|| refuse("empty target".into()))?;
        let target = self.root.join(resolve_in_root(self.root, &parts, true).map_err(refuse)?).join(last);
        match fs::symlink_metadata(&target) {
            Ok(m) if !m.is_dir() => Ok(target),
            Ok(_) => Err(refuse("it is a directory".into())),
            Err(_) => Err(refuse("it does not exist".into())),
        }
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        if self.as_root {
            lchown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }
}

fn id32(id: u64) -> io::Result<u32> {
    u32::try_from(id).map_err(|_| io::Error::other(format!("owner id {id} out of range")))
}

/// Internal: io errors get the layer label added by the caller; refusals pass through.
enum WriteError {
    Io(io::Error),
    Template(TemplateError),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Opens a layer blob, decompressing by its magic bytes (gzip, zstd, or plain
/// tar), whatever the media type claims.
pub(crate) fn decompress<'a>(mut r: impl io::BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ruzstd::decoding::StreamingDecoder::new(r).map_err(io::Error::other)?)
    } else {
        Box::new(r)
    })
}
