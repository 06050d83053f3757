//! The `Control` service: registration, long-polled commands, heartbeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::sequence::{judge_poll, PollVerdict};
use corral_core::time::now_ms;
use corral_proto::v1 as pb;
use corral_proto::v1::control_server::Control;
use prost::Message;
use tonic::{Request, Response, Status};

use super::convert::{command_to_pb, event_from_pb, pool_to_pb, spec_to_pb};
use crate::controller::{Controller, Unavailable};
use crate::shared::Shared;
use crate::state::decide::{self, Liveness, PoolCounts, Registration};
use crate::state::State;
use crate::metrics as m;

/// Longest a poll may be held.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(300);
const DEFAULT_MAX_COMMANDS: usize = 1024;
const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

pub struct ControlService {
    pub controller: Controller,
    pub shared: Arc<Shared>,
    pub heartbeat_interval_ms: u64,
    /// Becomes true at shutdown: held polls answer at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn unavailable(e: Unavailable) -> Status {
    Status::unavailable(e.to_string())
}

enum PollStep {
    Reply(pb::PollResponse),
    Wait,
}

impl ControlService {
    fn touch(&self, host: &str, cpu_pct: Option<f64>) {
        let now = now_ms();
        let mut live = self.shared.liveness.write();
        let entry = live.entry(host.to_string()).or_insert(Liveness { last_seen_ms: now, cpu_pct: 0.0 });
        entry.last_seen_ms = now;
        if let Some(c) = cpu_pct {
            entry.cpu_pct = c;
        }
    }

    /// Takes a host's pool report: the scheduler's view of its pools and the metrics.
    fn record_pools(&self, host: &str, pools: Vec<pb::PoolStatus>) {
        let view = pools
            .iter()
            .map(|p| {
                let counts = PoolCounts {
                    ready: i64::from(p.ready),
                    warming: i64::from(p.warming),
                    min: p.min,
                    buffer: p.buffer,
                };
                (p.template.clone(), counts)
            })
            .collect();
        self.shared.pools.lock().insert(host.to_string(), view);
        for p in &pools {
            m::set_pool(host, p);
        }
        self.shared.pool_status.write().insert(host.to_string(), pools);
    }

    /// One look at the committed state: a full sync, a batch, or nothing yet.
    /// Acks the poll's cursor (once per call, fire-and-forget: a lost ack is
    /// simply repeated by the next poll).
    fn poll_once(&self, st: &State, req: &pb::PollRequest, acked: &mut bool) -> Result<PollStep, Status> {
        let hs = st.hosts.get(&req.host_id).ok_or_else(|| Status::not_found("host is not registered"))?;
        let h = &hs.host;
        match judge_poll(h.epoch, h.acked_seq, h.last_seq, req.epoch, req.after_seq) {
            PollVerdict::FullSync(reason) => {
                let sandboxes = decide::desired_on_host(st, &req.host_id)
                    .into_iter()
                    .map(|(id, spec)| pb::AddSandbox { sandbox_id: id, spec: Some(spec_to_pb(&spec)) })
                    .collect();
                let stopping = decide::stopping_on_host(st, &req.host_id);
                let host = req.host_id.clone();
                self.controller.submit(move |tx, f| decide::full_sync_sent(tx, f, &host, &stopping));
                m::record_full_sync(reason.as_str());
                tracing::info!(host = %req.host_id, reason = reason.as_str(), "full sync");
                let fs = pb::FullSync {
                    epoch: h.epoch,
                    seq: h.last_seq,
                    sandboxes,
                    reason: reason.as_str().into(),
                    pools: st.pools.values().map(pool_to_pb).collect(),
                };
                Ok(PollStep::Reply(pb::PollResponse { result: Some(pb::poll_response::Result::FullSync(fs)) }))
            }
            PollVerdict::Resume { ack } => {
                if ack > h.acked_seq && !*acked {
                    *acked = true;
                    let (host, epoch) = (req.host_id.clone(), req.epoch);
                    self.controller.submit(move |tx, f| decide::ack(tx, f, &host, epoch, ack));
                }
                let (commands, more) = take_batch(hs, ack, req);
                if commands.is_empty() {
                    return Ok(PollStep::Wait);
                }
                let batch = pb::CommandBatch { commands, more };
                Ok(PollStep::Reply(pb::PollResponse { result: Some(pb::poll_response::Result::Batch(batch)) }))
            }
        }
    }
}

