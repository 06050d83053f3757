//! Templates end to end: an OCI image imported with `corral template import`
//! runs in a native sandbox with the image's env and working directory.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Cluster, Driver, BIN};
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use corral_core::SandboxState;

fn sh(cmd: &str) {
    let st = Command::new("/bin/sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "{cmd}");
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// An OCI image layout holding only a shell and the libraries it needs,
/// taken from this host, with `Env` and `WorkingDir` set.
fn build_oci_layout(dir: &Path) {
    let root = dir.join("root");
    let blobs = dir.join("layout/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let dash = std::fs::canonicalize("/bin/sh").unwrap();
    let mut files = vec![dash.display().to_string()];
    let ldd = Command::new("ldd").arg(&dash).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for f in &files {
        sh(&format!("mkdir -p {root}$(dirname {f}) && cp -L {f} {root}{f}", root = root.display()));
    }
    sh(&format!("mkdir -p {r}/bin {r}/work {r}/tmp && ln -sf {d} {r}/bin/sh", r = root.display(), d = dash.display()));
    let layer = dir.join("layer.tar");
    sh(&format!("tar -C {} -cf {} .", root.display(), layer.display()));
    let layer_digest = sha256(&layer);
    let layer_size = std::fs::metadata(&layer).unwrap().len();
    std::fs::rename(&layer, blobs.join(&layer_digest)).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["FOO=bar", "PATH=/bin"], "WorkingDir": "/work"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let write_blob = |bytes: Vec<u8>| {
        let tmp = dir.join("blob.tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        let d = sha256(&tmp);
        std::fs::rename(&tmp, blobs.join(&d)).unwrap();
        (d, bytes.len())
    };
    let (config_digest, config_size) = write_blob(serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = write_blob(serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest_size}],
    });
    std::fs::write(dir.join("layout/index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("layout/oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[tokio::test]
async fn an_imported_oci_image_runs_with_its_env_and_workdir() {
    if Driver::default_for_tests() != Driver::Native {
        eprintln!("skipped: templates run on the native driver, which needs root");
        return;
    }
    let mut c = Cluster::prepare(Driver::Native);
    let work = c.dir.path().join("oci");
    build_oci_layout(&work);
    let templates = c.templates_dir();
    let out = Command::new(BIN)
        .args(["template", "import", "tiny", "--oci"])
        .arg(work.join("layout"))
        .arg("--templates-dir")
        .arg(&templates)
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    c.start_up().await;

    let listed = c.client.templates().await.unwrap();
    assert!(listed.templates.iter().any(|t| t.name == "tiny"), "{listed:?}");
    let req = CreateSandboxRequest { template: Some("tiny".into()), ..Default::default() };
    let sb = c.client.create(&req, true).await.unwrap();
    assert_eq!(sb.state, SandboxState::Running, "{sb:?}\n{}", c.logs());
    let exec = ExecRequest { cmd: vec!["/bin/sh".into(), "-c".into(), "echo $FOO; pwd; [ -e /usr/bin/python3 ] && echo host-files || echo image-only".into()], ..Default::default() };
    let out = c.client.exec(&sb.id, &exec).await.unwrap();
    assert_eq!(out.stdout, "bar\n/work\nimage-only\n", "image env and workdir honoured, only the image's files: {out:?}");
}

/// Debootstrap results are kept across test runs here (the first run on a
/// machine downloads Debian, ~35 s; later runs link the cached rootfs).
const DEBOOTSTRAP_CACHE: &str = "/var/tmp/corral-test-debootstrap-cache";

#[tokio::test]
async fn a_debootstrap_template_runs_python_in_a_sandbox() {
    if Driver::default_for_tests() != Driver::Native {
        eprintln!("skipped: templates run on the native driver, which needs root");
        return;
    }
    if Command::new("debootstrap").arg("--version").output().is_err() {
        eprintln!("skipped: debootstrap is not installed (scripts/test.sh installs it)");
        return;
    }
    let mut c = Cluster::prepare(Driver::Native);
    let templates = c.templates_dir();
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::create_dir_all(DEBOOTSTRAP_CACHE).unwrap();
    std::os::unix::fs::symlink(DEBOOTSTRAP_CACHE, templates.join(".cache")).unwrap();
    let out = Command::new(BIN)
        .args(["template", "build", "deb", "--debootstrap", "--packages", "python3-minimal", "--templates-dir"])
        .arg(&templates)
        .output()
        .unwrap();
    assert!(out.status.success(), "build: {}", String::from_utf8_lossy(&out.stderr));
    c.start_up().await;

    let req = CreateSandboxRequest { template: Some("deb".into()), ..Default::default() };
    let sb = c.client.create(&req, true).await.unwrap();
    assert_eq!(sb.state, SandboxState::Running, "{sb:?}\n{}", c.logs());
    let exec = ExecRequest {
        cmd: vec!["/bin/sh".into(), "-c".into(), "/usr/bin/python3 -c 'print(1)'; . /etc/os-release; echo $VERSION_CODENAME; [ -e /usr/bin/node ] && echo host-node || echo no-node".into()],
        ..Default::default()
    };
    let out = c.client.exec(&sb.id, &exec).await.unwrap();
    assert_eq!(out.stdout, "1\nbookworm\nno-node\n", "Debian's own python, no host files: {out:?}");
}
