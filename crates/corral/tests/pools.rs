//! The server's vacuum, end to end: a real server and two simulated hosts
//! (`corral dataplane --driver sim`, pools and slot bounds as in production,
//! no processes started), each create sent over REST.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, Driver, Proc, API_TOKEN, JOIN_TOKEN};
use corral_client::Client;
use corral_core::api::CreateSandboxRequest;
use corral_core::SandboxState;

/// A simulated host holding at most `max` sandboxes plus pool members.
fn sim_host(c: &Cluster, id: &str, max: u32, templates: &str, pool: &str) -> Proc {
    let dir = c.dir.path().join(format!("dp-{id}"));
    let server = format!("http://127.0.0.1:{}", c.grpc_port);
    let max = max.to_string();
    let args = [
        "dataplane", "--driver", "sim", "--server", &server, "--data-dir", dir.to_str().unwrap(), "--host-id", id,
        "--join-token", JOIN_TOKEN, "--max-sandboxes", &max, "--templates", templates, "--pool", pool,
        "--pool-wait-ms", "0",
    ];
    Proc::spawn(&args, &c.dir.path().join(format!("dp-{id}.log")))
}

/// Ready members of `template` on `host`, as the server last heard.
async fn ready_on(client: &Client, template: &str, host: &str) -> Option<u32> {
    let pools = client.pools().await.ok()?;
    let pool = pools.pools.into_iter().find(|p| p.template == template)?;
    pool.hosts.into_iter().find(|h| h.host == host).map(|h| h.ready)
}

async fn wait_ready_counts(client: &Client, want: [(&str, &str, u32); 2]) {
    eventually(Duration::from_secs(30), &format!("pools to report {want:?}"), || async {
        for (template, host, n) in want {
            if ready_on(client, template, host).await? != n {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn of(template: &str) -> CreateSandboxRequest {
    CreateSandboxRequest { template: Some(template.into()), ..Default::default() }
}

#[tokio::test]
async fn full_hosts_evict_idle_members_cheapest_first_and_never_an_allocated_one() {
    let mut c = Cluster::prepare(Driver::Process);
    c.client = Client::new(&c.url(), Some(API_TOKEN.into())).expect("client");
    c.start_server();
    // "a": 3 slots; pool p at its min of 2 (the last class to evict).
    // "b": 3 slots; pool q with min 0, buffer 2: its members are above min.
    let _a = sim_host(&c, "a", 3, "p,r", "p=2:2:0");
    let _b = sim_host(&c, "b", 3, "q,r", "q=0:2:2");
    wait_ready_counts(&c.client, [("p", "a", 2), ("q", "b", 2)]).await;

    // A claim of p on a; a refills to 2 ready and is full (1 + 2 = 3).
    let claimed = c.client.create(&of("p"), true).await.unwrap();
    assert_eq!((claimed.host.as_deref(), claimed.start_path.as_deref()), (Some("a"), Some("warm")));
    wait_ready_counts(&c.client, [("p", "a", 2), ("q", "b", 2)]).await;

    // Cold creates of r (no pool anywhere). Each step waits for the hosts'
    // reports so every decision sees the fleet as it is.
    let steps = [
        ("b", [("p", "a", 2), ("q", "b", 2)]), // b's free slot: nothing evicted
        ("b", [("p", "a", 2), ("q", "b", 1)]), // full everywhere: b's members are above min
        ("b", [("p", "a", 2), ("q", "b", 0)]),
        ("a", [("p", "a", 1), ("q", "b", 0)]), // only a's protected members are left
        ("a", [("p", "a", 0), ("q", "b", 0)]),
    ];
    for (i, (host, after)) in steps.into_iter().enumerate() {
        let sb = c.client.create(&of("r"), true).await.unwrap();
        assert_eq!(sb.state, SandboxState::Running, "step {i}: {sb:?}");
        assert_eq!((sb.host.as_deref(), sb.start_path.as_deref()), (Some(host), Some("cold")), "step {i}");
        wait_ready_counts(&c.client, after).await;
    }

    // Nothing idle is left: the next create waits for capacity rather than
    // touching the allocated sandbox.
    let waiting = c.client.create(&of("r"), false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.client.get(&waiting.id).await.unwrap().state, SandboxState::Pending);
    assert_eq!(c.client.get(&claimed.id).await.unwrap().state, SandboxState::Running, "the claimed sandbox lives on");
}
