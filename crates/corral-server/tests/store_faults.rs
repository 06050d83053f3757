//! A store that cannot commit (I/O error, full disk): every request whose
//! decision was in a failed batch gets 503 with `Retry-After` and the standard
//! error body, nothing of it lands in the store or in what the server shows,
//! the server keeps serving, and once the fault clears everything works and
//! nothing accepted is lost.
//!
//! Two faults: commits refused by a [`FaultyStore`] (any backend), and a real
//! full disk: the data dir on a small tmpfs this test mounts, fills and frees.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_server::{Server, ServerConfig};
use corral_store::{FaultyStore, MemoryStore, Store};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// An in-process server on loopback; stopped (gracefully) on drop.
struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn start(data_dir: &Path, store: Option<Arc<dyn Store>>) -> Running {
        let config = ServerConfig {
            data_dir: data_dir.to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::default()
        };
        let server = match store {
            Some(store) => Server::bind_with_store(config, store).await,
            None => Server::bind(config).await,
        }
        .expect("bind");
        let url = format!("http://{}", server.http_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Running { url, stop: Some(tx), done: Some(done) }
    }

    /// Stops the server and waits until it has let go of its store.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A raw answer: status, `Retry-After`, JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> Answer {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, retry_after, body }
}

async fn create(url: &str, key: Option<&str>) -> Answer {
    let body = match key {
        Some(k) => json!({ "idempotency_key": k }),
        None => json!({}),
    };
    call(reqwest::Method::POST, format!("{url}/v1/sandboxes"), Some(body)).await
}

async fn create_batch(url: &str, count: usize) -> Answer {
    call(reqwest::Method::POST, format!("{url}/v1/sandboxes/batch"), Some(json!({ "count": count }))).await
}

/// Every sandbox the server lists, as `(id, state)`.
async fn listed(url: &str) -> BTreeSet<(String, String)> {
    let a = call(reqwest::Method::GET, format!("{url}/v1/sandboxes?limit=100000"), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let items = a.body["sandboxes"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|s| (s["id"].as_str().unwrap_or("").to_string(), s["state"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn ids(set: &BTreeSet<(String, String)>) -> BTreeSet<String> {
    set.iter().map(|(id, _)| id.clone()).collect()
}

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
