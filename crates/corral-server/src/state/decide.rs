//! The server's decisions, as pure functions over [`State`].
//!
//! Each decision runs inside a [`Tx`]: it reads the state, and every change it
//! makes is a [`Write`] that is applied to the state at once (so the next
//! decision in the same group commit sees it) and recorded for the store.
//! Nothing here does I/O or reads a clock: time comes in through [`Fleet`].

use std::collections::HashMap;

use corral_core::pool::{first_eviction, EvictionClass, PoolSpec};
use corral_core::{Command, EndReason, Host, NetworkMode, OutboxEntry, Sandbox, SandboxSpec, SandboxState};
use corral_store::Write;

use super::State;
use crate::scheduler::{self, Candidate, Need, Room};

/// Tunables of placement and liveness.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Schedulable cpu = capacity × this. CPU limits are ceilings, not
    /// reservations, and idle sandboxes use none, so the default is generous.
    pub cpu_overcommit: f64,
    /// Schedulable memory = capacity × this (limits are hard caps, rarely all used).
    pub memory_overcommit: f64,
    pub heartbeat_interval_ms: u64,
    /// Without a heartbeat for this long a host gets no new work.
    pub lease_ms: u64,
    /// After the lease, this much longer until its sandboxes end `host_lost`.
    pub host_lost_grace_ms: u64,
    /// A create that finds no capacity waits this long, then ends `no_capacity`.
    pub pending_timeout_ms: u64,
    /// Creates allowed to wait for capacity; past it a create is refused (503).
    pub max_pending: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            cpu_overcommit: 1000.0,
            memory_overcommit: 64.0,
            heartbeat_interval_ms: 1000,
            lease_ms: 10_000,
            host_lost_grace_ms: 60_000,
            pending_timeout_ms: 60_000,
            max_pending: 100_000,
        }
    }
}

/// Soft, in-memory facts about a host, refreshed by heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Liveness {
    pub last_seen_ms: u64,
    pub cpu_pct: f64,
}

/// What a host said about one of its pools in its last heartbeat, adjusted
/// by every decision since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Ready, unclaimed members: warm slots, and what the vacuum may evict.
    pub ready: i64,
    /// Members being created or health-checked (they hold a sandbox slot).
    pub warming: i64,
    /// The bounds in force on the host (server settings or its own presets).
    pub min: u32,
    pub buffer: u32,
}

impl PoolCounts {
    /// Members holding a sandbox slot without serving anyone.
    fn members(&self) -> i64 {
        self.ready.max(0) + self.warming.max(0)
    }

    fn first_eviction(&self) -> Option<EvictionClass> {
        first_eviction(self.ready.max(0) as u32, self.min, self.buffer)
    }
}

/// Each host's pools by template: set from every heartbeat, and changed at
/// once by each placement that counts on a member (a warm claim takes one, a
/// vacuum evicts one), so the next decision does not count on it too.
pub type PoolView = parking_lot::Mutex<HashMap<String, HashMap<String, PoolCounts>>>;

/// The pool a full host would evict from first (cheapest class, then the
/// largest pool, then the template name), and that member's class.
fn cheapest_eviction(pools: &HashMap<String, PoolCounts>) -> Option<(&str, EvictionClass)> {
    pools
        .iter()
        .filter_map(|(t, p)| p.first_eviction().map(|class| (t.as_str(), class, p.ready)))
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)).then(a.0.cmp(b.0)))
        .map(|(t, class, _)| (t, class))
}

/// What a transaction's placements took from the scheduler's views of the
/// hosts (which live outside the store): given back if it does not commit.
#[derive(Debug, Default)]
pub struct Spent {
    /// `(host, template)` of each pool member counted on (a warm claim or a vacuum).
    pub pool_members: Vec<(String, String)>,
    /// The host of each network slot a `nat` placement took.
    pub net_slots: Vec<String>,
}

