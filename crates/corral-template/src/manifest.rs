//! `template.json`: what a template is, whether it can be used, and the image
//! configuration a sandbox started from it must honour.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, TemplateError};
use crate::host::HostBind;

/// How the rootfs was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    /// A skeleton filled at sandbox start with read-only binds of host dirs.
    Host,
    /// A Debian rootfs made by debootstrap.
    Debootstrap,
    /// An imported OCI image.
    Oci,
}

/// Only `Ready` templates may be used by sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateStatus {
    Building,
    Ready,
    Failed,
}

/// The process defaults of the image, honoured by the runtime for the init's
/// execs: an OCI image's `config`, or Debian-like defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (OCI `WorkingDir`); `None` means `/`.
    #[serde(default, alias = "working_dir", skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid` as in OCI; `None` means root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
}

/// Where the rootfs came from, to explain and to rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TemplateSource {
    Host { binds: Vec<HostBind> },
    Debootstrap { suite: String, packages: Vec<String>, mirror: String, cache_key: String },
    Oci { path: String, format: String, layers: usize },
}

/// The content of `template.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub name: String,
    pub kind: TemplateKind,
    pub status: TemplateStatus,
    /// Why the build failed (status `failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Disk usage of the rootfs (hard links counted once).
    pub size_bytes: u64,
    pub created_at_ms: u64,
    #[serde(default)]
    pub config: ImageConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TemplateSource>,
}

pub(crate) const META_FILE: &str = "template.json";

impl TemplateMeta {
    /// Reads `<dir>/template.json`.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let bytes = fs::read(&path).ctx("reading", &path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| TemplateError::BadMeta { path: path.display().to_string(), message: e.to_string() })
    }

    /// Writes `<dir>/template.json` atomically (temp file, fsync, rename), so a
    /// reader sees the old or the new content, never half of it.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META_FILE);
        let tmp = dir.join(".template.json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|e| TemplateError::BadMeta {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).ctx("creating", &tmp)?;
        f.write_all(&json).and_then(|_| f.sync_all()).ctx("writing", &tmp)?;
        fs::rename(&tmp, &path).ctx("renaming into place", &path)
    }
}

/// Milliseconds since the Unix epoch (wall clock: this is a timestamp shown to people).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
