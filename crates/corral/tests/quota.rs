//! `--max-live-per-token`: how many live sandboxes one API token may hold.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, API_TOKEN};
use corral_client::{Client, ClientError, ListFilter};
use corral_core::api::CreateSandboxRequest;

fn assert_quota_refusal(r: Result<impl std::fmt::Debug, ClientError>) {
    match r {
        Err(ClientError::Api { status: 429, code, .. }) => assert_eq!(code, "quota_exceeded"),
        other => panic!("expected 429 quota_exceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_past_its_live_limit_gets_429_and_deleting_frees_room() {
    let mut c = Cluster::prepare_split();
    c.extra_server_args = vec!["--max-live-per-token".into(), "3".into(), "--token".into(), "second-token".into()];
    c.start_server();
    c.start_dataplane();
    c.wait_ready().await;
    let spec = CreateSandboxRequest::default();

    let first = c.client.create(&spec, false).await.unwrap();
    let two = c.client.create_batch(2, &spec).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_quota_refusal(c.client.create(&spec, false).await);
    assert_quota_refusal(c.client.create_batch(1, &spec).await);
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/sandboxes", c.url()))
        .bearer_auth(API_TOKEN)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 429);
    assert!(raw.headers().get("retry-after").is_some(), "429 carries Retry-After");
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(c.client.list(&ListFilter::default()).await.unwrap().len(), 3, "refused creates wrote nothing");

    let other = Client::new(&c.url(), Some("second-token".into())).unwrap();
    let theirs = other.create_batch(3, &spec).await.unwrap();
    assert_eq!(theirs.len(), 3, "another token has its own room");
    let owners: std::collections::BTreeSet<String> = c
        .client
        .list(&ListFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|sb| sb.owner.expect("every sandbox has an owner"))
        .collect();
    assert_eq!(owners.len(), 2);
    assert!(owners.iter().all(|o| o.starts_with("sha256:") && !o.contains(API_TOKEN)), "{owners:?}");

    c.client.delete(&first.id).await.unwrap();
    eventually(Duration::from_secs(20), "the deleted sandbox to end", || async {
        c.client.get(&first.id).await.ok().filter(|sb| sb.state.is_terminal()).map(|_| ())
    })
    .await;
    c.client.create(&spec, false).await.expect("an ended sandbox frees room");
    assert_quota_refusal(c.client.create(&spec, false).await);
}