/// Gives back what placements that were not committed counted on.
pub fn give_back(pools: &PoolView, net: &NetSlots, spent: &Spent) {
    let mut pools = pools.lock();
    for (host, template) in &spent.pool_members {
        if let Some(p) = pools.get_mut(host).and_then(|t| t.get_mut(template)) {
            p.ready += 1;
        }
    }
    let mut net = net.lock();
    for host in &spent.net_slots {
        if let Some(slots) = net.get_mut(host) {
            *slots += 1;
        }
    }
}

/// Free network slots (for `nat` sandboxes) the server believes each host
/// has: set from every heartbeat, decremented by each `nat` placement, like
/// the pool view, so a burst does not overbook a host.
pub type NetSlots = parking_lot::Mutex<HashMap<String, i64>>;

/// The world outside the state at the moment of a decision.
pub struct Fleet<'a> {
    pub pools: &'a PoolView,
    pub net: &'a NetSlots,
    /// The moment of the decision, µs since the epoch.
    pub now_us: u64,
    pub liveness: &'a HashMap<String, Liveness>,
    pub policy: &'a Policy,
}

impl Fleet<'_> {
    /// The moment of the decision in milliseconds (what records store).
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    fn heartbeat_age_ms(&self, host: &str) -> u64 {
        self.liveness.get(host).map(|l| self.now_ms().saturating_sub(l.last_seen_ms)).unwrap_or(u64::MAX)
    }

    /// The host's lease is over: no new work.
    pub fn expired(&self, host: &str) -> bool {
        self.heartbeat_age_ms(host) > self.policy.lease_ms
    }

    /// Past the lease and the grace period: its sandboxes are lost.
    pub fn lost(&self, host: &str) -> bool {
        self.heartbeat_age_ms(host) > self.policy.lease_ms.saturating_add(self.policy.host_lost_grace_ms)
    }
}

/// A group of decisions being made against the working state.
pub struct Tx<'a> {
    pub state: &'a mut State,
    pub writes: Vec<Write>,
    /// Commit → ack latency of each command acknowledged in this transaction.
    pub drained_ms: Vec<u64>,
    /// What placements took from the scheduler's views: given back if the
    /// transaction does not commit.
    pub spent: Spent,
}

impl<'a> Tx<'a> {
    pub fn new(state: &'a mut State) -> Self {
        Tx { state, writes: Vec::new(), drained_ms: Vec::new(), spent: Spent::default() }
    }

    fn write(&mut self, w: Write) {
        self.state.apply(&w);
        self.writes.push(w);
    }

    fn put_sandbox(&mut self, sb: Sandbox) {
        self.write(Write::PutSandbox(sb));
    }

