//! A burst of 1,000 creates fired at once: all run, each started once, the
//! outbox drains to zero.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Cluster, Driver};
use corral_core::api::CreateSandboxRequest;
use tokio::sync::Barrier;

const N: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_creates_at_once_all_run_and_the_outbox_drains() {
    let c = Cluster::up_with(Driver::Process).await;
    let barrier = Arc::new(Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (client, barrier) = (c.client.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client.create(&CreateSandboxRequest::default(), false).await
            })
        })
        .collect();
    let started = Instant::now();
    let mut ids = HashSet::new();
    for t in tasks {
        let sb = t.await.unwrap().unwrap_or_else(|e| panic!("create failed: {e}"));
        ids.insert(sb.id);
    }
    assert_eq!(ids.len(), N, "every create got its own sandbox");
    let accepted = started.elapsed();

    let running = eventually(Duration::from_secs(120), "all 1,000 to run", || async {
        let n = c.count_in("running").await?;
        (n == N).then_some(n)
    })
    .await;
    eprintln!("{N} creates accepted in {accepted:?}, all running after {:?}", started.elapsed());
    assert_eq!(running, N);

    eventually(Duration::from_secs(20), "the outbox backlog to return to 0", || async {
        (c.backlog().await? == 0.0).then_some(())
    })
    .await;
    let starts = c.starts();
    let unique: HashSet<_> = starts.iter().collect();
    assert_eq!(starts.len(), unique.len(), "a sandbox was started twice");
    assert_eq!(unique.len(), N);
}
