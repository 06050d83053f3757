//! OCI and docker-save import, end to end on images built by the test.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use corral_template::{TemplateError, TemplateKind, TemplateStatus, TemplateStore};

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file("etc/a", "a", 0o644)
        .file("etc/b", "b", 0o644)
        .dir("opt/x", 0o755)
        .file("opt/x/keep1", "1", 0o644)
        .dir("opt/x/sub", 0o755)
        .file("opt/x/sub/deep", "d", 0o644)
        .dir("usr/lib", 0o755)
        .file("usr/lib/libfoo.so", "foo", 0o755)
        .hardlink("usr/lib/libfoo.so.1", "usr/lib/libfoo.so")
        .symlink("lib", "usr/lib")
        .file("usr/bin/su", "setuid", 0o4755)
        .dir("ro", 0o555)
        .file("ro/inside", "r", 0o444)
        .tar()
}

fn upper_layer() -> Vec<u8> {
    Layer::new()
        .file("etc/.wh.a", "", 0o644)
        .file("opt/x/new", "n", 0o644) // before the opaque marker: must survive
        .file("opt/x/.wh..wh..opq", "", 0o644)
        .file("etc/c", "c", 0o600)
        .file("lib/libbar.so", "bar", 0o755) // through the `lib -> usr/lib` symlink
        .symlink("etc/b", "/etc/c") // replaces a file by a symlink
        .tar()
}

fn top_layer() -> Vec<u8> {
    Layer::new().dir("etc/c.d", 0o700).file("usr/lib/.wh.libfoo.so.1", "", 0o644).tar()
}

