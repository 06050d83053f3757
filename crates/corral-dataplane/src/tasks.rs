//! A set of background tasks that dies with the dataplane: if `run` is
//! dropped (or returns), every sandbox task it spawned is aborted too, so a
//! restarted dataplane in the same process never races a ghost of the last.

use std::future::Future;

use parking_lot::Mutex;
use tokio::task::JoinSet;

#[derive(Default)]
pub struct TaskSet {
    set: Mutex<JoinSet<()>>,
}

impl TaskSet {
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.set.lock();
        // Reap finished tasks so the set does not grow with history.
        while set.try_join_next().is_some() {}
        set.spawn(fut);
    }

    pub fn abort_all(&self) {
        self.set.lock().abort_all();
    }
}

/// Aborts a task set when dropped.
pub struct AbortOnDrop<'a>(pub &'a TaskSet);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        self.0.abort_all();
    }
}
