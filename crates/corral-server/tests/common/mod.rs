//! An in-process server on loopback and raw REST calls (status, headers,
//! JSON) for the server's integration tests.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use corral_server::{Server, ServerConfig};
use corral_store::Store;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// An in-process server on loopback; stopped (gracefully) on drop.
pub struct Running {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn start(data_dir: &Path, store: Option<Arc<dyn Store>>) -> Running {
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
    pub async fn stop(mut self) {
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
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

pub async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> Answer {
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

pub async fn create(url: &str, key: Option<&str>) -> Answer {
    let body = match key {
        Some(k) => json!({ "idempotency_key": k }),
        None => json!({}),
    };
    call(reqwest::Method::POST, format!("{url}/v1/sandboxes"), Some(body)).await
}

pub async fn create_batch(url: &str, count: usize) -> Answer {
    call(reqwest::Method::POST, format!("{url}/v1/sandboxes/batch"), Some(json!({ "count": count }))).await
}

/// Every sandbox the server lists, as `(id, state)`.
pub async fn listed(url: &str) -> BTreeSet<(String, String)> {
    let a = call(reqwest::Method::GET, format!("{url}/v1/sandboxes?limit=100000"), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let items = a.body["sandboxes"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|s| (s["id"].as_str().unwrap_or("").to_string(), s["state"].as_str().unwrap_or("").to_string()))
        .collect()
}

pub fn ids(set: &BTreeSet<(String, String)>) -> BTreeSet<String> {
    set.iter().map(|(id, _)| id.clone()).collect()
}

