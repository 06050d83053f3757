//! The store's guarantees: atomic builds, one build per name at a time,
//! list/get/remove, name validation, and the host template.

mod common;

use std::fs;
use std::path::Path;
use std::sync::mpsc;

use corral_template::{
    default_host_binds, default_host_builder, DebootstrapSpec, TemplateError, TemplateKind, TemplateStatus,
    TemplateStore,
};

fn store() -> (tempfile::TempDir, TemplateStore) {
    let t = tempfile::tempdir().unwrap();
    let s = TemplateStore::open(t.path().join("templates")).unwrap();
    (t, s)
}

#[test]
fn host_template_from_the_default_builder() {
    let (_t, s) = store();
    let tpl = s.ensure_host_template("base", default_host_binds(), default_host_builder).unwrap();
    assert_eq!(tpl.meta.kind, TemplateKind::Host);
    assert!(tpl.is_ready());
    let r = tpl.rootfs();
    assert!(r.join("usr").is_dir(), "bind target for the host's /usr");
    assert!(fs::read_dir(r.join("usr")).unwrap().next().is_none(), "nothing copied from the host");
    for d in ["bin", "lib"] {
        match fs::read_link(Path::new("/").join(d)) {
            Ok(target) => assert_eq!(fs::read_link(r.join(d)).unwrap(), target, "{d} mirrors the host's symlink"),
            Err(_) => assert!(r.join(d).is_dir(), "{d} is a bind target"),
        }
    }
    let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    for f in ["group", "hosts", "resolv.conf", "nsswitch.conf"] {
        assert!(r.join("etc").join(f).is_file(), "{f}");
    }
    assert!(tpl.meta.size_bytes < 1 << 20, "a skeleton is small: {}", tpl.meta.size_bytes);
    let json = fs::read_to_string(tpl.dir.join("template.json")).unwrap();
    assert!(json.contains("\"/usr\""), "binds are recorded for the runtime: {json}");
    // A second ensure reuses it and does not call the builder.
    let again = s.ensure_host_template("base", vec![], |_| panic!("must not rebuild")).unwrap();
    assert_eq!(again.meta, tpl.meta);
}

