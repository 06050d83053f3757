//! The dataplane's event buffer reaching its bound against the real server:
//! while the server cannot record (and so does not ack) start reports, the
//! buffer fills, the sandboxes that started later wait to report (backpressure)
//! instead of dropping their events, and once the server acks again every
//! event arrives and every sandbox is `running`.
//!
//! In process: a server over a [`FaultyStore`] that refuses the commits of
//! start reports, and a dataplane with the simulated driver and a 2-event buffer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_client::Client;
use corral_core::api::CreateSandboxRequest;
use corral_core::SandboxState;
use corral_dataplane::{DataplaneConfig, SimDriver};
use corral_server::{Server, ServerConfig};
use corral_store::{FaultyStore, MemoryStore, Write};

mod common;
use common::eventually;

const BOUND: usize = 2;
const SANDBOXES: usize = 8;

/// How many sandboxes a batch of writes reports as started.
fn started_in(writes: &[Write]) -> usize {
    writes.iter().filter(|w| matches!(w, Write::PutSandbox(sb) if sb.state == SandboxState::Running)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_buffer_holds_reporters_back_and_every_event_arrives_once_acked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let faults = store.faults();
    let server = Server::bind_with_store(
        ServerConfig {
            data_dir: dir.path().join("server"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::default()
        },
        store,
    )
    .await
    .expect("bind");
    let client = Client::new(&format!("http://{}", server.http_addr()), None).expect("client");
    let mut config = DataplaneConfig::new(format!("http://{}", server.grpc_addr()), "h1", dir.path().join("dp"));
    config.event_buffer = BOUND;
    config.poll_wait_ms = 1000;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serving = tokio::spawn(server.serve(until(stopped.clone())));
    let driver = Arc::new(SimDriver::new(Duration::ZERO));
    let dataplane = tokio::spawn(corral_dataplane::run_with_driver(config, driver.clone(), until(stopped)));
    eventually(Duration::from_secs(30), "the host to register", || async {
        client.hosts().await.ok()?.hosts.iter().any(|h| h.alive).then_some(())
    })
    .await;

    // The server refuses to record starts, so it acks none of their reports.
    let largest_report = Arc::new(AtomicUsize::new(0));
    {
        let largest = largest_report.clone();
        faults.fail_when(move |writes| {
            let n = started_in(writes);
            largest.fetch_max(n, Ordering::SeqCst);
            n > 0
        });
    }
    let ids = client.create_batch(SANDBOXES, &CreateSandboxRequest::default()).await.expect("create");
    eventually(Duration::from_secs(30), "the host to start every sandbox", || async {
        (driver.running() == SANDBOXES).then_some(())
    })
    .await;
    let refused_before = faults.refused();
    eventually(Duration::from_secs(30), "the host to retry its report", || async {
        (faults.refused() >= refused_before + 2).then_some(())
    })
    .await;
    let reported = largest_report.load(Ordering::SeqCst);
    assert!(
        (1..=BOUND).contains(&reported),
        "reports carry at most the buffer's {BOUND} events while {SANDBOXES} sandboxes started: {reported}"
    );
    let listed = client.list(&Default::default()).await.expect("list");
    assert_eq!(listed.len(), SANDBOXES);
    assert!(listed.iter().all(|sb| sb.state != SandboxState::Running), "no start recorded yet: {listed:?}");

    faults.clear();
    eventually(Duration::from_secs(60), "every start to be recorded", || async {
        let all = client.list(&Default::default()).await.ok()?;
        (all.iter().filter(|sb| sb.state == SandboxState::Running).count() == SANDBOXES).then_some(())
    })
    .await;
    for id in &ids {
        let sb = client.get(id).await.expect("get");
        assert_eq!(sb.state, SandboxState::Running, "{id}");
        assert_eq!(sb.host.as_deref(), Some("h1"));
    }
    assert_eq!(driver.running(), SANDBOXES, "none was started twice or stopped");

    let _ = stop.send(true);
    dataplane.await.expect("join").expect("dataplane ends cleanly");
    serving.await.expect("join").expect("server ends cleanly");
}