    fn put_host(&mut self, host: Host) {
        self.write(Write::PutHost(host));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created(Sandbox),
    /// The idempotency key was seen before with the same spec.
    Replayed(Sandbox),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("idempotency_key {0:?} was already used for a different request")]
    KeyConflict(String),
    #[error("sandbox {0} does not exist")]
    NotFound(String),
    #[error("no host has room and {0} creates are already waiting; retry later")]
    QueueFull(usize),
    #[error("{0}; delete some or retry later")]
    OverQuota(#[from] super::quota::OverQuota),
}

/// One sandbox a request asks for: its id, spec and idempotency key.
pub type NewSandbox = (String, SandboxSpec, Option<String>);

/// Creates every item for `quota.owner`, or none of them when the owner
/// would hold more live sandboxes than its limit. Idempotent replays do not
/// count: they add nothing.
pub fn create_owned(
    tx: &mut Tx,
    fleet: &Fleet,
    quota: super::quota::Quota,
    items: Vec<NewSandbox>,
) -> Result<Vec<Result<CreateOutcome, DecideError>>, DecideError> {
    let asking = items
        .iter()
        .filter(|(_, _, key)| key.as_ref().is_none_or(|k| !tx.state.by_idempotency_key.contains_key(k)))
        .count();
    super::quota::admit(tx.state.live_owned_by(quota.owner), asking, quota.max_live)?;
    Ok(items
        .into_iter()
        .map(|(id, spec, key)| create_as(tx, fleet, id, spec, key, Some(quota.owner.to_string())))
        .collect())
}

/// Accepts a new sandbox and places it if any host fits.
pub fn create(
    tx: &mut Tx,
    fleet: &Fleet,
    id: String,
    spec: SandboxSpec,
    key: Option<String>,
) -> Result<CreateOutcome, DecideError> {
    create_as(tx, fleet, id, spec, key, None)
}

fn create_as(
    tx: &mut Tx,
    fleet: &Fleet,
    id: String,
    spec: SandboxSpec,
    key: Option<String>,
    owner: Option<String>,
) -> Result<CreateOutcome, DecideError> {
    if let Some(k) = &key {
        if let Some(existing) = tx.state.by_idempotency_key.get(k).and_then(|id| tx.state.sandboxes.get(id)) {
            return if existing.spec == spec {
                Ok(CreateOutcome::Replayed(existing.clone()))
            } else {
                Err(DecideError::KeyConflict(k.clone()))
            };
        }
    }
    let mut sb = Sandbox::new(id.clone(), spec, key, fleet.now_ms());
    sb.owner = owner;
    if tx.state.pending.len() >= fleet.policy.max_pending && choose_host(tx.state, fleet, &sb).is_none() {
        return Err(DecideError::QueueFull(tx.state.pending.len()));
    }
    place(tx, fleet, sb);
    Ok(CreateOutcome::Created(tx.state.sandboxes[&id].clone()))
}

fn candidates<'s>(state: &'s State, fleet: &Fleet, template: &str) -> Vec<Candidate<'s>> {
    let pools = fleet.pools.lock();
    let net = fleet.net.lock();
    state
        .hosts
        .values()
        .map(|hs| {
            let host_pools = pools.get(&hs.host.id);
            let members: i64 = host_pools.map(|m| m.values().map(PoolCounts::members).sum()).unwrap_or(0);
            let cpu_cap = (hs.host.cpu_millis as f64 * fleet.policy.cpu_overcommit) as i64;
            let mem_cap = (hs.host.memory_mb as f64 * fleet.policy.memory_overcommit) as i64;
            let age = fleet.heartbeat_age_ms(&hs.host.id);
            Candidate {
                id: &hs.host.id,
                supports_template: hs.host.templates.iter().any(|t| t == template),
                expired: fleet.expired(&hs.host.id),
                stale: age > 2 * fleet.policy.heartbeat_interval_ms.max(1),
                warm_slots: host_pools.and_then(|t| t.get(template)).map_or(0, |p| p.ready.max(0) as u64),
                free_net_slots: net.get(&hs.host.id).copied().unwrap_or(0).max(0) as u64,
                cpu_pct: fleet.liveness.get(&hs.host.id).map(|l| l.cpu_pct).unwrap_or(0.0),
                free_cpu_millis: cpu_cap - hs.allocated_cpu_millis as i64,
                free_memory_mb: mem_cap - hs.allocated_memory_mb as i64,
                sandboxes: hs.live.len() as u64,
                free_slots: (hs.host.max_sandboxes > 0)
                    .then(|| hs.host.max_sandboxes as i64 - hs.live.len() as i64 - members),
                vacuum: host_pools.and_then(cheapest_eviction).map(|(_, class)| class),
            }
        })
        .collect()
}

/// The best host for a sandbox (never the one that already refused it) and
/// how it makes room.
fn choose_host(state: &State, fleet: &Fleet, sb: &Sandbox) -> Option<(String, Room)> {
    let mut cands = candidates(state, fleet, &sb.spec.template);
    cands.retain(|c| Some(c.id) != sb.rerouted_from.as_deref());
    let nat = sb.spec.network == NetworkMode::Nat;
    if nat {
        // A `nat` sandbox never claims a pool member (members are isolated).
        cands.iter_mut().for_each(|c| c.warm_slots = 0);
    }
    let need = Need { cpu_millis: sb.spec.cpu_millis, memory_mb: sb.spec.memory_mb, net_slot: nat };
    let best = &cands[scheduler::pick_for(&cands, need)?];
    Some((best.id.to_string(), scheduler::room(best)?))
}