/// The commands after `ack`, capped by count and encoded size (at least one).
fn take_batch(hs: &crate::state::HostState, ack: u64, req: &pb::PollRequest) -> (Vec<pb::Command>, bool) {
    let max_n = match req.max_commands as usize {
        0 => DEFAULT_MAX_COMMANDS,
        n => n.min(8 * DEFAULT_MAX_COMMANDS),
    };
    let max_bytes = match req.max_bytes as usize {
        0 => DEFAULT_MAX_BYTES,
        n => n.min(4 * DEFAULT_MAX_BYTES),
    };
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in hs.outbox.range(ack + 1..).map(|(_, e)| e) {
        let c = command_to_pb(e);
        let len = c.encoded_len();
        if !out.is_empty() && (out.len() >= max_n || bytes + len > max_bytes) {
            return (out, true);
        }
        bytes += len;
        out.push(c);
    }
    (out, false)
}

fn empty_batch() -> pb::PollResponse {
    pb::PollResponse { result: Some(pb::poll_response::Result::Batch(pb::CommandBatch::default())) }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.host_id.is_empty() || r.host_id.len() > 128 {
            return Err(Status::invalid_argument("host_id must be 1-128 bytes"));
        }
        let cap = r.capacity.unwrap_or_default();
        let reg = Registration {
            host_id: r.host_id.clone(),
            cpu_millis: cap.cpu_millis,
            memory_mb: cap.memory_mb,
            templates: r.templates,
            agent_addr: r.agent_addr,
            max_sandboxes: r.max_sandboxes,
        };
        self.touch(&r.host_id, None);
        let host = self.controller.run(move |tx, f| decide::register(tx, f, reg)).await.map_err(unavailable)?;
        tracing::info!(host = %host.id, epoch = host.epoch, their_epoch = r.epoch, "host registered");
        Ok(Response::new(pb::RegisterResponse { epoch: host.epoch, heartbeat_interval_ms: self.heartbeat_interval_ms }))
    }

    async fn poll_commands(&self, req: Request<pb::PollRequest>) -> Result<Response<pb::PollResponse>, Status> {
        let req = req.into_inner();
        let deadline = Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_POLL_WAIT);
        let mut head = self.shared.watch_outbox(&req.host_id);
        let mut acked = false;
        loop {
            self.touch(&req.host_id, None);
            let step = {
                let st = self.shared.committed.read();
                self.poll_once(&st, &req, &mut acked)?
            };
            if let PollStep::Reply(r) = step {
                return Ok(Response::new(r));
            }
            let mut stopping = self.stopping.clone();
            tokio::select! {
                changed = tokio::time::timeout_at(deadline.into(), head.changed()) => match changed {
                    Ok(Ok(())) => continue,
                    _ => return Ok(Response::new(empty_batch())),
                },
                _ = stopping.wait_for(|s| *s) => return Err(Status::unavailable("server is shutting down")),
            }
        }
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let known = self.shared.committed.read().hosts.contains_key(&r.host_id);
        if !known {
            return Ok(Response::new(pb::HeartbeatResponse { acked_event_seq: 0, reregister: true }));
        }
        self.touch(&r.host_id, r.usage.map(|u| u.cpu_pct as f64));
        self.record_pools(&r.host_id, r.pools);
        self.shared.net.lock().insert(r.host_id.clone(), i64::from(r.free_net_slots));
        let acked_event_seq = r.events.iter().map(|e| e.seq).max().unwrap_or(0);
        let events: Vec<_> = r.events.into_iter().filter_map(event_from_pb).collect();
        if !events.is_empty() {
            let host = r.host_id.clone();
            self.controller.run(move |tx, f| decide::host_events(tx, f, &host, events)).await.map_err(unavailable)?;
        }
        Ok(Response::new(pb::HeartbeatResponse { acked_event_seq, reregister: false }))
    }
}
