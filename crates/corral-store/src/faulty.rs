//! A store wrapper whose commits can be made to fail on demand, for testing
//! how the server survives a failing disk (I/O errors, a full disk) without
//! needing one.
//!
//! A failed commit is refused **before** the inner store sees it, exactly as
//! an atomic backend behaves when its transaction aborts: nothing of the
//! batch lands. Loads are never failed (a store that cannot load stops the
//! server at start, which is a different test).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Snapshot, Store, StoreError, Write};

/// Wraps any [`Store`]; see [`Faults`] for the switches.
pub struct FaultyStore<S: Store> {
    inner: Arc<S>,
    faults: Arc<Faults>,
}

/// Decides from a batch's writes whether its commit fails.
type Rule = Box<dyn Fn(&[Write]) -> bool + Send + Sync>;

/// The switches of a [`FaultyStore`], shareable with the test driving it.
#[derive(Default)]
pub struct Faults {
    /// Every commit fails while this is set.
    failing: AtomicBool,
    /// Commits whose writes match fail (a fault aimed at one kind of change).
    rule: parking_lot::Mutex<Option<Rule>>,
    /// The next this many commits fail (then commits succeed again).
    fail_next: AtomicU64,
    /// Commits refused so far.
    refused: AtomicU64,
    /// Commits passed to the inner store so far.
    passed: AtomicU64,
}

impl Faults {
    /// Makes every commit fail (`true`) until called again with `false`.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every commit whose writes `rule` matches fail, until [`Faults::clear`].
    pub fn fail_when(&self, rule: impl Fn(&[Write]) -> bool + Send + Sync + 'static) {
        *self.rule.lock() = Some(Box::new(rule));
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.set_failing(false);
        self.fail_next.store(0, Ordering::SeqCst);
        *self.rule.lock() = None;
    }

    /// Makes the next `n` commits fail.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// How many commits were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// How many commits reached the inner store.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }

    /// Whether this commit is to fail; consumes one of `fail_next`.
    fn take(&self, writes: &[Write]) -> bool {
        if self.failing.load(Ordering::SeqCst) || self.rule.lock().as_ref().is_some_and(|rule| rule(writes)) {
            return true;
        }
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`; no fault is armed.
    pub fn new(inner: Arc<S>) -> Self {
        FaultyStore {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }

    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    pub fn inner(&self) -> Arc<S> {
        self.inner.clone()
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if self.faults.take(writes) {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Injected("No space left on device (os error 28)".into()));
        }
        self.faults.passed.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn pool(t: &str) -> Write {
        Write::PutPool(corral_core::pool::PoolSpec {
            template: t.into(),
            min: 0,
            max: 0,
            buffer: 0,
            prewarm: vec![],
        })
    }

    #[test]
    fn armed_commits_fail_and_write_nothing_then_commits_pass_again() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        let faults = store.faults();
        faults.fail_next(2);
        assert!(matches!(store.commit(&[pool("a")]), Err(StoreError::Injected(_))));
        assert!(matches!(store.commit(&[pool("b")]), Err(StoreError::Injected(_))));
        store.commit(&[pool("c")]).unwrap();
        faults.set_failing(true);
        assert!(store.commit(&[pool("d")]).is_err());
        faults.set_failing(false);
        store.commit(&[pool("e")]).unwrap();
        let names: Vec<_> = store.load().unwrap().pools.into_iter().map(|p| p.template).collect();
        assert_eq!(names, vec!["c", "e"]);
        assert_eq!((faults.refused(), faults.passed()), (3, 2));
    }

    #[test]
    fn a_rule_fails_only_the_commits_it_matches() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        let faults = store.faults();
        faults.fail_when(|writes| writes.iter().any(|w| matches!(w, Write::PutPool(p) if p.template == "bad")));
        assert!(store.commit(&[pool("ok"), pool("bad")]).is_err());
        store.commit(&[pool("ok")]).unwrap();
        faults.clear();
        store.commit(&[pool("bad")]).unwrap();
        let names: Vec<_> = store.load().unwrap().pools.into_iter().map(|p| p.template).collect();
        assert_eq!(names, vec!["bad", "ok"]);
    }
}