/// Takes from the server's view of the host's pools what this placement
/// uses up — the claimed member, or the member the host will evict — and
/// returns that member's template.
fn spend_room(fleet: &Fleet, host: &str, template: &str, room: Room) -> Option<String> {
    let mut pools = fleet.pools.lock();
    let host_pools = pools.get_mut(host)?;
    let victim = match room {
        Room::Warm => Some(template.to_string()),
        Room::Evict(_) => cheapest_eviction(host_pools).map(|(t, _)| t.to_string()),
        Room::Free => None,
    };
    let victim = victim?;
    host_pools.get_mut(&victim)?.ready -= 1;
    Some(victim)
}

/// Places `sb` (which is `pending`) on the best host and emits its one
/// `AddSandbox`, or leaves it pending. Returns whether it was placed.
fn place(tx: &mut Tx, fleet: &Fleet, mut sb: Sandbox) -> bool {
    let chosen = choose_host(tx.state, fleet, &sb);
    let Some((host, room)) = chosen else {
        if tx.state.sandboxes.get(&sb.id) != Some(&sb) {
            tx.put_sandbox(sb);
        }
        return false;
    };
    if let Some(spent) = spend_room(fleet, &host, &sb.spec.template, room) {
        tx.spent.pool_members.push((host.clone(), spent));
    }
    if sb.spec.network == NetworkMode::Nat {
        if let Some(slots) = fleet.net.lock().get_mut(&host) {
            *slots -= 1;
            tx.spent.net_slots.push(host.clone());
        }
    }
    let command = Command::AddSandbox { sandbox_id: sb.id.clone(), spec: sb.spec.clone() };
    sb.state = SandboxState::Enqueued;
    sb.host = Some(host.clone());
    tx.put_sandbox(sb);
    push_command(tx, fleet, &host, command);
    true
}

/// Appends a command to a host's outbox with the next seq.
fn push_command(tx: &mut Tx, fleet: &Fleet, host_id: &str, command: Command) {
    let Some(hs) = tx.state.hosts.get(host_id) else { return };
    let mut host = hs.host.clone();
    host.last_seq += 1;
    let entry = OutboxEntry {
        host: host_id.to_string(),
        seq: host.last_seq,
        command,
        committed_at_ms: fleet.now_ms(),
        decided_at_us: fleet.now_us,
    };
    tx.write(Write::PutOutbox(entry));
    tx.put_host(host);
}

/// Moves a sandbox to a terminal state for `reason`.
fn end(tx: &mut Tx, fleet: &Fleet, mut sb: Sandbox, reason: EndReason, message: Option<String>) {
    sb.state = reason.terminal_state();
    sb.end_reason = Some(reason);
    sb.ended_at_ms = Some(fleet.now_ms());
    if message.is_some() {
        sb.message = message;
    }
    tx.put_sandbox(sb);
}

/// Stops a sandbox for `reason`: at once when no host has it, else through a
/// `RemoveSandbox` command and the `stopping` state. Ending an ended sandbox is
/// a no-op that returns it unchanged.
pub fn stop(tx: &mut Tx, fleet: &Fleet, id: &str, reason: EndReason) -> Result<Sandbox, DecideError> {
    let sb = tx.state.sandboxes.get(id).cloned().ok_or_else(|| DecideError::NotFound(id.to_string()))?;
    match (sb.state, sb.host.clone()) {
        (s, _) if s.is_terminal() || s == SandboxState::Stopping => {}
        (SandboxState::Pending, _) | (_, None) => end(tx, fleet, sb, reason, None),
        (_, Some(host)) => {
            let mut next = sb;
            next.state = SandboxState::Stopping;
            next.end_reason = Some(reason);
            tx.put_sandbox(next);
            push_command(tx, fleet, &host, Command::RemoveSandbox { sandbox_id: id.to_string(), reason });
        }
    }
    Ok(tx.state.sandboxes[id].clone())
}

