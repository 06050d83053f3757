//! A slow dataplane: it applies commands but acks them late. The outbox
//! backlog gauge shows the commands waiting for their ack, drains to zero
//! once the acks arrive, and nothing is lost or started twice.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{eventually, Cluster, Driver};
use corral_core::api::CreateSandboxRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_acks_raise_the_backlog_gauge_which_drains_to_zero_losing_nothing() {
    let mut c = Cluster::prepare(Driver::Process);
    c.extra_up_args = vec!["--debug-ack-delay-ms".into(), "1500".into()];
    c.start_up().await;
    let spec = CreateSandboxRequest::default();

    // The host takes the first ten at once, then holds their ack back; the
    // next ten queue behind them.
    let mut ids = c.client.create_batch(10, &spec).await.expect("first batch");
    eventually(Duration::from_secs(30), "the host to have started the first batch", || async {
        (c.starts().len() >= 10).then_some(())
    })
    .await;
    ids.extend(c.client.create_batch(10, &spec).await.expect("second batch"));
    let peak = eventually(Duration::from_secs(30), "the backlog to show 20 un-acked commands", || async {
        c.backlog().await.filter(|b| *b >= 20.0)
    })
    .await;
    assert_eq!(peak, 20.0, "exactly the un-acked commands are counted");

    eventually(Duration::from_secs(60), "the backlog to drain to 0", || async {
        c.backlog().await.filter(|b| *b == 0.0)
    })
    .await;
    eventually(Duration::from_secs(60), "all 20 running", || async {
        (c.count_in("running").await? == 20).then_some(())
    })
    .await;
    for id in &ids {
        let sb = c.client.get(id).await.expect("get");
        assert_eq!(sb.state, corral_core::SandboxState::Running, "{id}");
    }
    let mut starts: HashMap<String, usize> = HashMap::new();
    for id in c.starts() {
        *starts.entry(id).or_default() += 1;
    }
    assert_eq!(starts.len(), 20, "every sandbox started: {starts:?}");
    assert!(starts.values().all(|n| *n == 1), "none started twice: {starts:?}");
}
