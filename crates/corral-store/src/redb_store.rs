//! The embedded default: one redb file, ACID transactions, fsync on commit.
//!
//! Records are JSON (debuggable with any redb viewer, and fast enough: the
//! fsync, not the encoding, bounds a commit). Outbox keys are `(host, seq)` so
//! acknowledging a prefix is one range delete.
//!
//! After an I/O error (a full disk, a failing device) redb refuses every later
//! operation on the open database. The store then drops it and reopens the
//! file at the next call, which recovers it to the last committed transaction:
//! a failed commit costs that batch only, and once the fault clears the store
//! works again without a restart.

use std::path::{Path, PathBuf};

use corral_core::{Host, OutboxEntry, Sandbox};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::{Snapshot, Store, StoreError, Write};

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");

pub struct RedbStore {
    path: PathBuf,
    /// `None` after an I/O error, until reopened. Calls are serialised by this
    /// lock; the server commits from one writer anyway.
    db: Mutex<Option<Database>>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn encode(v: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        Ok(RedbStore {
            path: path.to_path_buf(),
            db: Mutex::new(Some(db)),
        })
    }

    /// Runs `f` on the open database, reopening it first if an earlier I/O
    /// error closed it; an I/O error inside `f` closes it again.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.db.lock();
        let db = match slot.take() {
            Some(db) => db,
            None => {
                let db = open_db(&self.path)?;
                tracing::warn!(path = %self.path.display(), "store reopened after an I/O error");
                db
            }
        };
        let result = f(&db);
        if !matches!(result, Err(StoreError::Io(_))) {
            *slot = Some(db);
        }
        result
    }
}

/// Opens (recovering if needed) or creates the file and its tables.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(io)?;
    let txn = db.begin_write().map_err(io)?;
    {
        txn.open_table(SANDBOXES).map_err(io)?;
        txn.open_table(HOSTS).map_err(io)?;
        txn.open_table(OUTBOX).map_err(io)?;
        txn.open_table(POOLS).map_err(io)?;
    }
    txn.commit().map_err(io)?;
    Ok(db)
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.with_db(load_all)
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.with_db(|db| commit_all(db, writes))
    }
}

fn load_all(db: &Database) -> Result<Snapshot, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let mut snap = Snapshot::default();
    for row in txn.open_table(SANDBOXES).map_err(io)?.iter().map_err(io)? {
        let (_, v) = row.map_err(io)?;
        snap.sandboxes.push(decode::<Sandbox>("sandboxes", v.value())?);
    }
    for row in txn.open_table(HOSTS).map_err(io)?.iter().map_err(io)? {
        let (_, v) = row.map_err(io)?;
        snap.hosts.push(decode::<Host>("hosts", v.value())?);
    }
    for row in txn.open_table(OUTBOX).map_err(io)?.iter().map_err(io)? {
        let (_, v) = row.map_err(io)?;
        snap.outbox.push(decode::<OutboxEntry>("outbox", v.value())?);
    }
    for row in txn.open_table(POOLS).map_err(io)?.iter().map_err(io)? {
        let (_, v) = row.map_err(io)?;
        snap.pools.push(decode("pools", v.value())?);
    }
    Ok(snap)
}

fn commit_all(db: &Database, writes: &[Write]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(io)?;
    {
        let mut sandboxes = txn.open_table(SANDBOXES).map_err(io)?;
        let mut hosts = txn.open_table(HOSTS).map_err(io)?;
        let mut outbox = txn.open_table(OUTBOX).map_err(io)?;
        let mut pools = txn.open_table(POOLS).map_err(io)?;
        for w in writes {
            match w {
                Write::PutSandbox(sb) => {
                    sandboxes.insert(sb.id.as_str(), encode(sb)?.as_slice()).map_err(io)?;
                }
                Write::DeleteSandbox(id) => {
                    sandboxes.remove(id.as_str()).map_err(io)?;
                }
                Write::PutHost(h) => {
                    hosts.insert(h.id.as_str(), encode(h)?.as_slice()).map_err(io)?;
                }
                Write::DeleteHost(id) => {
                    hosts.remove(id.as_str()).map_err(io)?;
                }
                Write::PutOutbox(e) => {
                    outbox
                        .insert((e.host.as_str(), e.seq), encode(e)?.as_slice())
                        .map_err(io)?;
                }
                Write::DeleteOutbox { host, through_seq } => {
                    outbox
                        .retain_in((host.as_str(), 0)..=(host.as_str(), *through_seq), |_, _| false)
                        .map_err(io)?;
                }
                Write::PutPool(p) => {
                    pools.insert(p.template.as_str(), encode(p)?.as_slice()).map_err(io)?;
                }
            }
        }
    }
    // Dropping `txn` on an early return above aborts it: nothing partial lands.
    txn.commit().map_err(io)
}