/// Records that `host` applied every command up to `seq`: deletes them and
/// moves the sandboxes they started from `enqueued` to `starting`.
pub fn ack(tx: &mut Tx, fleet: &Fleet, host_id: &str, epoch: u64, seq: u64) {
    let Some(hs) = tx.state.hosts.get(host_id) else { return };
    if hs.host.epoch != epoch || seq <= hs.host.acked_seq || seq > hs.host.last_seq {
        return;
    }
    let mut host = hs.host.clone();
    let mut starting = Vec::new();
    for e in hs.outbox.range(..=seq).map(|(_, e)| e) {
        tx.drained_ms.push(fleet.now_ms().saturating_sub(e.committed_at_ms));
        if let Command::AddSandbox { sandbox_id, .. } = &e.command {
            starting.push(sandbox_id.clone());
        }
    }
    for id in starting {
        if let Some(sb) = tx.state.sandboxes.get(&id) {
            if sb.state == SandboxState::Enqueued && sb.host.as_deref() == Some(host_id) {
                let mut next = sb.clone();
                next.state = SandboxState::Starting;
                tx.put_sandbox(next);
            }
        }
    }
    tx.write(Write::DeleteOutbox { host: host_id.to_string(), through_seq: seq });
    host.acked_seq = seq;
    tx.put_host(host);
}

/// What a dataplane says about itself when it (re)connects.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub host_id: String,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub templates: Vec<String>,
    pub agent_addr: String,
    /// Sandboxes plus pool members the host holds at most (0: no bound).
    pub max_sandboxes: u64,
}

/// Registers a host (new hosts get a fresh epoch; known ones keep theirs, so a
/// restarted dataplane resumes) and places whatever was waiting for capacity.
pub fn register(tx: &mut Tx, fleet: &Fleet, reg: Registration) -> Host {
    let host = match tx.state.hosts.get(&reg.host_id) {
        Some(hs) => Host {
            cpu_millis: reg.cpu_millis,
            memory_mb: reg.memory_mb,
            templates: reg.templates,
            agent_addr: reg.agent_addr,
            max_sandboxes: reg.max_sandboxes,
            ..hs.host.clone()
        },
        None => Host {
            id: reg.host_id,
            epoch: fresh_epoch(tx.state, fleet.now_ms()),
            last_seq: 0,
            acked_seq: 0,
            cpu_millis: reg.cpu_millis,
            memory_mb: reg.memory_mb,
            templates: reg.templates,
            agent_addr: reg.agent_addr,
            registered_at_ms: fleet.now_ms(),
            full_syncs: 0,
            max_sandboxes: reg.max_sandboxes,
        },
    };
    if tx.state.hosts.get(&host.id).map(|hs| &hs.host) != Some(&host) {
        tx.put_host(host.clone());
    }
    schedule_pending(tx, fleet);
    host
}

/// Epochs are wall-clock based so that a server that lost its store never
/// reissues an epoch a dataplane still holds, and strictly above every epoch
/// this store has issued.
fn fresh_epoch(state: &State, now_ms: u64) -> u64 {
    let max_known = state.hosts.values().map(|h| h.host.epoch).max().unwrap_or(0);
    now_ms.max(max_known + 1)
}

/// The sandboxes a host should be running: the content of a full sync.
pub fn desired_on_host(state: &State, host_id: &str) -> Vec<(String, SandboxSpec)> {
    let Some(hs) = state.hosts.get(host_id) else { return Vec::new() };
    hs.live
        .iter()
        .filter_map(|id| state.sandboxes.get(id))
        .filter(|sb| sb.state.is_wanted_on_host())
        .map(|sb| (sb.id.clone(), sb.spec.clone()))
        .collect()
}

