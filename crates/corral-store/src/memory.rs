//! An in-memory store: same semantics as the durable one, minus durability.

use std::collections::BTreeMap;

use corral_core::{Host, OutboxEntry, Sandbox};
use parking_lot::Mutex;

use crate::{Snapshot, Store, StoreError, Write};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Tables>,
}

#[derive(Default, Clone)]
struct Tables {
    sandboxes: BTreeMap<String, Sandbox>,
    hosts: BTreeMap<String, Host>,
    outbox: BTreeMap<(String, u64), OutboxEntry>,
    pools: BTreeMap<String, corral_core::pool::PoolSpec>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let t = self.inner.lock();
        Ok(Snapshot {
            sandboxes: t.sandboxes.values().cloned().collect(),
            hosts: t.hosts.values().cloned().collect(),
            outbox: t.outbox.values().cloned().collect(),
            pools: t.pools.values().cloned().collect(),
        })
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut t = self.inner.lock();
        for w in writes {
            match w {
                Write::PutSandbox(sb) => {
                    t.sandboxes.insert(sb.id.clone(), sb.clone());
                }
                Write::DeleteSandbox(id) => {
                    t.sandboxes.remove(id);
                }
                Write::PutHost(h) => {
                    t.hosts.insert(h.id.clone(), h.clone());
                }
                Write::DeleteHost(id) => {
                    t.hosts.remove(id);
                }
                Write::PutOutbox(e) => {
                    t.outbox.insert((e.host.clone(), e.seq), e.clone());
                }
                Write::DeleteOutbox { host, through_seq } => {
                    t.outbox.retain(|(h, seq), _| h != host || seq > through_seq);
                }
                Write::PutPool(p) => {
                    t.pools.insert(p.template.clone(), p.clone());
                }
            }
        }
        Ok(())
    }
}
