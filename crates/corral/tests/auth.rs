//! Who may do what: API tokens on the REST API, a join token for dataplanes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster, Driver, API_TOKEN, BIN};
use corral_client::{Client, ClientError, ListFilter};
use corral_core::api::CreateSandboxRequest;

#[tokio::test]
async fn the_api_refuses_requests_without_a_valid_token_and_changes_nothing() {
    let c = Cluster::split().await;
    c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    let before = c.client.list(&ListFilter::default()).await.unwrap().len();
    for token in [None, Some("wrong".to_string())] {
        let anon = Client::new(&c.url(), token.clone()).unwrap();
        let err = anon.create(&CreateSandboxRequest::default(), false).await.unwrap_err();
        assert!(matches!(&err, ClientError::Api { status: 401, code, .. } if code == "unauthorized"), "{token:?}: {err}");
        assert_eq!(anon.list(&ListFilter::default()).await.unwrap_err().status(), Some(401));
        assert!(anon.healthy().await, "health stays open for probes");
    }
    let raw = reqwest::Client::new().get(format!("{}/v1/hosts", c.url())).send().await.unwrap();
    assert_eq!(raw.status().as_u16(), 401);
    assert_eq!(raw.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    assert_eq!(c.client.list(&ListFilter::default()).await.unwrap().len(), before);
    let out = Command::new(BIN).args(["sandbox", "ls"]).env("CORRAL_URL", c.url()).env("CORRAL_TOKEN", API_TOKEN).output().unwrap();
    assert!(out.status.success(), "the CLI presents CORRAL_TOKEN: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_dataplane_with_the_wrong_join_token_cannot_join() {
    let c = Cluster::split().await;
    let intruder = c.start_dataplane_as("intruder", "not-the-join-token");
    eventually(Duration::from_secs(10), "the intruder to be refused", || async {
        intruder.log_text().contains("join token").then_some(())
    })
    .await;
    let hosts = c.client.hosts().await.unwrap();
    assert_eq!(hosts.hosts.iter().map(|h| h.host.id.as_str()).collect::<Vec<_>>(), vec!["h1"]);
}

#[test]
fn corral_server_refuses_to_start_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("CORRAL_API_TOKENS")
        .env_remove("CORRAL_JOIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-no-auth"));
}

#[tokio::test]
async fn up_with_auth_generates_a_token_and_requires_it() {
    let mut c = Cluster::prepare(Driver::Process);
    c.extra_up_args = vec!["--auth".into()];
    c.spawn_up_only();
    let token_file = c.server_dir().join("api-token");
    let token = eventually(Duration::from_secs(20), "the generated token", || async {
        std::fs::read_to_string(&token_file).ok().map(|t| t.trim().to_string()).filter(|t| t.len() == 32)
    })
    .await;
    c.client = Client::new(&c.url(), Some(token)).unwrap();
    c.wait_ready().await;
    assert!(c.client.create(&CreateSandboxRequest::default(), true).await.is_ok());
    let anon = Client::new(&c.url(), None).unwrap();
    assert_eq!(anon.list(&ListFilter::default()).await.unwrap_err().status(), Some(401));
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_changes_nothing() {
    let mut c = Cluster::prepare(Driver::Process);
    c.extra_up_args = vec!["--rate-limit".into(), "5".into()];
    c.start_up().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // let readiness polling's bucket refill
    let mut created = 0;
    let mut limited = 0;
    for _ in 0..20 {
        match c.client.create(&CreateSandboxRequest::default(), false).await {
            Ok(_) => created += 1,
            Err(ClientError::Api { status: 429, code, .. }) => {
                assert_eq!(code, "rate_limited");
                limited += 1;
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert!(created >= 5 && limited >= 10, "created {created}, limited {limited}");
    let raw = reqwest::Client::new().get(format!("{}/v1/hosts", c.url())).send().await.unwrap();
    assert_eq!(raw.status().as_u16(), 429);
    assert!(raw.headers().get("retry-after").is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = c.client.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed.len(), created, "refused creates left nothing behind");
}

#[tokio::test]
async fn an_isolated_sandbox_cannot_reach_the_server_or_its_agent() {
    let c = Cluster::up().await;
    if c.driver != Driver::Native {
        eprintln!("skipped: isolation needs the native driver");
        return;
    }
    let sb = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    let agent = std::fs::read_to_string(c.server_dir().join("dataplane/agent.addr")).unwrap();
    let agent_port = agent.trim().rsplit(':').next().unwrap().to_string();
    let script = format!(
        "import socket\n\
         for port in ({api}, {grpc}, {agent}):\n\
         \x20   s = socket.socket(); s.settimeout(2)\n\
         \x20   try:\n\
         \x20       s.connect(('127.0.0.1', port)); print('reached', port)\n\
         \x20   except OSError as e:\n\
         \x20       print('refused', port)\n",
        api = c.api_port,
        grpc = c.grpc_port,
        agent = agent_port
    );
    let req = corral_core::api::ExecRequest {
        cmd: vec!["/usr/bin/python3".into(), "-c".into(), script],
        ..Default::default()
    };
    let out = c.client.exec(&sb.id, &req).await.unwrap();
    assert_eq!(out.stdout.matches("refused").count(), 3, "{out:?}");
    assert!(!out.stdout.contains("reached"), "{out:?}");
}
