//! The `nat` network mode through `corral up`: the REST field, the host's
//! free network slots in `GET /v1/hosts`, the CLI flag, and cleanup.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::{eventually, Cluster, Driver, BIN};
use corral_client::ClientError;
use corral_core::api::{CreateSandboxRequest, ExecRequest};
use corral_core::{EndReason, NetworkMode, SandboxState};

/// Removes the cluster's veths and nft table after the cluster itself (its
/// Drop knows nothing of the nat flags). Declared before the cluster, so
/// dropped after it.
struct NatCleanup(corral_runtime::RuntimeConfig);

impl Drop for NatCleanup {
    fn drop(&mut self) {
        corral_runtime::force_cleanup(&self.0);
    }
}

/// A native `corral up` with the nat mode on a /28 (4 slots) of its own:
/// range, veth prefix and table are derived from the cluster's API port,
/// so parallel tests never share them. Forwarding is left alone.
async fn nat_cluster() -> Option<(NatCleanup, Cluster)> {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/usr/sbin/nft").exists() {
        eprintln!("SKIP: the nat mode needs root and nftables");
        return None;
    }
    let mut c = Cluster::prepare(Driver::Native);
    let port = u32::from(c.api_port);
    let subnet = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 225, 0, 0)) + port * 16);
    let (prefix, table) = (format!("cn{port}-"), format!("corral_e2e_{port}"));
    c.extra_up_args = [
        "--nat-subnet",
        &format!("{subnet}/28"),
        "--nat-veth-prefix",
        &prefix,
        "--nat-table",
        &table,
        "--nat-forwarding",
        "false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rc = corral_runtime::RuntimeConfig::new(c.runtime_dir().join("state"));
    rc.cgroup_parent = c.cgroup_parent();
    let mut nat = corral_runtime::NatConfig::new(format!("{subnet}/28").parse().unwrap());
    nat.veth_prefix = prefix;
    nat.nft_table = table;
    rc.nat = Some(nat);
    let guard = NatCleanup(rc);
    c.start_up().await;
    Some((guard, c))
}

async fn free_net_slots(c: &Cluster) -> Option<u64> {
    let hosts = c.client.hosts().await.ok()?;
    hosts.hosts.iter().find(|h| h.host.id == "local").map(|h| h.free_net_slots)
}

async fn wait_slots(c: &Cluster, n: u64) {
    eventually(Duration::from_secs(20), &format!("{n} free net slots"), || async {
        (free_net_slots(c).await == Some(n)).then_some(())
    })
    .await
}

fn links_with_prefix(prefix: &str) -> usize {
    std::fs::read_dir("/sys/class/net")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_nat_sandbox_takes_a_host_network_slot_and_gives_it_back() {
    let Some((guard, c)) = nat_cluster().await else { return };
    let prefix = guard.0.nat.as_ref().unwrap().veth_prefix.clone();
    wait_slots(&c, 4).await;

    let req = CreateSandboxRequest { network: Some("nat".into()), ..Default::default() };
    let sb = c.client.create(&req, true).await.unwrap();
    assert_eq!(sb.state, SandboxState::Running, "{}", c.logs());
    assert_eq!(c.client.get(&sb.id).await.unwrap().spec.network, NetworkMode::Nat);
    wait_slots(&c, 3).await;
    assert_eq!(links_with_prefix(&prefix), 1);
    let ls = ExecRequest { cmd: vec!["ls".into(), "/sys/class/net".into()], ..Default::default() };
    let out = c.client.exec(&sb.id, &ls).await.unwrap();
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);

    // An isolated one next to it takes no slot and has loopback only.
    let iso = c.client.create(&CreateSandboxRequest::default(), true).await.unwrap();
    assert_eq!(iso.spec.network, NetworkMode::Isolated);
    assert_eq!(c.client.exec(&iso.id, &ls).await.unwrap().stdout.trim(), "lo");
    assert_eq!(free_net_slots(&c).await, Some(3));

    c.client.delete(&sb.id).await.unwrap();
    let done = eventually(Duration::from_secs(20), "the nat sandbox to end", || async {
        c.client.get(&sb.id).await.ok().filter(|s| s.state == SandboxState::Terminated)
    })
    .await;
    assert_eq!(done.end_reason, Some(EndReason::Deleted));
    wait_slots(&c, 4).await;
    // The pair goes with the sandbox's network namespace (torn down by the kernel).
    eventually(Duration::from_secs(20), "no veth left", || async { (links_with_prefix(&prefix) == 0).then_some(()) }).await;
}

#[tokio::test]
async fn the_cli_creates_nat_sandboxes_and_bad_modes_are_refused() {
    let Some((_guard, c)) = nat_cluster().await else { return };
    let before = c.client.list(&Default::default()).await.unwrap().len();
    let bad = CreateSandboxRequest { network: Some("bridge".into()), ..Default::default() };
    match c.client.create(&bad, false).await.unwrap_err() {
        ClientError::Api { status, code, message } => {
            assert_eq!((status, code.as_str()), (400, "invalid_request"));
            assert_eq!(message, "network must be \"isolated\" or \"nat\", got \"bridge\"");
        }
        other => panic!("{other}"),
    }
    assert_eq!(c.client.list(&Default::default()).await.unwrap().len(), before, "a refused create writes nothing");

    let out = Command::new(BIN)
        .args(["sandbox", "create", "--wait", "--network", "nat"])
        .env("CORRAL_URL", c.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let get = Command::new(BIN).args(["sandbox", "get", &id]).env("CORRAL_URL", c.url()).output().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(shown["network"], "nat");
}

#[tokio::test]
async fn a_restarted_up_adopts_nat_sandboxes_with_their_slots_and_drops_the_table_when_none_is_left() {
    let Some((guard, mut c)) = nat_cluster().await else { return };
    let nat = guard.0.nat.clone().unwrap();
    let req = CreateSandboxRequest { network: Some("nat".into()), ..Default::default() };
    let sb = c.client.create(&req, true).await.unwrap();
    assert_eq!(sb.state, SandboxState::Running, "{}", c.logs());
    wait_slots(&c, 3).await;

    // A crash: nothing is torn down; the next process adopts the sandbox.
    c.server.as_mut().unwrap().kill9();
    Cluster::restart_up(&mut c).await;
    wait_slots(&c, 3).await;
    let ls = ExecRequest { cmd: vec!["ls".into(), "/sys/class/net".into()], ..Default::default() };
    assert_eq!(c.client.exec(&sb.id, &ls).await.unwrap().stdout.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);
    // A second one never gets the adopted one's slot (adoption reserved it).
    let second = c.client.create(&req, true).await.unwrap();
    assert_eq!(second.state, SandboxState::Running, "{}", c.logs());
    wait_slots(&c, 2).await;
    assert_eq!(links_with_prefix(&nat.veth_prefix), 2);

    // A clean shutdown keeps the table while nat sandboxes live on.
    let table_listed = || {
        let out = Command::new("nft").args(["list", "tables"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == format!("table inet {}", nat.nft_table))
    };
    assert!(c.server.as_mut().unwrap().terminate());
    assert!(table_listed(), "live nat sandboxes keep their way out");
    Cluster::restart_up(&mut c).await;
    for id in [&sb.id, &second.id] {
        c.client.delete(id).await.unwrap();
    }
    wait_slots(&c, 4).await;
    eventually(Duration::from_secs(20), "no veth left", || async { (links_with_prefix(&nat.veth_prefix) == 0).then_some(()) }).await;
    assert!(c.server.as_mut().unwrap().terminate());
    assert!(!table_listed(), "with no nat sandbox left the table goes at shutdown");
}
