//! sha256 digests: parsing `sha256:<hex>` safely (a digest becomes a file
//! path, so anything but 64 lowercase hex digits is refused) and hashing while
//! reading, so verification costs no extra pass over decompressed data.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, Result, TemplateError};

/// A verified-shape sha256 digest (64 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sha256Digest(String);

impl Sha256Digest {
    /// Parses `sha256:<hex>`; other algorithms are refused.
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| TemplateError::InvalidImage(format!("unsupported digest {s:?} (only sha256 is)")))?;
        Self::from_hex(hex).ok_or_else(|| TemplateError::InvalidImage(format!("malformed digest {s:?}")))
    }

    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(hex.to_string()))
    }

    /// `<layout>/blobs/sha256/<hex>`.
    pub(crate) fn blob_path(&self, layout: &Path) -> PathBuf {
        layout.join("blobs").join("sha256").join(&self.0)
    }

    /// Fails with [`TemplateError::DigestMismatch`] unless `actual` equals self.
    pub(crate) fn check(&self, actual: &str, what: &str) -> Result<()> {
        if self.0 == actual {
            return Ok(());
        }
        Err(TemplateError::DigestMismatch { what: what.to_string(), expected: self.0.clone(), actual: actual.to_string() })
    }
}

/// The sha256 (hex) of a file's content.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut reader = HashingReader::new(File::open(path).ctx("opening", path)?);
    io::copy(&mut reader, &mut io::sink()).ctx("reading", path)?;
    Ok(reader.finish())
}

/// Passes bytes through while hashing them.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new() }
    }

    /// Hex digest of everything read so far.
    pub(crate) fn finish(self) -> String {
        format!("{:x}", self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
