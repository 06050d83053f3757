//! The heartbeat: liveness, usage, and the event buffer's way to the server.
//!
//! Events go out as soon as there are new ones (whatever piles up while a
//! call is in flight rides the next call), otherwise once per interval. Every
//! call resends the oldest un-acked events, so a lost reply loses nothing;
//! events leave the buffer only up to the acked seq.

use std::sync::Arc;

use corral_proto::v1::{EventKind, HeartbeatRequest, SandboxEvent, Usage};

use crate::backoff::Backoff;
use crate::link::Link;
use crate::runtime::Runtime;
use crate::usage::Sampler;

/// Events per call at most.
pub const MAX_EVENTS_PER_CALL: usize = 4096;

pub async fn heartbeat_loop(link: Arc<Link>, rt: Arc<Runtime>) {
    let mut sent_up_to = 0u64;
    let mut backoff = Backoff::default();
    let mut sampler = Sampler::default();
    link.wait_registered().await;
    loop {
        if rt.events.pending_after(sent_up_to, 1).is_empty() {
            tokio::select! {
                _ = rt.events.wait_pushed() => {}
                _ = tokio::time::sleep(link.heartbeat_interval()) => {}
            }
        }
        let events = rt.events.oldest(MAX_EVENTS_PER_CALL);
        let last = events.last().map(|e| e.seq).unwrap_or(0);
        let (cpu_pct, memory_used_mb) = sampler.sample();
        let req = HeartbeatRequest {
            host_id: link.config.host_id.clone(),
            epoch: link.cursor().epoch,
            events,
            usage: Some(Usage {
                cpu_pct,
                memory_used_mb,
                sandboxes: rt.alive_count(),
            }),
            pools: rt.pools.status(),
            free_net_slots: rt.driver.free_net_slots(),
        };
        match link.client.clone().heartbeat(req).await {
            Ok(resp) => {
                backoff.reset();
                sent_up_to = sent_up_to.max(last);
                let resp = resp.into_inner();
                let acked = rt.events.ack(resp.acked_event_seq);
                if !acked.is_empty() {
                    rt.forget_acked(terminal_ids(acked)).await;
                }
                if resp.reregister {
                    tracing::info!("server asked to register again");
                    link.register().await;
                }
            }
            Err(status) => {
                let delay = backoff.next_delay();
                tracing::warn!(code = ?status.code(), "heartbeat failed: {}; retrying in {delay:?}", status.message());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Sandboxes whose end the server has now durably recorded.
fn terminal_ids(acked: Vec<SandboxEvent>) -> Vec<String> {
    acked
        .into_iter()
        .filter(|e| {
            matches!(
                EventKind::try_from(e.kind),
                Ok(EventKind::Exited | EventKind::StartFailed | EventKind::Stopped)
            )
        })
        .map(|e| e.sandbox_id)
        .collect()
}
