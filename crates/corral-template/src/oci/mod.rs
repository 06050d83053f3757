//! The `oci` kind: importing an OCI image layout or a `docker save` archive,
//! as a directory or a tar (optionally gzip/zstd-compressed) of one.
//!
//! Every blob is verified against its digest before any layer is applied, and
//! each layer's uncompressed stream against its `diff_id` while it is applied;
//! any mismatch fails the build, which then leaves no ready template.

mod digest;
mod layer;
mod layout;
mod resolve;
mod whiteout;

use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;
use std::time::Instant;

use crate::error::{IoContext, Result, TemplateError};
use crate::manifest::{TemplateKind, TemplateSource};
use crate::progress::Progress;
use crate::store::{Built, Template, TemplateStore, SCRATCH};
use digest::{sha256_file, HashingReader};

/// The OCI name of this machine's architecture (`platform.architecture`).
pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl TemplateStore {
    /// Imports the image at `path` (layout directory, or tar of one) as template `name`.
    pub fn import_oci(&self, name: &str, path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Template> {
        crate::name::validate_name(name)?;
        let meta = fs::metadata(path)
            .map_err(|e| TemplateError::InvalidArgument(format!("cannot read image {}: {e}", path.display())))?;
        let started = Instant::now();
        let mut say = |message: String| progress(Progress { elapsed: started.elapsed(), message });
        self.build_with(name, TemplateKind::Oci, |rootfs| {
            let layout = if meta.is_dir() {
                path.to_path_buf()
            } else {
                let dir = rootfs.with_file_name(SCRATCH).join("image");
                say(format!("unpacking {}", path.display()));
                unpack_archive(path, &dir)?;
                dir
            };
            let plan = layout::load(&layout)?;
            say(format!("{} image with {} layers", plan.format, plan.layers.len()));
            verify_blobs(&plan.layers, &mut say)?;
            for (i, l) in plan.layers.iter().enumerate() {
                let label = format!("layer {}/{}", i + 1, plan.layers.len());
                apply(rootfs, l, &label)?;
                say(format!("{label} applied"));
            }
            let source = TemplateSource::Oci {
                path: path.display().to_string(),
                format: plan.format.to_string(),
                layers: plan.layers.len(),
            };
            Ok(Built { config: plan.config, source })
        })
    }
}

/// Checks every layer blob's size and sha256 before anything is applied.
fn verify_blobs(layers: &[layout::LayerRef], say: &mut dyn FnMut(String)) -> Result<()> {
    for (i, l) in layers.iter().enumerate() {
        let len = fs::metadata(&l.path).ctx("reading layer", &l.path)?.len();
        if let Some(size) = l.size.filter(|s| *s != len) {
            return Err(TemplateError::InvalidImage(format!("layer {} is {len} bytes, its descriptor says {size}", i + 1)));
        }
        if let Some(d) = &l.digest {
            d.check(&sha256_file(&l.path)?, &format!("layer {}", i + 1))?;
        }
    }
    say(format!("verified {} layer digests", layers.iter().filter(|l| l.digest.is_some()).count()));
    Ok(())
}

/// Decompresses and applies one layer, checking its diff_id on the way.
fn apply(rootfs: &Path, l: &layout::LayerRef, label: &str) -> Result<()> {
    let file = File::open(&l.path).ctx("opening", &l.path)?;
    let stream = layer::decompress(BufReader::new(file)).ctx("decompressing", &l.path)?;
    let mut hashing = HashingReader::new(stream);
    layer::apply_layer(rootfs, &mut hashing, label)?;
    if let Some(d) = &l.diff_id {
        d.check(&hashing.finish(), &format!("{label} (uncompressed diff_id)"))?;
    }
    Ok(())
}

/// Unpacks an image archive (tar, maybe compressed) into `dir`. The tar crate's
/// `unpack` refuses `..` and writes through no symlink outside `dir`.
fn unpack_archive(path: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).ctx("creating", dir)?;
    let file = File::open(path).ctx("opening", path)?;
    let stream = layer::decompress(BufReader::new(file)).ctx("decompressing", path)?;
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(false);
    archive
        .unpack(dir)
        .map_err(|e| TemplateError::InvalidImage(format!("unpacking {}: {e}", path.display())))
}
