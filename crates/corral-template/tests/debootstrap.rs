//! A real debootstrap build. Needs root, the `debootstrap` package and this
//! machine's Debian mirror. The first run on a machine downloads Debian
//! (~35 s, ~260 MB) into a cache kept across runs; later runs link it.

use std::process::Command;
use std::time::Instant;

use corral_template::{DebootstrapSpec, TemplateKind, TemplateStore};

/// Shared with the end-to-end template test, which builds the same rootfs.
const DEBOOTSTRAP_CACHE: &str = "/var/tmp/corral-test-debootstrap-cache";

#[test]
fn debootstrap_python3_then_cache_hit() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: debootstrap needs root");
        return;
    }
    if Command::new("debootstrap").arg("--version").output().is_err() {
        eprintln!("skipping: debootstrap is not installed (scripts/test.sh installs it)");
        return;
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::create_dir_all(t.path().join("templates")).unwrap();
    std::fs::create_dir_all(DEBOOTSTRAP_CACHE).unwrap();
    std::os::unix::fs::symlink(DEBOOTSTRAP_CACHE, t.path().join("templates/.cache")).unwrap();
    let store = TemplateStore::open(t.path().join("templates")).unwrap();
    let spec = DebootstrapSpec { packages: vec!["python3-minimal".into()], ..Default::default() };
    let started = Instant::now();
    let mut lines = 0;
    let tpl = store.build_debootstrap("deb", &spec, &mut |p| {
        lines += 1;
        eprintln!("[{:5.1}s] {}", p.elapsed.as_secs_f64(), p.message);
    });
    let tpl = tpl.unwrap();
    let first = started.elapsed();
    eprintln!("first build: {first:?}, {} MB, {lines} progress lines", tpl.meta.size_bytes >> 20);
    assert_eq!(tpl.meta.kind, TemplateKind::Debootstrap);
    assert!(tpl.is_ready());
    let out = Command::new("chroot").arg(tpl.rootfs()).args(["/usr/bin/python3", "-c", "print(1)"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");

    let started = Instant::now();
    let mut hit = false;
    let again = store.build_debootstrap("deb2", &spec, &mut |p| hit |= p.message.contains("cache hit")).unwrap();
    eprintln!("second build (cache): {:?}", started.elapsed());
    assert!(hit && again.is_ready());
    assert!(again.rootfs().join("usr/bin/python3").exists());
    store.remove("deb").unwrap();
    store.remove("deb2").unwrap();
}