fn read(root: &Path, p: &str) -> String {
    fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn check_layered_rootfs(rootfs: &Path) {
    assert!(!rootfs.join("etc/a").exists(), "whiteout");
    assert_eq!(fs::read_link(rootfs.join("etc/b")).unwrap(), PathBuf::from("/etc/c"));
    assert_eq!(read(rootfs, "etc/c"), "c");
    assert_eq!(fs::metadata(rootfs.join("etc/c")).unwrap().mode() & 0o7777, 0o600);
    assert!(!rootfs.join("opt/x/keep1").exists(), "opaque dir keeps nothing from below");
    assert!(!rootfs.join("opt/x/sub").exists());
    assert_eq!(read(rootfs, "opt/x/new"), "n");
    assert_eq!(read(rootfs, "usr/lib/libbar.so"), "bar");
    assert_eq!(fs::read_link(rootfs.join("lib")).unwrap(), PathBuf::from("usr/lib"));
    assert!(!rootfs.join("usr/lib/libfoo.so.1").exists());
    let su = fs::metadata(rootfs.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(rootfs.join("ro")).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(fs::metadata(rootfs.join("etc/c.d")).unwrap().mode() & 0o7777, 0o700);
}

#[test]
fn oci_layout_dir_with_whiteouts_opaque_dirs_links_and_config() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("image");
    write_oci(&image, &[base_layer(), upper_layer(), top_layer()], &[true, false, true]);
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let mut lines = Vec::new();
    let tpl = store.import_oci("app", &image, &mut |p| lines.push(p.message)).unwrap();
    assert!(lines.iter().any(|l| l.contains("layer 3/3 applied")), "{lines:?}");
    assert_eq!(tpl.meta.kind, TemplateKind::Oci);
    assert_eq!(tpl.meta.status, TemplateStatus::Ready);
    assert!(tpl.meta.size_bytes > 0);
    assert_eq!(tpl.meta.config.env, ["PATH=/usr/bin:/bin", "GREETING=hi"]);
    assert_eq!(tpl.meta.config.cwd.as_deref(), Some("/app"));
    assert_eq!(tpl.meta.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(tpl.meta.config.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(tpl.meta.config.cmd, ["echo hi"]);
    check_layered_rootfs(&tpl.rootfs());
    // template.json on disk says the same, and the store lists it.
    let again = store.get("app").unwrap();
    assert_eq!(again.meta, tpl.meta);
    assert_eq!(store.list().unwrap().len(), 1);
    let json: serde_json::Value = serde_json::from_slice(&fs::read(tpl.dir.join("template.json")).unwrap()).unwrap();
    assert_eq!(json["kind"], "oci");
    assert_eq!(json["status"], "ready");
    assert_eq!(json["config"]["cwd"], "/app");
}

#[test]
fn hardlinks_share_an_inode() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("image");
    write_oci(&image, &[base_layer()], &[false]);
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let tpl = store.import_oci("links", &image, &mut no_progress()).unwrap();
    let r = tpl.rootfs();
    let (a, b) = (fs::metadata(r.join("usr/lib/libfoo.so")).unwrap(), fs::metadata(r.join("usr/lib/libfoo.so.1")).unwrap());
    assert_eq!(a.ino(), b.ino());
    assert_eq!(read(&r, "opt/x/sub/deep"), "d");
}

#[test]
fn oci_layout_as_a_tar_archive() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("image");
    write_oci(&image, &[base_layer(), upper_layer(), top_layer()], &[false, true, false]);
    let archive = t.path().join("image.tar");
    tar_dir(&image, &archive);
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let tpl = store.import_oci("from-tar", &archive, &mut no_progress()).unwrap();
    check_layered_rootfs(&tpl.rootfs());
    assert!(!tpl.dir.join("scratch").exists(), "the unpacked archive is cleaned up");
    assert_eq!(fs::read_dir(tpl.dir.as_path()).unwrap().count(), 2, "only rootfs and template.json");
}

#[test]
fn docker_save_dir_and_tar() {
    let t = tempfile::tempdir().unwrap();
    let saved = t.path().join("saved");
    write_docker_save(&saved, &[base_layer(), upper_layer(), top_layer()]);
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let tpl = store.import_oci("docker-dir", &saved, &mut no_progress()).unwrap();
    check_layered_rootfs(&tpl.rootfs());
    assert_eq!(tpl.meta.config.user.as_deref(), Some("1000:1000"));
    let archive = t.path().join("saved.tar");
    tar_dir(&saved, &archive);
    let tpl = store.import_oci("docker-tar", &archive, &mut no_progress()).unwrap();
    check_layered_rootfs(&tpl.rootfs());
}

/// Imports one image whose only layer is `layer`, expecting a refusal.
fn import_single(layer: Vec<u8>) -> (tempfile::TempDir, TemplateStore, TemplateError) {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("image");
    write_oci(&image, &[Layer::new().dir("etc", 0o755).tar(), layer], &[false, false]);
    let store = TemplateStore::open(t.path().join("root/templates")).unwrap();
    let err = store.import_oci("bad", &image, &mut no_progress()).unwrap_err();
    (t, store, err)
}

fn assert_failed_without_rootfs(store: &TemplateStore) {
    let tpl = store.get("bad").unwrap();
    assert_eq!(tpl.meta.status, TemplateStatus::Failed);
    assert!(tpl.meta.error.is_some());
    assert!(!tpl.rootfs().exists(), "a failed build keeps no rootfs");
}

#[test]
fn refuses_dotdot_traversal() {
    let (t, store, err) = import_single(Layer::new().raw_file("etc/../../../evil", "x").tar());
    assert!(matches!(err, TemplateError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    assert!(!t.path().join("evil").exists() && !t.path().join("root/evil").exists());
    assert_failed_without_rootfs(&store);
}

#[test]
fn refuses_absolute_paths() {
    let (_t, store, err) = import_single(Layer::new().raw_file("/tmp/corral-template-test-abs", "x").tar());
    assert!(matches!(err, TemplateError::UnsafePath { .. }), "{err}");
    assert!(!Path::new("/tmp/corral-template-test-abs").exists());
    assert_failed_without_rootfs(&store);
}

#[test]
fn refuses_symlink_escapes() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    // A symlink climbing out of the rootfs, then a file written through it.
    let layer = Layer::new().symlink("esc", "../../../../../../../../..").file("esc/pwned", "x", 0o644).tar();
    let (_t2, store, err) = import_single(layer);
    assert!(matches!(err, TemplateError::UnsafePath { .. }), "{err}");
    assert_failed_without_rootfs(&store);
    // An absolute symlink is followed inside the rootfs, never on the host.
    let image = t.path().join("image");
    let target = outside.display().to_string();
    write_oci(&image, &[Layer::new().symlink("abs", &target).file("abs/f", "inside", 0o644).tar()], &[false]);
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let tpl = store.import_oci("abs", &image, &mut no_progress()).unwrap();
    assert!(fs::read_dir(&outside).unwrap().next().is_none(), "nothing written on the host");
    assert_eq!(read(&tpl.rootfs(), &format!("{}/f", target.trim_start_matches('/'))), "inside");
}

#[test]
fn refuses_hardlinks_out_of_the_rootfs() {
    let (_t, store, err) = import_single(Layer::new().raw_hardlink("etc/shadow", "../../../../etc/shadow").tar());
    assert!(matches!(err, TemplateError::UnsafePath { .. }), "{err}");
    assert_failed_without_rootfs(&store);
}

#[test]
fn refuses_a_layer_whose_digest_does_not_match() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("image");
    let hexes = write_oci(&image, &[base_layer(), upper_layer()], &[true, false]);
    // Same size, one byte changed: only the digest can catch it.
    let blob = image.join("blobs/sha256").join(&hexes[1]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[600] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let err = store.import_oci("bad", &image, &mut no_progress()).unwrap_err();
    assert!(matches!(err, TemplateError::DigestMismatch { .. }), "{err}");
    assert_failed_without_rootfs(&store);
}

#[test]
fn refuses_a_docker_layer_whose_diff_id_does_not_match() {
    let t = tempfile::tempdir().unwrap();
    let saved = t.path().join("saved");
    write_docker_save(&saved, &[base_layer()]);
    fs::write(saved.join("layer0/layer.tar"), Layer::new().file("x", "other", 0o644).tar()).unwrap();
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let err = store.import_oci("bad", &saved, &mut no_progress()).unwrap_err();
    assert!(matches!(err, TemplateError::DigestMismatch { .. }), "{err}");
    assert_failed_without_rootfs(&store);
}

#[test]
fn clear_errors_for_missing_or_foreign_input() {
    let t = tempfile::tempdir().unwrap();
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let err = store.import_oci("x", &t.path().join("nope"), &mut no_progress()).unwrap_err();
    assert!(matches!(err, TemplateError::InvalidArgument(_)), "{err}");
    assert!(store.list().unwrap().is_empty(), "a missing input creates nothing");
    let empty = t.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = store.import_oci("x", &empty, &mut no_progress()).unwrap_err();
    assert!(err.to_string().contains("index.json"), "{err}");
    let err = store.import_oci("../x", &empty, &mut no_progress()).unwrap_err();
    assert!(matches!(err, TemplateError::InvalidName { .. }), "{err}");
}

#[test]
fn failed_import_can_be_retried_under_the_same_name() {
    let t = tempfile::tempdir().unwrap();
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let empty = t.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    assert!(store.import_oci("app", &empty, &mut no_progress()).is_err());
    assert_eq!(store.get("app").unwrap().meta.status, TemplateStatus::Failed);
    let image = t.path().join("image");
    write_oci(&image, &[base_layer()], &[true]);
    let tpl = store.import_oci("app", &image, &mut no_progress()).unwrap();
    assert!(tpl.is_ready());
    let err = store.import_oci("app", &image, &mut no_progress()).unwrap_err();
    assert!(matches!(err, TemplateError::AlreadyExists(_)), "{err}");
}

#[test]
fn zstd_compressed_layers() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("image");
    let layers = [base_layer(), upper_layer(), top_layer()];
    write_oci(&image, &layers, &[false, false, false]);
    // Swap layer 2 for its zstd form (digest and size updated in a rewritten manifest).
    let mut manifest_hex = String::new();
    let index: serde_json::Value = serde_json::from_slice(&fs::read(image.join("index.json")).unwrap()).unwrap();
    manifest_hex.push_str(&index["manifests"][0]["digest"].as_str().unwrap()[7..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(image.join("blobs/sha256").join(&manifest_hex)).unwrap()).unwrap();
    let z = zstd(&layers[1]);
    let z_hex = sha(&z);
    fs::write(image.join("blobs/sha256").join(&z_hex), &z).unwrap();
    manifest["layers"][1] = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": format!("sha256:{z_hex}"), "size": z.len()
    });
    let m = serde_json::to_vec(&manifest).unwrap();
    let m_hex = sha(&m);
    fs::write(image.join("blobs/sha256").join(&m_hex), &m).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": format!("sha256:{m_hex}"), "size": m.len()}]});
    fs::write(image.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let tpl = store.import_oci("zstd", &image, &mut no_progress()).unwrap();
    check_layered_rootfs(&tpl.rootfs());
}
