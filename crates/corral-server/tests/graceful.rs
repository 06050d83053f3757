//! Graceful shutdown with a create caught mid-commit: the server stops
//! accepting connections but finishes that request, which gets its 201 and is
//! durable; `serve` returns only then.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create, Running};
use corral_store::{FaultyStore, MemoryStore, Store};

/// Polls `cond` every 5 ms, panicking after 10 s.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_in_flight_at_shutdown_gets_its_201_and_is_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = Arc::new(MemoryStore::new());
    let store = Arc::new(FaultyStore::new(inner.clone()));
    let faults = store.faults();
    let server = Running::start(dir.path(), Some(store)).await;
    let url = server.url.clone();

    faults.pause();
    let in_flight = {
        let url = url.clone();
        tokio::spawn(async move { create(&url, Some("in-flight")).await })
    };
    until("the create to reach the store", async || faults.waiting() == 1).await;
    let stopping = tokio::spawn(server.stop());
    until("the server to stop accepting connections", async || {
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        fresh.get(format!("{url}/healthz")).send().await.is_err()
    })
    .await;
    assert!(!stopping.is_finished(), "serve waits for the request in flight");

    faults.resume();
    let answer = in_flight.await.expect("join");
    assert_eq!(answer.status, 201, "{}", answer.body);
    stopping.await.expect("serve returns cleanly");
    let id = answer.body["id"].as_str().expect("id");
    let stored = inner.load().expect("load").sandboxes;
    assert_eq!(stored.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec![id], "the 201 is durable");
}
