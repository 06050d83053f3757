//! The durable cursor: `(epoch, applied_seq)` plus one record per known
//! sandbox, in a small redb database at `<data_dir>/dataplane.redb`.
//!
//! A batch of commands is persisted in one durable transaction (cursor and
//! every new or changed record together) *before* any start is kicked off, so
//! after a crash the dataplane knows exactly which commands it took on and
//! resumes from its cursor instead of needing a full sync. Status changes that
//! follow (exited, stopped, forgotten) are written without an fsync: losing
//! one only makes the next process re-report an event, which the server
//! treats idempotently.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::pool::PoolConf;
use crate::record::Record;
use crate::DataplaneError;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
/// Warm-pool settings from the server: template → JSON `PoolConf`.
const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");

/// Where the dataplane is in its host's command stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The epoch commands were applied under (0: never registered).
    pub epoch: u64,
    /// The highest seq applied.
    pub seq: u64,
}

/// One atomic change to the database.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    pub cursor: Option<Cursor>,
    pub upsert: Vec<(String, Record)>,
    pub delete: Vec<String>,
    /// Pool settings to write (an empty one deletes its template's).
    pub pools: Vec<PoolConf>,
    /// Drop every stored pool setting first (a full sync lists all of them).
    pub pools_replace: bool,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.cursor.is_none()
            && self.upsert.is_empty()
            && self.delete.is_empty()
            && self.pools.is_empty()
            && !self.pools_replace
    }
}

pub struct CursorStore {
    db: Database,
}

impl CursorStore {
    /// Opens (or creates) the database. A previous dataplane in this same
    /// process may still be letting go of the file, so a lock conflict is
    /// retried briefly before giving up.
    pub fn open(path: &Path) -> Result<Self, DataplaneError> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match Database::create(path) {
                Ok(db) => return Self::init(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn init(db: Database) -> Result<Self, DataplaneError> {
        let txn = db.begin_write()?;
        txn.open_table(META)?;
        txn.open_table(SANDBOXES)?;
        txn.open_table(POOLS)?;
        txn.commit()?;
        Ok(CursorStore { db })
    }

    /// The persisted cursor and every record.
    pub fn load(&self) -> Result<(Cursor, BTreeMap<String, Record>), DataplaneError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |k: &str| -> Result<u64, DataplaneError> {
            Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0))
        };
        let cursor = Cursor {
            epoch: get("epoch")?,
            seq: get("applied_seq")?,
        };
        let table = txn.open_table(SANDBOXES)?;
        let mut records = BTreeMap::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let id = k.value().to_string();
            let record = serde_json::from_slice(v.value()).map_err(|source| {
                DataplaneError::CorruptRecord {
                    id: id.clone(),
                    source,
                }
            })?;
            records.insert(id, record);
        }
        Ok((cursor, records))
    }

    /// The persisted pool settings.
    pub fn load_pools(&self) -> Result<Vec<PoolConf>, DataplaneError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POOLS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            match serde_json::from_slice::<PoolConf>(v.value()) {
                Ok(c) => out.push(c),
                Err(e) => tracing::warn!(template = k.value(), "ignoring a bad stored pool setting: {e}"),
            }
        }
        Ok(out)
    }

    /// Applies `change` in one transaction, fsynced when `durable`.
    pub fn commit(&self, change: &Change, durable: bool) -> Result<(), DataplaneError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            if let Some(c) = change.cursor {
                let mut meta = txn.open_table(META)?;
                meta.insert("epoch", c.epoch)?;
                meta.insert("applied_seq", c.seq)?;
            }
            let mut table = txn.open_table(SANDBOXES)?;
            for (id, record) in &change.upsert {
                let bytes =
                    serde_json::to_vec(record).map_err(|source| DataplaneError::CorruptRecord {
                        id: id.clone(),
                        source,
                    })?;
                table.insert(id.as_str(), bytes.as_slice())?;
            }
            for id in &change.delete {
                table.remove(id.as_str())?;
            }
            if change.pools_replace || !change.pools.is_empty() {
                let mut pools = txn.open_table(POOLS)?;
                if change.pools_replace {
                    pools.retain(|_, _| false)?;
                }
                for c in &change.pools {
                    if c.is_empty() {
                        pools.remove(c.template.as_str())?;
                    } else {
                        let bytes = serde_json::to_vec(c).map_err(|source| DataplaneError::CorruptRecord {
                            id: format!("pool {}", c.template),
                            source,
                        })?;
                        pools.insert(c.template.as_str(), bytes.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use corral_core::SandboxSpec;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            template: "base".into(),
            cpu_millis: 100,
            memory_mb: 64,
            ttl_s: 60,
            ..Default::default()
        }
    }

    #[test]
    fn cursor_and_records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dp.redb");
        {
            let store = CursorStore::open(&path).unwrap();
            assert_eq!(store.load().unwrap().0, Cursor::default());
            let change = Change {
                cursor: Some(Cursor { epoch: 3, seq: 9 }),
                upsert: vec![
                    (
                        "a".into(),
                        Record {
                            spec: spec(),
                            status: Status::Alive,
                        },
                    ),
                    (
                        "b".into(),
                        Record {
                            spec: spec(),
                            status: Status::Alive,
                        },
                    ),
                ],
                delete: vec![],
                pools: vec![PoolConf { template: "base".into(), min: 3, max: 5, buffer: 1, prewarm: Vec::new() }],
                pools_replace: false,
            };
            store.commit(&change, true).unwrap();
            let change = Change {
                delete: vec!["b".into()],
                ..Default::default()
            };
            store.commit(&change, false).unwrap();
        }
        let store = CursorStore::open(&path).unwrap();
        let (cursor, records) = store.load().unwrap();
        assert_eq!(cursor, Cursor { epoch: 3, seq: 9 });
        assert_eq!(records.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(store.load_pools().unwrap(), vec![PoolConf { template: "base".into(), min: 3, max: 5, buffer: 1, prewarm: Vec::new() }]);
        let change = Change { pools_replace: true, ..Default::default() };
        store.commit(&change, false).unwrap();
        assert!(store.load_pools().unwrap().is_empty());
    }
}
