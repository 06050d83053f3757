//! A store that cannot commit (I/O error, full disk): every request whose
//! decision was in a failed batch gets 503 with `Retry-After` and the standard
//! error body, nothing of it lands in the store or in what the server shows,
//! the server keeps serving, and once the fault clears everything works and
//! nothing accepted is lost.
//!
//! Two faults: commits refused by a [`FaultyStore`] (any backend), and a real
//! full disk: the data dir on a small tmpfs this test mounts, fills and frees.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{call, create, create_batch, ids, listed, Answer, Running};
use corral_store::{FaultyStore, MemoryStore, Store};

fn assert_store_unavailable(a: &Answer) {
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("1"), "503 carries Retry-After");
    assert_eq!(a.body["error"]["code"], "store_unavailable", "{}", a.body);
    assert!(a.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_answer_503_keep_nothing_and_the_server_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = Arc::new(MemoryStore::new());
    let store = Arc::new(FaultyStore::new(inner.clone()));
    let faults = store.faults();
    let server = Running::start(dir.path(), Some(store.clone())).await;
    let url = server.url.clone();

    let first = create(&url, None).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first_id = first.body["id"].as_str().expect("id").to_string();
    let before_store = inner.load().expect("load").sandboxes;
    let before_listed = listed(&url).await;

    faults.set_failing(true);
    assert_store_unavailable(&create(&url, None).await);
    assert_store_unavailable(&create(&url, Some("retry-me")).await);
    assert_store_unavailable(&create_batch(&url, 50).await);
    let delete = call(reqwest::Method::DELETE, format!("{url}/v1/sandboxes/{first_id}"), None).await;
    assert_store_unavailable(&delete);
    assert!(faults.refused() >= 4, "every refused request was a refused commit");

    // Nothing of the refused batches is stored, listed or remembered.
    assert_eq!(inner.load().expect("load").sandboxes, before_store);
    assert_eq!(listed(&url).await, before_listed);
    let got = call(reqwest::Method::GET, format!("{url}/v1/sandboxes/{first_id}"), None).await;
    assert_eq!((got.status, got.body["state"].as_str()), (200, Some("pending")), "the delete did not happen");
    let metrics = call(reqwest::Method::GET, format!("{url}/healthz"), None).await;
    assert_eq!(metrics.status, 200, "the server keeps serving");

    faults.set_failing(false);
    // The refused key is unknown: the retry is a fresh create, not a replay.
    let retried = create(&url, Some("retry-me")).await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    let replay = create(&url, Some("retry-me")).await;
    assert_eq!((replay.status, &replay.body["id"]), (200, &retried.body["id"]));
    let batch = create_batch(&url, 50).await;
    assert_eq!(batch.status, 201, "{}", batch.body);
    let deleted = call(reqwest::Method::DELETE, format!("{url}/v1/sandboxes/{first_id}"), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);

    let mut accepted: BTreeSet<String> = batch.body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    accepted.insert(first_id.clone());
    accepted.insert(retried.body["id"].as_str().expect("id").to_string());
    assert_eq!(ids(&listed(&url).await), accepted);
    server.stop().await;

    // A server started on the same store finds exactly what was accepted.
    let again = Running::start(dir.path(), Some(Arc::new(FaultyStore::new(inner.clone())))).await;
    let after = listed(&again.url).await;
    assert_eq!(ids(&after), accepted);
    assert!(after.contains(&(first_id, "terminated".to_string())), "{after:?}");
    again.stop().await;
}

/// A tmpfs mounted for one test, lazily unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mkdir");
        nix::mount::mount(Some("tmpfs"), &path, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(size))
            .expect("mount tmpfs");
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503s_and_the_server_recovers_when_space_is_freed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return;
    }
    let disk = Tmpfs::mount("size=8m");
    let data_dir = disk.path.join("server");
    let server = Running::start(&data_dir, None).await;
    let url = server.url.clone();
    let mut accepted = BTreeSet::new();
    for _ in 0..5 {
        let a = create(&url, None).await;
        assert_eq!(a.status, 201, "{}", a.body);
        accepted.insert(a.body["id"].as_str().expect("id").to_string());
    }

    fill(&disk.path.join("filler"));
    // Batches of 1,000 records need new pages: some commit must hit ENOSPC.
    let mut refused = None;
    for _ in 0..40 {
        let a = create_batch(&url, 1000).await;
        match a.status {
            201 => accepted.extend(a.body["ids"].as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_string())),
            _ => {
                refused = Some(a);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses a commit");
    eprintln!("refused after {} accepted: {}", accepted.len(), refused.body);
    assert_store_unavailable(&refused);
    assert_eq!(ids(&listed(&url).await), accepted, "a refused batch is not listed");
    let health = call(reqwest::Method::GET, format!("{url}/healthz"), None).await;
    assert_eq!(health.status, 200, "the server keeps serving");

    std::fs::remove_file(disk.path.join("filler")).expect("free space");
    // The first commit after the space is back reopens the store.
    let a = create_batch(&url, 100).await;
    assert_eq!(a.status, 201, "{}", a.body);
    accepted.extend(a.body["ids"].as_array().expect("ids").iter().map(|v| v.as_str().expect("id").to_string()));
    assert_eq!(ids(&listed(&url).await), accepted);
    server.stop().await;

    // From disk: exactly what was accepted, nothing of the refused batch.
    let again = Running::start(&data_dir, None).await;
    assert_eq!(ids(&listed(&again.url).await), accepted);
    again.stop().await;
}
