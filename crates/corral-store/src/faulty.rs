//! A store wrapper whose commits can be made to fail (or wait) on demand, for
//! testing how the server survives a failing or slow disk (I/O errors, a full
//! disk) without needing one.
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
    /// While true, commits wait (a slow disk, or a commit caught mid-flight).
    paused: parking_lot::Mutex<bool>,
    resumed: parking_lot::Condvar,
    /// Commits waiting at the pause right now.
    waiting: AtomicU64,
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

    /// Holds every commit until [`Faults::resume`].
    pub fn pause(&self) {
        *self.paused.lock() = true;
    }

    pub fn resume(&self) {
        *self.paused.lock() = false;
        self.resumed.notify_all();
    }

    /// How many commits are held by [`Faults::pause`] right now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    fn wait_while_paused(&self) {
        let mut paused = self.paused.lock();
        if *paused {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *paused {
                self.resumed.wait(&mut paused);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
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
        self.faults.wait_while_paused();
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

    #[test]
    fn a_paused_commit_waits_for_resume_then_lands() {
        let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let faults = store.faults();
        faults.pause();
        let s2 = store.clone();
        let commit = std::thread::spawn(move || s2.commit(&[pool("late")]));
        while faults.waiting() == 0 {
            std::thread::yield_now();
        }
        assert!(store.load().unwrap().pools.is_empty(), "held, not yet written");
        faults.resume();
        commit.join().unwrap().unwrap();
        assert_eq!(store.load().unwrap().pools.len(), 1);
        assert_eq!(faults.waiting(), 0);
    }
}