/// A full sync was sent to the host. Its dataplane stops everything not in
/// the desired set, so the sandboxes that were `stopping` when the sync was
/// taken (`stopping_ids`) are done: the sync supersedes their `RemoveSandbox`.
pub fn full_sync_sent(tx: &mut Tx, fleet: &Fleet, host_id: &str, stopping_ids: &[String]) {
    let Some(hs) = tx.state.hosts.get(host_id) else { return };
    let mut host = hs.host.clone();
    for id in stopping_ids {
        let Some(sb) = tx.state.sandboxes.get(id) else { continue };
        if sb.state == SandboxState::Stopping && sb.host.as_deref() == Some(host_id) {
            let sb = sb.clone();
            let reason = sb.end_reason.unwrap_or(EndReason::Deleted);
            end(tx, fleet, sb, reason, None);
        }
    }
    host.full_syncs += 1;
    tx.put_host(host);
}

/// The sandboxes of a host that are `stopping`: what a full sync taken now supersedes.
pub fn stopping_on_host(state: &State, host_id: &str) -> Vec<String> {
    let Some(hs) = state.hosts.get(host_id) else { return Vec::new() };
    hs.live
        .iter()
        .filter(|id| state.sandboxes.get(*id).is_some_and(|sb| sb.state == SandboxState::Stopping))
        .cloned()
        .collect()
}

/// What a dataplane reports about one of its sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// `path`: `warm`, `wait` (a pool member waited for) or `cold`, when the host says.
    Started { sandbox_id: String, path: Option<String> },
    /// `refused`: the host had no room; the sandbox may be placed elsewhere.
    StartFailed { sandbox_id: String, message: String, refused: bool },
    /// Ended, on its own (`exited`, `oom_killed`) or because it was stopped.
    Ended { sandbox_id: String, reason: EndReason, message: String },
}

/// Applies a host's events. Events about sandboxes not placed on this host, or
/// that would move a sandbox backwards, are ignored: reports are idempotent.
pub fn host_events(tx: &mut Tx, fleet: &Fleet, host_id: &str, events: Vec<HostEvent>) {
    for ev in events {
        let id = match &ev {
            HostEvent::Started { sandbox_id, .. } => sandbox_id,
            HostEvent::StartFailed { sandbox_id, .. } | HostEvent::Ended { sandbox_id, .. } => sandbox_id,
        };
        let Some(sb) = tx.state.sandboxes.get(id) else { continue };
        if sb.host.as_deref() != Some(host_id) || sb.state.is_terminal() {
            continue;
        }
        let sb = sb.clone();
        match ev {
            HostEvent::Started { path, .. } => {
                if sb.state.can_become(SandboxState::Running) {
                    let mut next = sb;
                    next.state = SandboxState::Running;
                    next.started_at_ms = Some(fleet.now_ms());
                    next.start_path = path;
                    tx.put_sandbox(next);
                }
            }
            HostEvent::StartFailed { refused: true, .. }
                if sb.rerouted_from.is_none() && sb.state != SandboxState::Stopping =>
            {
                reroute(tx, fleet, sb, host_id)
            }
            HostEvent::StartFailed { message, .. } => end(tx, fleet, sb, EndReason::StartFailed, Some(message)),
            HostEvent::Ended { reason, message, .. } => {
                // A sandbox we were stopping ends for the reason we stopped it.
                let reason = match (sb.state, sb.end_reason) {
                    (SandboxState::Stopping, Some(staged)) => staged,
                    _ => reason,
                };
                let message = (!message.is_empty()).then_some(message);
                end(tx, fleet, sb, reason, message);
            }
        }
    }
}

