//! Durable outbox throughput: how many (sandbox record + outbox row) pairs per
//! second the redb backend commits, fsync'd, at several batch sizes.
//!
//! `cargo bench -p corral-store` prints one line per batch size.

use std::time::Instant;

use corral_core::{Command, OutboxEntry, Sandbox, SandboxSpec, SandboxState};
use corral_store::{RedbStore, Store, Write};

fn main() {
    let dir = std::env::temp_dir().join(format!("corral-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = SandboxSpec {
        template: "base".into(),
        cpu_millis: 1000,
        memory_mb: 512,
        ttl_s: 900,
        ..Default::default()
    };
    println!("{:>8} {:>10} {:>14} {:>12}", "batch", "rows", "rows/s", "commit p50");
    for batch in [1usize, 16, 128, 1024] {
        let path = dir.join(format!("bench-{batch}.redb"));
        let store = RedbStore::open(&path).expect("open");
        let total = (batch * 40).clamp(200, 40_960);
        let mut seq = 0u64;
        let mut commits = Vec::new();
        let start = Instant::now();
        while (seq as usize) < total {
            let mut writes = Vec::with_capacity(batch * 2);
            for _ in 0..batch {
                seq += 1;
                let id = format!("sb-{seq:028x}");
                let mut sb = Sandbox::new(id.clone(), spec.clone(), None, 1);
                sb.state = SandboxState::Enqueued;
                sb.host = Some("host-1".into());
                writes.push(Write::PutSandbox(sb));
                writes.push(Write::PutOutbox(OutboxEntry {
                    host: "host-1".into(),
                    seq,
                    command: Command::AddSandbox { sandbox_id: id, spec: spec.clone() },
                    committed_at_ms: 1,
                    decided_at_us: 1_000,
                }));
            }
            let t = Instant::now();
            store.commit(&writes).expect("commit");
            commits.push(t.elapsed());
        }
        let secs = start.elapsed().as_secs_f64();
        commits.sort();
        let p50 = commits[commits.len() / 2];
        println!("{batch:>8} {seq:>10} {:>14.0} {:>10.2}ms", seq as f64 / secs, p50.as_secs_f64() * 1e3);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
