//! Graceful shutdown (SIGTERM). The server finishes what is in flight and
//! exits 0: a create in flight either got its 2xx and is durable, or was
//! refused; never a 2xx then lost. A dataplane leaves its sandboxes running
//! by default and the next one adopts them; with `--stop-sandboxes-on-exit`
//! it stops them and the server records why.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster, Proc};
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use corral_core::{EndReason, SandboxState};
use std::sync::Mutex;

/// SIGTERM without blocking the test's runtime; returns the process and
/// whether it exited 0.
async fn terminate(mut p: Proc) -> (Proc, bool) {
    tokio::task::spawn_blocking(move || {
        let ok = p.terminate();
        (p, ok)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_burst_exits_0_and_every_2xx_create_is_durable() {
    let mut c = Cluster::split().await;
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, accepted, refused) = (c.client.clone(), accepted.clone(), refused.clone());
            tokio::spawn(async move {
                // Each client creates until the server stops answering.
                loop {
                    match client.create(&CreateSandboxRequest::default(), false).await {
                        Ok(sb) => accepted.lock().unwrap().push(sb.id),
                        Err(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(60), "creates to be flowing", || async {
        (accepted.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    let (_server, exited_0) = terminate(c.server.take().expect("server")).await;
    for t in clients {
        t.await.expect("client task");
    }
    assert!(exited_0, "the server exits 0 on SIGTERM");
    let accepted: BTreeSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    eprintln!("{} creates got 2xx before the shutdown, {} clients were refused", accepted.len(), refused.load(Ordering::SeqCst));

    c.start_server();
    c.wait_ready().await;
    for id in &accepted {
        let sb = c.client.get(id).await.unwrap_or_else(|e| panic!("{id} got 2xx but is gone: {e}"));
        assert!(!sb.state.is_terminal() || sb.end_reason.is_some(), "{sb:?}");
    }
    eventually(Duration::from_secs(60), "every accepted create to run", || async {
        let running = c.count_in("running").await?;
        (running >= accepted.len()).then_some(())
    })
    .await;
}

/// Keeper pids of the sandboxes a process-driver dataplane in `dir` runs.
fn keepers(dir: &Path) -> BTreeSet<i32> {
    let Ok(dir) = dir.canonicalize() else { return BTreeSet::new() };
    let marker = format!("CORRAL_DATAPLANE_DIR={}", dir.display());
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if vars.contains(&marker.as_bytes()) && vars.contains(&b"CORRAL_KEEPER=1".as_slice()) {
            out.insert(pid);
        }
    }
    out
}

async fn three_running(c: &Cluster) -> Vec<String> {
    let ids = c.client.create_batch(3, &CreateSandboxRequest::default()).await.expect("create");
    eventually(Duration::from_secs(30), "3 running", || async { (c.count_in("running").await? == 3).then_some(()) })
        .await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_dataplane_leaves_sandboxes_running_and_the_next_adopts_them() {
    let mut c = Cluster::split().await;
    let ids = three_running(&c).await;
    let before = keepers(&c.dataplane_dir());
    assert_eq!(before.len(), 3, "one keeper per sandbox");

    let (_old, exited_0) = terminate(c.dataplane.take().expect("dataplane")).await;
    assert!(exited_0, "the dataplane exits 0 on SIGTERM");
    assert_eq!(keepers(&c.dataplane_dir()), before, "its sandboxes keep running");

    c.start_dataplane();
    c.wait_ready().await;
    for id in &ids {
        // Until the new process has registered its agent, exec answers 503.
        let echo = ExecRequest { cmd: vec!["echo".into(), "adopted".into()], ..Default::default() };
        let out = eventually(Duration::from_secs(30), "exec to reach the adopted sandbox", || async {
            c.client.exec(id, &echo).await.ok()
        })
        .await;
        assert_eq!(out.stdout, "adopted\n");
        assert_eq!(c.client.get(id).await.expect("get").state, SandboxState::Running);
    }
    assert_eq!(keepers(&c.dataplane_dir()), before, "the same processes, adopted, not restarted");
    assert_eq!(c.starts().len(), 3, "nothing started twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sandboxes_on_exit_stops_them_and_the_server_records_evicted() {
    let mut c = Cluster::split().await;
    // Restart the dataplane with the flag (the cluster started one without).
    let (_first, _) = terminate(c.dataplane.take().expect("dataplane")).await;
    c.extra_dataplane_args = vec!["--stop-sandboxes-on-exit".into()];
    c.start_dataplane();
    c.wait_ready().await;
    let ids = three_running(&c).await;

    let (_old, exited_0) = terminate(c.dataplane.take().expect("dataplane")).await;
    assert!(exited_0, "the dataplane exits 0 on SIGTERM");
    assert!(keepers(&c.dataplane_dir()).is_empty(), "its sandboxes were stopped");
    for id in &ids {
        let sb = eventually(Duration::from_secs(30), "the stop to be recorded", || async {
            c.client.get(id).await.ok().filter(|sb| sb.state.is_terminal())
        })
        .await;
        assert_eq!(sb.end_reason, Some(EndReason::Evicted), "{sb:?}");
    }
}
