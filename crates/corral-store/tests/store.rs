//! The same behaviour checks against every backend.

use corral_core::{Command, Host, OutboxEntry, Sandbox, SandboxSpec, SandboxState};
use corral_store::{MemoryStore, RedbStore, Store, Write};

fn spec() -> SandboxSpec {
    SandboxSpec {
        template: "base".into(),
        cpu_millis: 1000,
        memory_mb: 512,
        ttl_s: 60,
        ..Default::default()
    }
}

fn entry(host: &str, seq: u64) -> OutboxEntry {
    OutboxEntry {
        host: host.into(),
        seq,
        command: Command::AddSandbox { sandbox_id: format!("sb-{seq}"), spec: spec() },
        committed_at_ms: 1,
        decided_at_us: 1_000,
    }
}

fn host(id: &str) -> Host {
    Host {
        id: id.into(),
        epoch: 7,
        last_seq: 3,
        acked_seq: 0,
        cpu_millis: 2000,
        memory_mb: 4096,
        templates: vec!["base".into()],
        agent_addr: "127.0.0.1:1".into(),
        registered_at_ms: 5,
        full_syncs: 0,
        max_sandboxes: 0,
    }
}

fn round_trip(store: &dyn Store) {
    let mut sb = Sandbox::new("sb-1".into(), spec(), Some("key".into()), 1000);
    store
        .commit(&[
            Write::PutSandbox(sb.clone()),
            Write::PutHost(host("h1")),
            Write::PutOutbox(entry("h1", 1)),
            Write::PutOutbox(entry("h1", 2)),
            Write::PutOutbox(entry("h1", 3)),
            Write::PutOutbox(entry("h2", 1)),
        ])
        .unwrap();
    sb.state = SandboxState::Enqueued;
    store.commit(&[Write::PutSandbox(sb.clone()), Write::DeleteOutbox { host: "h1".into(), through_seq: 2 }]).unwrap();

    let snap = store.load().unwrap();
    assert_eq!(snap.sandboxes, vec![sb]);
    assert_eq!(snap.hosts, vec![host("h1")]);
    let keys: Vec<_> = snap.outbox.iter().map(|e| (e.host.as_str(), e.seq)).collect();
    assert_eq!(keys, vec![("h1", 3), ("h2", 1)], "only h1's acked prefix is deleted");

    store.commit(&[Write::DeleteSandbox("sb-1".into()), Write::DeleteHost("h1".into())]).unwrap();
    let snap = store.load().unwrap();
    assert!(snap.sandboxes.is_empty() && snap.hosts.is_empty());
}

#[test]
fn memory_store_round_trips() {
    round_trip(&MemoryStore::new());
}

#[test]
fn redb_store_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&RedbStore::open(&dir.path().join("corral.redb")).unwrap());
}

#[test]
fn redb_store_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.commit(&[Write::PutHost(host("h1")), Write::PutOutbox(entry("h1", 1))]).unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.hosts, vec![host("h1")]);
    assert_eq!(snap.outbox, vec![entry("h1", 1)]);
}

#[test]
fn an_empty_batch_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("corral.redb")).unwrap();
    store.commit(&[]).unwrap();
    assert!(store.load().unwrap().sandboxes.is_empty());
}
