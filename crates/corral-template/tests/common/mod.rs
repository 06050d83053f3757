//! Builds small OCI layouts and docker-save archives in tests.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

pub fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A layer tar built entry by entry.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Self {
        Self { b: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn file(mut self, path: &str, body: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, body.len() as u64);
        self.b.append_data(&mut h, path, body.as_bytes()).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.raw_link(&mut h, path, target);
        self
    }

    /// Writes names byte for byte, bypassing the tar crate's own checks, to
    /// make the hostile entries a real attacker would.
    fn raw_link(&mut self, h: &mut tar::Header, path: &str, target: &str) {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(h, &[][..]).unwrap();
    }

    pub fn raw_file(mut self, path: &str, body: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, body.len() as u64);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.b.append(&h, body.as_bytes()).unwrap();
        self
    }

    pub fn raw_hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.raw_link(&mut h, path, target);
        self
    }

    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

pub fn config_json(uncompressed_layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = uncompressed_layers.iter().map(|l| format!("sha256:{}", sha(l))).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
            "WorkingDir": "/app", "User": "1000:1000",
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha(bytes);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    hex
}

/// An OCI image layout; `gzipped[i]` compresses layer i. Returns the layer blob digests.
pub fn write_oci(dir: &Path, layers: &[Vec<u8>], gzipped: &[bool]) -> Vec<String> {
    let config = config_json(layers);
    let config_hex = put_blob(dir, &config);
    let mut descs = Vec::new();
    let mut hexes = Vec::new();
    for (l, gz) in layers.iter().zip(gzipped) {
        let blob = if *gz { gzip(l) } else { l.clone() };
        let hex = put_blob(dir, &blob);
        let mt = if *gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" };
        descs.push(json!({"mediaType": mt, "digest": format!("sha256:{hex}"), "size": blob.len()}));
        hexes.push(hex);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": descs
    }))
    .unwrap();
    let m_hex = put_blob(dir, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{m_hex}"), "size": manifest.len(),
        "platform": {"architecture": "amd64", "os": "linux"}
    }]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    hexes
}

/// A classic `docker save` directory: manifest.json, <id>.json, <n>/layer.tar.
pub fn write_docker_save(dir: &Path, layers: &[Vec<u8>]) {
    fs::create_dir_all(dir).unwrap();
    let config = config_json(layers);
    let config_name = format!("{}.json", sha(&config));
    fs::write(dir.join(&config_name), &config).unwrap();
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let d = format!("layer{i}");
        fs::create_dir_all(dir.join(&d)).unwrap();
        fs::write(dir.join(&d).join("layer.tar"), l).unwrap();
        names.push(format!("{d}/layer.tar"));
    }
    let m = json!([{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]);
    fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
}

/// Tars a directory (as `skopeo copy oci-archive:` / `docker save -o` would).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

pub fn no_progress() -> impl FnMut(corral_template::Progress) {
    |_| {}
}
