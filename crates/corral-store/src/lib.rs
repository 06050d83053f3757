//! Corral's durable store.
//!
//! The server keeps its whole working state in memory and treats the store as
//! the durable record of it: [`Store::load`] rebuilds the state at start-up and
//! [`Store::commit`] makes one batch of [`Write`]s durable **atomically**. A
//! batch is typically many API decisions gathered by the server's group-commit
//! loop, so one fsync covers many creates, and a scheduling decision always
//! lands in the same batch as its outbox command.
//!
//! Backends: [`RedbStore`] (embedded, one file, the default) and
//! [`MemoryStore`] (no durability; for tests and simulations); [`FaultyStore`]
//! wraps either and fails commits on demand, for fault tests. A PostgreSQL
//! backend for several servers would implement the same trait.

mod faulty;
mod memory;
mod redb_store;
mod write;

pub use faulty::{Faults, FaultyStore};
pub use memory::MemoryStore;
pub use redb_store::RedbStore;
pub use write::{Snapshot, Write};

/// Why the store could not load or commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("injected fault: {0}")]
    Injected(String),
}

/// The durable record of the server's state.
pub trait Store: Send + Sync + 'static {
    /// Everything stored, for rebuilding the in-memory state.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Applies `writes` in order, all or nothing, and returns once they are
    /// durable. On error nothing of the batch is visible to a later `load`.
    fn commit(&self, writes: &[Write]) -> Result<(), StoreError>;
}
