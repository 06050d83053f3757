//! Decision → received latency: for every command a poll delivers, how long
//! after the server's scheduling decision (`decided_at_us`, wall clock) this
//! dataplane had it in hand. Kept in an HdrHistogram (µs, 3 significant
//! digits) and saved to `<data_dir>/received_latency.hdr` about once a second
//! and when the poll loop ends, so `corral bench` can read (and merge) it
//! across any number of hosts without a new RPC.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// The file in the data dir holding the histogram (V2 serialization).
pub const RECEIVED_LATENCY_FILE: &str = "received_latency.hdr";
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct ReceivedLatency {
    path: PathBuf,
    hist: Mutex<Histogram<u64>>,
    dirty: AtomicBool,
}

impl ReceivedLatency {
    /// Continues the histogram a previous run left in `data_dir`, if any.
    pub fn open(data_dir: &Path) -> Arc<Self> {
        let path = data_dir.join(RECEIVED_LATENCY_FILE);
        let hist = load(&path).unwrap_or_else(|| Histogram::new(3).expect("3 significant digits is valid"));
        Arc::new(ReceivedLatency { path, hist: Mutex::new(hist), dirty: AtomicBool::new(false) })
    }

    /// Records `now_us - decided_at_us` for each command (0 when the clocks
    /// disagree the other way; commands without a decision time are skipped).
    pub fn record(&self, decided_at_us: impl Iterator<Item = u64>, now_us: u64) {
        let mut h = self.hist.lock();
        for d in decided_at_us.filter(|d| *d > 0) {
            let _ = h.record(now_us.saturating_sub(d));
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the histogram if it changed since the last save (atomically:
    /// temp file and rename, so a reader never sees half a file).
    pub fn save(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut buf = Vec::new();
        if V2Serializer::new().serialize(&self.hist.lock(), &mut buf).is_err() {
            return;
        }
        let tmp = self.path.with_extension("hdr.tmp");
        if let Err(e) = std::fs::write(&tmp, &buf).and_then(|_| std::fs::rename(&tmp, &self.path)) {
            tracing::warn!(path = %self.path.display(), "cannot save the received-latency histogram: {e}");
        }
    }

    /// Saves about once a second until the returned guard drops, and once more then.
    pub fn flusher(self: &Arc<Self>) -> FlushGuard {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tick.tick().await;
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.save()).await;
            }
        });
        FlushGuard { latency: self.clone(), task }
    }
}

pub struct FlushGuard {
    latency: Arc<ReceivedLatency>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.task.abort();
        self.latency.save();
    }
}

/// Reads a histogram saved by [`ReceivedLatency::save`].
pub fn load(path: &Path) -> Option<Histogram<u64>> {
    let bytes = std::fs::read(path).ok()?;
    let mut h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice()).ok()?;
    h.auto(true);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_saves_on_drop_and_resumes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lat = ReceivedLatency::open(dir.path());
        {
            let _guard = lat.flusher();
            lat.record([1_000, 0, 1_500].into_iter(), 3_000);
        }
        let h = load(&dir.path().join(RECEIVED_LATENCY_FILE)).expect("saved on drop");
        assert_eq!((h.len(), h.min(), h.max()), (2, 1_500, 2_000));
        let again = ReceivedLatency::open(dir.path());
        again.record([2_900].into_iter(), 3_000);
        again.save();
        assert_eq!(load(&dir.path().join(RECEIVED_LATENCY_FILE)).expect("saved").len(), 3);
    }
}