#[test]
fn a_failing_build_leaves_a_failed_record_and_no_rootfs() {
    let (_t, s) = store();
    let err = s
        .ensure_host_template("base", vec![], |root| {
            fs::write(root.join("half-written"), "x")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
    assert!(matches!(err, TemplateError::HostBuild(_)), "{err}");
    let tpl = s.get("base").unwrap();
    assert_eq!(tpl.meta.status, TemplateStatus::Failed);
    assert!(tpl.meta.error.as_deref().unwrap().contains("disk on fire"));
    assert!(!tpl.rootfs().exists());
    assert!(fs::read_dir(s.root().join(".building")).unwrap().next().is_none());
    // Retrying replaces the failed record.
    let tpl = s.ensure_host_template("base", vec![], default_host_builder).unwrap();
    assert!(tpl.is_ready());
}

#[test]
fn a_crashed_build_is_never_ready_and_is_cleaned_by_the_next_build() {
    let (_t, s) = store();
    // What a build killed mid-way leaves: a staging folder, status building, no lock held.
    let staging = s.root().join(".building/base");
    fs::create_dir_all(staging.join("rootfs/usr")).unwrap();
    fs::write(
        staging.join("template.json"),
        r#"{"name":"base","kind":"host","status":"building","size_bytes":0,"created_at_ms":1}"#,
    )
    .unwrap();
    let tpl = s.get("base").unwrap();
    assert_eq!(tpl.meta.status, TemplateStatus::Failed, "no live builder: reported as failed");
    assert!(tpl.meta.error.unwrap().contains("interrupted"));
    assert_eq!(s.list().unwrap().len(), 1);
    let tpl = s.ensure_host_template("base", vec![], default_host_builder).unwrap();
    assert!(tpl.is_ready());
    assert!(!staging.exists());
}

#[test]
fn a_second_build_of_the_same_name_is_refused_while_one_runs() {
    let (_t, s) = store();
    let (started_tx, started_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let s2 = s.clone();
    let builder = std::thread::spawn(move || {
        s2.ensure_host_template("base", vec![], move |root| {
            started_tx.send(()).unwrap();
            finish_rx.recv().unwrap();
            default_host_builder(root)
        })
    });
    started_rx.recv().unwrap();
    let seen = s.get("base").unwrap();
    assert_eq!(seen.meta.status, TemplateStatus::Building);
    let err = s.ensure_host_template("base", vec![], default_host_builder).unwrap_err();
    assert!(matches!(err, TemplateError::Busy(_)), "{err}");
    assert!(err.to_string().contains("being built"), "{err}");
    assert!(matches!(s.remove("base").unwrap_err(), TemplateError::Busy(_)));
    // Other names build meanwhile.
    assert!(s.ensure_host_template("other", vec![], default_host_builder).unwrap().is_ready());
    finish_tx.send(()).unwrap();
    assert!(builder.join().unwrap().unwrap().is_ready());
    assert!(s.get("base").unwrap().is_ready());
}

#[test]
fn list_get_remove() {
    let (_t, s) = store();
    assert!(s.list().unwrap().is_empty());
    for n in ["b", "a", "c"] {
        s.ensure_host_template(n, vec![], default_host_builder).unwrap();
    }
    let names: Vec<_> = s.list().unwrap().into_iter().map(|t| t.meta.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
    s.remove("b").unwrap();
    assert!(matches!(s.get("b").unwrap_err(), TemplateError::NotFound(_)));
    assert!(matches!(s.remove("b").unwrap_err(), TemplateError::NotFound(_)));
    assert_eq!(s.list().unwrap().len(), 2);
    assert!(fs::read_dir(s.root().join(".trash")).unwrap().next().is_none(), "trash emptied");
    // The store's own folders are never listed as templates.
    assert!(s.list().unwrap().iter().all(|t| !t.meta.name.starts_with('.')));
}

#[test]
fn names_are_validated_everywhere() {
    let (_t, s) = store();
    for bad in ["", "../etc", ".cache", "a/b", "-rf", &"x".repeat(129)] {
        assert!(matches!(s.get(bad).unwrap_err(), TemplateError::InvalidName { .. }), "{bad:?}");
        assert!(matches!(s.remove(bad).unwrap_err(), TemplateError::InvalidName { .. }), "{bad:?}");
        let e = s.ensure_host_template(bad, vec![], default_host_builder).unwrap_err();
        assert!(matches!(e, TemplateError::InvalidName { .. }), "{bad:?}");
        let e = s.build_debootstrap(bad, &DebootstrapSpec::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(e, TemplateError::InvalidName { .. }), "{bad:?}");
    }
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn debootstrap_refuses_bad_input_before_doing_anything() {
    let (_t, s) = store();
    let spec = DebootstrapSpec { packages: vec!["--evil".into()], mirror: Some("http://m.invalid/debian".into()), ..Default::default() };
    let e = s.build_debootstrap("deb", &spec, &mut |_| {}).unwrap_err();
    assert!(matches!(e, TemplateError::InvalidArgument(_)), "{e}");
    let spec = DebootstrapSpec { suite: "no-such-suite-here".into(), ..Default::default() };
    let e = s.build_debootstrap("deb", &spec, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("--mirror"), "{e}");
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn foreign_folders_are_neither_listed_nor_overwritten() {
    let (_t, s) = store();
    fs::create_dir_all(s.root().join("mine/rootfs")).unwrap();
    fs::write(s.root().join("broken.json-less"), "").unwrap();
    fs::create_dir_all(s.root().join("garbled")).unwrap();
    fs::write(s.root().join("garbled/template.json"), "{not json").unwrap();
    assert!(s.list().unwrap().is_empty());
    let e = s.ensure_host_template("mine", vec![], default_host_builder).unwrap_err();
    assert!(matches!(e, TemplateError::Io { .. }), "{e}");
    let e = s.ensure_host_template("garbled", vec![], default_host_builder).unwrap_err();
    assert!(matches!(e, TemplateError::BadMeta { .. }), "{e}");
    assert!(s.root().join("mine/rootfs").is_dir(), "an unknown folder is left alone");
}