/// Sets a template's pool bounds and tells every host that offers the
/// template, through its outbox (hosts that join later get them in their
/// first full sync).
pub fn set_pool(tx: &mut Tx, fleet: &Fleet, pool: PoolSpec) -> PoolSpec {
    if tx.state.pools.get(&pool.template) == Some(&pool) {
        return pool;
    }
    tx.write(Write::PutPool(pool.clone()));
    let hosts: Vec<String> = tx
        .state
        .hosts
        .values()
        .filter(|hs| hs.host.templates.contains(&pool.template))
        .map(|hs| hs.host.id.clone())
        .collect();
    for h in hosts {
        push_command(tx, fleet, &h, Command::SetPool { pool: pool.clone() });
    }
    pool
}

/// A host refused a sandbox for lack of room: place it on the next-best
/// host (once), or let it wait for capacity like any pending create.
fn reroute(tx: &mut Tx, fleet: &Fleet, mut sb: Sandbox, refused_by: &str) {
    sb.state = SandboxState::Pending;
    sb.host = None;
    sb.rerouted_from = Some(refused_by.to_string());
    tx.put_sandbox(sb.clone());
    place(tx, fleet, sb);
}

/// The periodic sweep: TTLs, pending deadlines, lost hosts, waiting creates.
pub fn tick(tx: &mut Tx, fleet: &Fleet) {
    let expired: Vec<String> =
        tx.state.expiry.range(..=(fleet.now_ms(), String::from("\u{10ffff}"))).map(|(_, id)| id.clone()).collect();
    for id in expired {
        let _ = stop(tx, fleet, &id, EndReason::TtlExpired);
    }
    let deadline = fleet.now_ms().saturating_sub(fleet.policy.pending_timeout_ms);
    let timed_out: Vec<String> =
        tx.state.pending.range(..(deadline, String::new())).map(|(_, id)| id.clone()).collect();
    for id in timed_out {
        if let Some(sb) = tx.state.sandboxes.get(&id).cloned() {
            end(tx, fleet, sb, EndReason::NoCapacity, Some("no host had room before the deadline".into()));
        }
    }
    let lost: Vec<String> = tx
        .state
        .hosts
        .values()
        .filter(|hs| !hs.live.is_empty() && fleet.lost(&hs.host.id))
        .map(|hs| hs.host.id.clone())
        .collect();
    for host in lost {
        host_lost(tx, fleet, &host);
    }
    schedule_pending(tx, fleet);
}

/// Ends every sandbox of a host that stopped answering, and moves the host to
/// a new epoch so that, should it come back, a full sync stops them there.
fn host_lost(tx: &mut Tx, fleet: &Fleet, host_id: &str) {
    let Some(hs) = tx.state.hosts.get(host_id) else { return };
    let mut host = hs.host.clone();
    let victims: Vec<Sandbox> = hs.live.iter().filter_map(|id| tx.state.sandboxes.get(id)).cloned().collect();
    for sb in victims {
        let reason = match (sb.state, sb.end_reason) {
            (SandboxState::Stopping, Some(staged)) => staged,
            _ => EndReason::HostLost,
        };
        end(tx, fleet, sb, reason, Some(format!("host {host_id} stopped reporting")));
    }
    host.epoch = fresh_epoch(tx.state, fleet.now_ms());
    tx.write(Write::DeleteOutbox { host: host_id.to_string(), through_seq: host.last_seq });
    host.acked_seq = host.last_seq;
    tx.put_host(host);
}

/// Places waiting sandboxes, oldest first, as far as capacity allows.
pub fn schedule_pending(tx: &mut Tx, fleet: &Fleet) {
    if tx.state.pending.is_empty() {
        return;
    }
    let waiting: Vec<String> = tx.state.pending.iter().take(10_000).map(|(_, id)| id.clone()).collect();
    for id in waiting {
        if let Some(sb) = tx.state.sandboxes.get(&id).cloned() {
            place(tx, fleet, sb);
        }
    }
}
