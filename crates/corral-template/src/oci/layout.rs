//! Reads an image's metadata into a plan (config + ordered layers), from either
//! an OCI image layout (`index.json`, `blobs/sha256/…`) or a `docker save`
//! archive (`manifest.json`, `<id>.json`, `<id>/layer.tar`). Every JSON blob
//! addressed by digest is verified before it is parsed.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::digest::{sha256_file, Sha256Digest};
use super::resolve::clean_components;
use crate::error::{IoContext, Result, TemplateError};
use crate::manifest::ImageConfig;

/// JSON metadata larger than this is not an image, it is an attack.
const MAX_JSON: u64 = 16 << 20;
/// Index → index → manifest nesting allowed.
const MAX_INDEX_DEPTH: usize = 4;

/// One layer to apply.
#[derive(Debug)]
pub(crate) struct LayerRef {
    pub path: PathBuf,
    /// Digest of the blob as stored (verified before anything is applied).
    pub digest: Option<Sha256Digest>,
    pub size: Option<u64>,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids`), verified while applying.
    pub diff_id: Option<Sha256Digest>,
}

/// What [`load`] found.
#[derive(Debug)]
pub(crate) struct ImagePlan {
    /// `oci` or `docker-save`.
    pub format: &'static str,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

/// Reads the plan of the image stored in `dir`.
pub(crate) fn load(dir: &Path) -> Result<ImagePlan> {
    if dir.join("index.json").is_file() {
        load_oci(dir)
    } else if dir.join("manifest.json").is_file() {
        load_docker(dir)
    } else {
        Err(TemplateError::InvalidImage(format!(
            "{} has neither index.json (OCI image layout) nor manifest.json (docker save)",
            dir.display()
        )))
    }
}

fn load_oci(dir: &Path) -> Result<ImagePlan> {
    let index: serde_json::Value = read_json(&dir.join("index.json"))?;
    let manifest = pick_manifest(dir, index, 0)?;
    let config_file: ConfigFile = serde_json::from_slice(&read_blob(dir, &manifest.config, "image config")?)
        .map_err(|e| TemplateError::InvalidImage(format!("image config: {e}")))?;
    let mut layers = Vec::new();
    for (i, d) in manifest.layers.iter().enumerate() {
        if !(d.media_type.is_empty() || d.media_type.contains("tar")) {
            return Err(TemplateError::InvalidImage(format!("layer {} has unsupported media type {:?}", i + 1, d.media_type)));
        }
        let digest = Sha256Digest::parse(&d.digest)?;
        layers.push(LayerRef { path: digest.blob_path(dir), digest: Some(digest), size: d.size, diff_id: None });
    }
    plan("oci", config_file, layers, false)
}

/// Follows `index.json` (and nested indexes) to the manifest for this machine.
fn pick_manifest(dir: &Path, index: serde_json::Value, depth: usize) -> Result<Manifest> {
    let bad = |m: String| TemplateError::InvalidImage(m);
    let descs: Vec<Descriptor> = serde_json::from_value(index.get("manifests").cloned().unwrap_or_default())
        .map_err(|e| bad(format!("index: {e}")))?;
    let arch = super::go_arch();
    let chosen = descs
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
        .or_else(|| descs.iter().find(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown")))
        .ok_or_else(|| bad("the index lists no image manifest for this platform".into()))?;
    let blob: serde_json::Value = serde_json::from_slice(&read_blob(dir, chosen, "image manifest")?)
        .map_err(|e| bad(format!("manifest: {e}")))?;
    if blob.get("manifests").is_some() {
        if depth >= MAX_INDEX_DEPTH {
            return Err(bad("image indexes nested too deep".into()));
        }
        return pick_manifest(dir, blob, depth + 1);
    }
    serde_json::from_value(blob).map_err(|e| bad(format!("manifest: {e}")))
}

fn load_docker(dir: &Path) -> Result<ImagePlan> {
    let entries: Vec<DockerEntry> = read_json(&dir.join("manifest.json"))?;
    let entry = entries.into_iter().next().ok_or_else(|| TemplateError::InvalidImage("manifest.json lists no image".into()))?;
    let config_path = inside(dir, &entry.config)?;
    if let Some(d) = digest_in_name(&config_path) {
        d.check(&sha256_file(&config_path)?, "image config")?;
    }
    let config_file: ConfigFile = read_json(&config_path)?;
    let layers = entry
        .layers
        .iter()
        .map(|l| {
            let path = inside(dir, l)?;
            let digest = if path.parent().is_some_and(|p| p.ends_with("blobs/sha256")) { digest_in_name(&path) } else { None };
            Ok(LayerRef { path, digest, size: None, diff_id: None })
        })
        .collect::<Result<Vec<_>>>()?;
    plan("docker-save", config_file, layers, true)
}

/// Attaches diff_ids (required for docker save, whose layers have no other digest).
fn plan(format: &'static str, cf: ConfigFile, mut layers: Vec<LayerRef>, need_diff_ids: bool) -> Result<ImagePlan> {
    let diff_ids = cf.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() == layers.len() {
        for (l, d) in layers.iter_mut().zip(&diff_ids) {
            l.diff_id = Some(Sha256Digest::parse(d)?);
        }
    } else if need_diff_ids || !diff_ids.is_empty() {
        return Err(TemplateError::InvalidImage(format!(
            "the config lists {} layer diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    let c = cf.config.unwrap_or_default();
    let config = ImageConfig {
        env: c.env.unwrap_or_default(),
        cwd: c.working_dir.filter(|s| !s.is_empty()),
        user: c.user.filter(|s| !s.is_empty()),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
    };
    Ok(ImagePlan { format, config, layers })
}

/// `dir/rel` for a path named inside the image, refusing `..` and absolute paths.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf> {
    let parts = clean_components(Path::new(rel))
        .map_err(|r| TemplateError::InvalidImage(format!("manifest.json names {rel:?}: {r}")))?;
    Ok(dir.join(parts.iter().collect::<PathBuf>()))
}

/// `…/<64 hex>` or `…/<64 hex>.json`: docker save names files by their digest.
fn digest_in_name(path: &Path) -> Option<Sha256Digest> {
    let name = path.file_name()?.to_str()?;
    Sha256Digest::from_hex(name.strip_suffix(".json").unwrap_or(name))
}

/// Reads a blob named by a descriptor, checking its size and digest.
fn read_blob(dir: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let digest = Sha256Digest::parse(&d.digest)?;
    let path = digest.blob_path(dir);
    let bytes = read_capped(&path)?;
    if let Some(size) = d.size.filter(|s| *s != bytes.len() as u64) {
        return Err(TemplateError::InvalidImage(format!("{what} is {} bytes, its descriptor says {size}", bytes.len())));
    }
    let actual = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
    digest.check(&actual, what)?;
    Ok(bytes)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read_capped(path)?)
        .map_err(|e| TemplateError::InvalidImage(format!("{}: {e}", path.display())))
}

fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let len = fs::metadata(path).ctx("reading", path)?.len();
    if len > MAX_JSON {
        return Err(TemplateError::InvalidImage(format!("{} is too large ({len} bytes) for image metadata", path.display())));
    }
    fs::read(path).ctx("reading", path)
}
