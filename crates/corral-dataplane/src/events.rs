//! The bounded event buffer between sandbox lifecycles and the heartbeat.
//!
//! An event leaves the buffer only when the server acks its seq, so a lost
//! heartbeat just means it is sent again. When the buffer is full, reporters
//! wait for room (backpressure) rather than dropping anything; the wait is
//! FIFO because tokio's semaphore is fair.

use std::collections::VecDeque;

use corral_proto::v1::{EventKind, SandboxEvent};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

/// How the dataplane words a start refused because the host is full.
pub const CAPACITY_REFUSAL: &str = "host at capacity";

pub struct EventBuffer {
    inner: Mutex<Inner>,
    /// One permit per free slot.
    room: Semaphore,
    /// Signalled whenever an event is pushed.
    pushed: Notify,
}

struct Inner {
    events: VecDeque<SandboxEvent>,
    next_seq: u64,
}

/// An event before it gets its seq.
#[derive(Debug, Clone)]
pub struct Event {
    pub sandbox_id: String,
    pub kind: EventKind,
    pub end_reason: String,
    pub message: String,
    pub start_path: String,
}

impl Event {
    pub fn started(id: &str, start_path: &str) -> Self {
        Event::new(id, EventKind::Started, "", "").with_start_path(start_path)
    }

    /// A start that failed; a host with no room left says `no_capacity`, so
    /// the server can place the sandbox elsewhere.
    pub fn start_failed(id: &str, message: &str) -> Self {
        let reason = if message.starts_with(CAPACITY_REFUSAL) { "no_capacity" } else { "start_failed" };
        Event::new(id, EventKind::StartFailed, reason, message)
    }

    pub fn exited(id: &str, message: &str) -> Self {
        Event::new(id, EventKind::Exited, "exited", message)
    }

    pub fn oom_killed(id: &str, message: &str) -> Self {
        Event::new(id, EventKind::Exited, "oom_killed", message)
    }

    pub fn stopped(id: &str, reason: &str) -> Self {
        Event::new(id, EventKind::Stopped, reason, "")
    }

    fn new(id: &str, kind: EventKind, end_reason: &str, message: &str) -> Self {
        Event {
            sandbox_id: id.to_string(),
            kind,
            end_reason: end_reason.to_string(),
            message: message.to_string(),
            start_path: String::new(),
        }
    }

    fn with_start_path(mut self, path: &str) -> Self {
        self.start_path = path.to_string();
        self
    }
}

impl EventBuffer {
    pub fn new(capacity: usize) -> Self {
        EventBuffer {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 1,
            }),
            room: Semaphore::new(capacity),
            pushed: Notify::new(),
        }
    }

    /// Appends an event, waiting while the buffer is full. Returns its seq.
    pub async fn push(&self, event: Event) -> u64 {
        // Only a closed semaphore errs, and this one is never closed.
        if let Ok(permit) = self.room.acquire().await {
            permit.forget();
        }
        let seq = {
            let mut inner = self.inner.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.events.push_back(SandboxEvent {
                seq,
                sandbox_id: event.sandbox_id,
                kind: event.kind as i32,
                end_reason: event.end_reason,
                message: event.message,
                at_ms: corral_core::time::now_ms(),
                start_path: event.start_path,
            });
            seq
        };
        self.pushed.notify_one();
        seq
    }

    /// Up to `max` buffered events with a seq above `after`, oldest first.
    pub fn pending_after(&self, after: u64, max: usize) -> Vec<SandboxEvent> {
        let inner = self.inner.lock();
        inner
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(max)
            .cloned()
            .collect()
    }

    /// Up to `max` buffered events, oldest first (un-acked ones are resent).
    pub fn oldest(&self, max: usize) -> Vec<SandboxEvent> {
        self.pending_after(0, max)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every event up to `seq` and returns them, freeing their slots.
    pub fn ack(&self, seq: u64) -> Vec<SandboxEvent> {
        let acked: Vec<SandboxEvent> = {
            let mut inner = self.inner.lock();
            let n = inner.events.iter().take_while(|e| e.seq <= seq).count();
            inner.events.drain(..n).collect()
        };
        self.room.add_permits(acked.len());
        acked
    }

    /// Resolves at the next push (or at once if one happened since the last wait).
    pub async fn wait_pushed(&self) {
        self.pushed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn seqs_start_at_one_and_acks_free_room() {
        let buf = EventBuffer::new(2);
        assert_eq!(buf.push(Event::started("a", "cold")).await, 1);
        assert_eq!(buf.push(Event::exited("a", "x")).await, 2);
        assert_eq!(buf.pending_after(1, 10).len(), 1);
        let acked = buf.ack(1);
        assert_eq!(acked.len(), 1);
        assert_eq!(buf.oldest(10)[0].seq, 2);
        assert_eq!(buf.push(Event::stopped("b", "deleted")).await, 3);
        assert_eq!(buf.len(), 2);
    }

    #[tokio::test]
    async fn a_full_buffer_blocks_until_acked_and_loses_nothing() {
        let buf = Arc::new(EventBuffer::new(1));
        buf.push(Event::started("a", "cold")).await;
        let b2 = buf.clone();
        let blocked = tokio::spawn(async move { b2.push(Event::started("b", "cold")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!blocked.is_finished(), "push into a full buffer must wait");
        buf.ack(1);
        assert_eq!(blocked.await.unwrap(), 2);
        assert_eq!(
            buf.oldest(10)
                .iter()
                .map(|e| e.sandbox_id.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
    }
}
