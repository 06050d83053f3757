//! The template store: one folder per template, built in a staging folder and
//! renamed into place, so readers only ever see complete templates or records
//! of failed builds.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{IoContext, Result, TemplateError};
use crate::fsutil;
use crate::lock::NameLock;
use crate::manifest::{now_ms, ImageConfig, TemplateKind, TemplateMeta, TemplateSource, TemplateStatus};
use crate::name::validate_name;

/// Where templates live when nothing else is said (relative to the working dir,
/// beside the server's `corral-data`).
/// Under the native runtime's directory: sandbox users (unprivileged host
/// uids) must be able to traverse the path to a template's layers, which a
/// home directory would not allow.
pub const DEFAULT_TEMPLATES_DIR: &str = "/var/lib/corral/templates";

const BUILDING: &str = ".building";
const LOCKS: &str = ".locks";
const TRASH: &str = ".trash";
pub(crate) const CACHE: &str = ".cache";
/// A build step's temporary space beside the rootfs (`rootfs/../scratch`),
/// deleted when the step returns.
pub(crate) const SCRATCH: &str = "scratch";

/// A template on disk: its metadata and its folder.
#[derive(Debug, Clone, Serialize)]
pub struct Template {
    #[serde(flatten)]
    pub meta: TemplateMeta,
    /// `<root>/<name>` (or the staging folder while building).
    pub dir: PathBuf,
}

impl Template {
    /// The root filesystem, to be used read-only (overlay lower dir).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn is_ready(&self) -> bool {
        self.meta.status == TemplateStatus::Ready
    }
}

/// What a build step produced: the image config to record and where it came from.
pub(crate) struct Built {
    pub config: ImageConfig,
    pub source: TemplateSource,
}

/// Templates under one root folder.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
}

impl TemplateStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["", BUILDING, LOCKS, TRASH, CACHE] {
            let d = root.join(sub);
            fs::create_dir_all(&d).ctx("creating", &d)?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All templates, ready, failed or being built, sorted by name.
    pub fn list(&self) -> Result<Vec<Template>> {
        let mut names = Vec::new();
        for dir in [self.root.clone(), self.root.join(BUILDING)] {
            for entry in fs::read_dir(&dir).ctx("listing", &dir)? {
                let name = entry.ctx("listing", &dir)?.file_name().to_string_lossy().into_owned();
                if validate_name(&name).is_ok() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            match self.get(&name) {
                Ok(t) => out.push(t),
                Err(TemplateError::NotFound(_)) => {} // removed meanwhile, or not a template
                Err(e @ TemplateError::BadMeta { .. }) => tracing::warn!(template = name, error = %e, "skipped"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One template. A build in progress shows as `building`; a staging folder
    /// left by a crashed build (its lock is free) shows as `failed`.
    pub fn get(&self, name: &str) -> Result<Template> {
        validate_name(name)?;
        let staging = self.root.join(BUILDING).join(name);
        if staging.join(crate::manifest::META_FILE).exists() {
            let mut meta = TemplateMeta::read(&staging)?;
            if !NameLock::is_held(&self.root.join(LOCKS), name) {
                meta.status = TemplateStatus::Failed;
                meta.error = Some("the build was interrupted (the building process died)".into());
            }
            return Ok(Template { meta, dir: staging });
        }
        let dir = self.root.join(name);
        if !dir.join(crate::manifest::META_FILE).exists() {
            return Err(TemplateError::NotFound(name.to_string()));
        }
        Ok(Template { meta: TemplateMeta::read(&dir)?, dir })
    }

    /// Deletes a template (ready or failed). Refused while it is being built.
    /// The folder is first renamed into `.trash`, so the name is free at once
    /// and a crash mid-delete leaves no half template behind.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let _lock = NameLock::try_acquire(&self.root.join(LOCKS), name)?;
        let dir = self.root.join(name);
        let staging = self.root.join(BUILDING).join(name);
        if !dir.exists() && !staging.exists() {
            return Err(TemplateError::NotFound(name.to_string()));
        }
        for d in [dir, staging] {
            self.discard(&d)?;
        }
        Ok(())
    }

    /// Moves `dir` into the trash and deletes it there.
    fn discard(&self, dir: &Path) -> Result<()> {
        if fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let trash = self.root.join(TRASH).join(format!("{name}.{}.{}", std::process::id(), now_ms()));
        fs::rename(dir, &trash).ctx("moving to the trash", dir)?;
        fsutil::remove_tree(&trash).ctx("deleting", &trash)
    }

    /// The one way a template gets built: lock the name, build in a staging
    /// folder, then rename it to `<root>/<name>` as `ready` — or, on error, as a
    /// `failed` record without rootfs. `step` fills the rootfs folder it is given.
    pub(crate) fn build_with(
        &self,
        name: &str,
        kind: TemplateKind,
        step: impl FnOnce(&Path) -> Result<Built>,
    ) -> Result<Template> {
        validate_name(name)?;
        let _lock = NameLock::try_acquire(&self.root.join(LOCKS), name)?;
        let dir = self.root.join(name);
        if dir.exists() {
            // Only a failed record is replaced; a folder we cannot read is never deleted by a build.
            if TemplateMeta::read(&dir)?.status != TemplateStatus::Failed {
                return Err(TemplateError::AlreadyExists(name.to_string()));
            }
        }
        let staging = self.root.join(BUILDING).join(name);
        self.discard(&staging)?; // left by a crashed build: we hold the lock, so it is dead
        let rootfs = staging.join("rootfs");
        fs::create_dir_all(&rootfs).ctx("creating", &rootfs)?;
        let mut meta = TemplateMeta {
            name: name.to_string(),
            kind,
            status: TemplateStatus::Building,
            error: None,
            size_bytes: 0,
            created_at_ms: now_ms(),
            config: ImageConfig::default(),
            source: None,
        };
        meta.write(&staging)?;
        let outcome = step(&rootfs);
        let scratch = staging.join(SCRATCH);
        fsutil::remove_tree(&scratch).ctx("cleaning up", &scratch)?;
        let outcome = outcome.and_then(|built| {
            meta.size_bytes = fsutil::disk_usage(&rootfs).ctx("measuring", &rootfs)?;
            meta.config = built.config;
            meta.source = Some(built.source);
            meta.status = TemplateStatus::Ready;
            Ok(())
        });
        if let Err(e) = &outcome {
            fsutil::remove_tree(&rootfs).ctx("cleaning up", &rootfs)?;
            meta.status = TemplateStatus::Failed;
            meta.error = Some(e.to_string());
            meta.size_bytes = 0;
        }
        meta.write(&staging)?;
        self.discard(&dir)?; // an older failed record
        fs::rename(&staging, &dir).ctx("renaming into place", &staging)?;
        sync_dir(&self.root);
        match &outcome {
            Ok(()) => tracing::debug!(template = name, size_bytes = meta.size_bytes, "template ready"),
            Err(e) => tracing::warn!(template = name, error = %e, "template build failed"),
        }
        outcome.map(|()| Template { meta, dir })
    }
}

/// Makes the rename durable; best effort (a lost rename only loses the build).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
