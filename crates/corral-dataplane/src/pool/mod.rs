//! Warm pools on this host: per template, sandboxes pre-created by the driver
//! ([`Driver::prewarm`]) and handed out by a claim ([`Driver::claim`]).
//!
//! Lifecycle of a member: provisioning → warming (the driver's health check;
//! both counted as `warming`) → ready → allocated (claimed, now a sandbox
//! like any other) → terminated. Single use: a claimed sandbox is destroyed
//! when released, never reset; the pool refills.
//!
//! Settings come from `SetPool` commands and full syncs (persisted with the
//! cursor, see `cursor.rs`), over local presets (`DataplaneConfig::pools`,
//! which a server setting for the same template replaces). A
//! [`PoolSizer`] per template ticks every second with that second's claims;
//! its target is the number of *unclaimed* (ready + warming) members.
//!
//! Refill runs in the background, `refill_concurrency` prewarms at a time,
//! and only while no user start is pending (user starts always go first),
//! and never past `max_sandboxes` (alive sandboxes + members). A pool that
//! still holds at least half its target also waits [`REFILL_QUIET`] after the
//! last user start, so a steady trickle of creates is not slowed by prewarms
//! competing for the same cores; an emptied pool refills at once. A cold start
//! that would exceed `max_sandboxes` evicts ready members first, in
//! [`eviction_order`] (above buffer, then above min, then the rest); an
//! allocated sandbox is never evicted.
//!
//! On a restart, unclaimed members left behind are destroyed (their settings
//! may have changed, and a fresh member costs one prewarm); claimed ones are
//! ordinary sandboxes and are adopted as such.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::pool::{
    eviction_order, EvictionCandidate, PoolBounds, PoolSettings, PoolSizer, PrewarmWindow, SizingInput,
};
use corral_proto::v1::{PoolSpec, PoolStatus};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::driver::Driver;

/// How long after a user start a pool that is not short refrains from refilling.
pub const REFILL_QUIET: Duration = Duration::from_millis(50);

/// One template's pool settings (as in `PoolSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConf {
    pub template: String,
    pub min: u32,
    /// 0: no more than `max(min, buffer)`.
    pub max: u32,
    pub buffer: u32,
    /// Scheduled minimum sizes (wall clock).
    #[serde(default)]
    pub prewarm: Vec<PrewarmWindow>,
}

impl PoolConf {
    /// Parses `TEMPLATE=MIN:MAX:BUFFER` (MAX and BUFFER optional: `base=10`).
    pub fn parse(s: &str) -> Result<PoolConf, String> {
        let bad = || format!("bad pool {s:?}: want TEMPLATE=MIN[:MAX[:BUFFER]]");
        let (template, nums) = s.split_once('=').ok_or_else(bad)?;
        if template.is_empty() {
            return Err(bad());
        }
        let nums: Vec<u32> = nums.split(':').map(|n| n.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        if nums.is_empty() || nums.len() > 3 {
            return Err(bad());
        }
        Ok(PoolConf {
            template: template.to_string(),
            min: nums[0],
            max: nums.get(1).copied().unwrap_or(0),
            buffer: nums.get(2).copied().unwrap_or(0),
            prewarm: Vec::new(),
        })
    }

    pub fn from_proto(p: &PoolSpec) -> PoolConf {
        let prewarm = p
            .prewarm
            .iter()
            .map(|w| PrewarmWindow { start_ms: w.start_ms, end_ms: w.end_ms, size: w.size })
            .collect();
        PoolConf { template: p.template.clone(), min: p.min, max: p.max, buffer: p.buffer, prewarm }
    }

    /// A setting that asks for nothing (removes the pool).
    pub fn is_empty(&self) -> bool {
        self.min == 0 && self.max == 0 && self.buffer == 0 && self.prewarm.is_empty()
    }

    fn settings(&self) -> PoolSettings {
        let floor = self.min.max(self.buffer);
        let max = if self.max == 0 { floor } else { self.max.max(self.min) };
        PoolSettings { min: self.min, max, buffer: self.buffer, prewarm: self.prewarm.clone() }
    }
}

/// How the pools behave on this host (from `DataplaneConfig`).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub wait: Duration,
    pub max_sandboxes: usize,
    pub refill_concurrency: usize,
    pub presets: Vec<PoolConf>,
}

struct Member {
    id: String,
    ready_at: Instant,
}

struct Pool {
    conf: PoolConf,
    sizer: PoolSizer,
    ready: VecDeque<Member>,
    /// Being provisioned or health-checked.
    warming: u32,
    /// Starts waiting for a warming member.
    waiters: u32,
    /// Claims since the last tick.
    claims: u32,
    /// Consecutive prewarm failures, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
    /// Smoothed prewarm duration, the sizer's refill lead time.
    lead_s: f64,
}

impl Pool {
    fn new(conf: PoolConf) -> Pool {
        let sizer = PoolSizer::new(conf.settings(), 1.0);
        Pool {
            conf,
            sizer,
            ready: VecDeque::new(),
            warming: 0,
            waiters: 0,
            claims: 0,
            failures: 0,
            retry_at: None,
            lead_s: 1.0,
        }
    }

    /// Unclaimed members this pool should hold now.
    fn target(&self) -> u32 {
        let s = &self.sizer.settings;
        if self.conf.is_empty() {
            return 0;
        }
        self.sizer.target().clamp(s.min.max(s.buffer).min(s.max), s.max)
    }

    fn unclaimed(&self) -> u32 {
        self.ready.len() as u32 + self.warming
    }
}

#[derive(Default)]
struct Inner {
    presets: BTreeMap<String, PoolConf>,
    server: BTreeMap<String, PoolConf>,
    pools: BTreeMap<String, Pool>,
    /// Claimed members still running: sandbox id → template.
    allocated: HashMap<String, String>,
    in_flight: usize,
}

impl Inner {
    /// Re-derives every pool's settings from presets and server settings.
    fn resettle(&mut self) {
        let mut wanted: BTreeMap<String, PoolConf> = self.presets.clone();
        for (t, c) in &self.server {
            wanted.insert(t.clone(), c.clone());
        }
        for (t, conf) in &wanted {
            match self.pools.get_mut(t) {
                Some(p) => {
                    if p.conf != *conf {
                        p.conf = conf.clone();
                        p.sizer.settings = conf.settings();
                    }
                }
                None => {
                    self.pools.insert(t.clone(), Pool::new(conf.clone()));
                }
            }
        }
        for (t, p) in self.pools.iter_mut() {
            if !wanted.contains_key(t) {
                p.conf = PoolConf { template: t.clone(), ..Default::default() };
                p.sizer.settings = p.conf.settings();
            }
        }
        self.pools.retain(|_, p| !p.conf.is_empty() || p.unclaimed() > 0);
    }

    fn allocated_of(&self, template: &str) -> u32 {
        self.allocated.values().filter(|t| *t == template).count() as u32
    }
}

pub struct PoolManager {
    pub driver: Arc<dyn Driver>,
    pub opts: PoolOptions,
    enabled: bool,
    inner: Mutex<Inner>,
    /// Wakes the refill loop.
    wake: Notify,
    /// Wakes starts waiting for a warming member.
    readied: Notify,
    /// User starts queued or running (refill waits while there are any).
    cold_pending: AtomicUsize,
    /// When the last user start ended (for [`REFILL_QUIET`]).
    last_user_start: Mutex<Option<Instant>>,
    /// Set by [`PoolManager::discard_all`]: no more members, ever.
    closed: AtomicBool,
}

impl PoolManager {
    pub fn new(driver: Arc<dyn Driver>, opts: PoolOptions) -> Arc<PoolManager> {
        let enabled = driver.supports_pools();
        let mut inner = Inner::default();
        for p in &opts.presets {
            inner.presets.insert(p.template.clone(), p.clone());
        }
        inner.resettle();
        Arc::new(PoolManager {
            driver,
            opts,
            enabled,
            inner: Mutex::new(inner),
            wake: Notify::new(),
            readied: Notify::new(),
            cold_pending: AtomicUsize::new(0),
            last_user_start: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    /// Server settings persisted by an earlier dataplane.
    pub fn load(&self, persisted: Vec<PoolConf>) {
        let mut inner = self.inner.lock();
        for c in persisted {
            inner.server.insert(c.template.clone(), c);
        }
        inner.resettle();
        drop(inner);
        self.wake.notify_one();
    }

    /// Applies `SetPool` commands (an empty setting removes the pool).
    pub fn set(&self, confs: &[PoolConf]) {
        if confs.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for c in confs {
            info!(template = %c.template, min = c.min, max = c.max, buffer = c.buffer, "pool setting");
            if c.is_empty() {
                inner.server.remove(&c.template);
            } else {
                inner.server.insert(c.template.clone(), c.clone());
            }
        }
        inner.resettle();
        drop(inner);
        self.wake.notify_one();
    }

    /// Applies a full sync's pool settings: exactly these are in force.
    pub fn replace(&self, confs: &[PoolConf]) {
        let mut inner = self.inner.lock();
        inner.server = confs.iter().filter(|c| !c.is_empty()).map(|c| (c.template.clone(), c.clone())).collect();
        inner.resettle();
        drop(inner);
        self.wake.notify_one();
    }

    /// Takes a ready member of `template`, if any (a warm claim).
    pub fn take(&self, template: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let mut inner = self.inner.lock();
        let pool = inner.pools.get_mut(template)?;
        // The youngest first: the oldest are the first to be evicted anyway.
        let m = pool.ready.pop_back()?;
        pool.claims += 1;
        drop(inner);
        self.wake.notify_one();
        Some(m.id)
    }

    /// Whether a start should wait for a member already warming (one not
    /// already promised to another waiter). Registers the waiter if so.
    fn reserve_wait(&self, template: &str) -> bool {
        if !self.enabled || self.opts.wait.is_zero() {
            return false;
        }
        let mut inner = self.inner.lock();
        match inner.pools.get_mut(template) {
            Some(p) if p.waiters < p.warming => {
                p.waiters += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether a start of `template` could wait for a warming member.
    pub fn may_wait(&self, template: &str) -> bool {
        self.enabled
            && !self.opts.wait.is_zero()
            && self.inner.lock().pools.get(template).is_some_and(|p| p.waiters < p.warming)
    }

    /// Waits (bounded) for a ready member; `None` means cold start. The
    /// flag says whether the member had to be waited for (the `wait` path).
    pub async fn take_or_wait(&self, template: &str) -> Option<(String, bool)> {
        if let Some(m) = self.take(template) {
            return Some((m, false));
        }
        if !self.reserve_wait(template) {
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.opts.wait;
        let got = loop {
            let notified = self.readied.notified();
            if let Some(m) = self.take(template) {
                break Some(m);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self.take(template);
            }
        };
        if let Some(p) = self.inner.lock().pools.get_mut(template) {
            p.waiters = p.waiters.saturating_sub(1);
        }
        got.map(|m| (m, true))
    }

    /// Returns an untouched member (its start was cancelled before the claim).
    pub fn put_back(&self, template: &str, member: String) {
        let mut inner = self.inner.lock();
        match inner.pools.get_mut(template) {
            Some(p) => p.ready.push_back(Member { id: member, ready_at: Instant::now() }),
            None => {
                drop(inner);
                self.discard_later(member);
            }
        }
    }

    /// A claim succeeded: `sandbox_id` now runs on a member of `template`.
    pub fn claimed(&self, template: &str, sandbox_id: &str) {
        self.inner.lock().allocated.insert(sandbox_id.to_string(), template.to_string());
    }

    /// A sandbox ended (claimed or not).
    pub fn released(&self, sandbox_id: &str) {
        if self.inner.lock().allocated.remove(sandbox_id).is_some() {
            self.wake.notify_one();
        }
    }

    pub fn begin_user_start(&self) {
        self.cold_pending.fetch_add(1, Ordering::SeqCst);
    }

    pub fn end_user_start(&self) {
        *self.last_user_start.lock() = Some(Instant::now());
        self.cold_pending.fetch_sub(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// What is left of the quiet time after the last user start, if any.
    fn quiet_left(&self) -> Option<Duration> {
        let since = self.last_user_start.lock().map(|t| t.elapsed())?;
        REFILL_QUIET.checked_sub(since).filter(|d| !d.is_zero())
    }

    fn user_starts_pending(&self) -> bool {
        self.cold_pending.load(Ordering::SeqCst) > 0
    }

    /// Unclaimed members (ready + warming) of every pool.
    pub fn members(&self) -> usize {
        let inner = self.inner.lock();
        inner.pools.values().map(|p| p.unclaimed() as usize).sum()
    }

    /// Every pool's state, for the heartbeat.
    pub fn status(&self) -> Vec<PoolStatus> {
        let inner = self.inner.lock();
        inner
            .pools
            .iter()
            .map(|(t, p)| PoolStatus {
                template: t.clone(),
                ready: p.ready.len() as u32,
                warming: p.warming,
                allocated: inner.allocated_of(t),
                target: if self.enabled { p.target() } else { 0 },
                forecast: p.sizer.forecast_rate(),
                forecast_error: p.sizer.forecast_error(),
                min: p.conf.min,
                buffer: p.conf.buffer,
            })
            .collect()
    }

    /// Picks up to `n` ready members to evict (never an allocated sandbox),
    /// in [`eviction_order`], and removes them from their pools.
    pub fn evict(&self, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let mut bounds = Vec::new();
        let mut candidates = Vec::new();
        for (t, p) in &inner.pools {
            let allocated = inner.allocated_of(t);
            let used = allocated + p.ready.len() as u32;
            bounds.push(PoolBounds {
                template: t.clone(),
                min: p.conf.min,
                buffer: p.conf.buffer,
                utilization: if used == 0 { 0.0 } else { f64::from(allocated) / f64::from(used) },
            });
            candidates.extend(p.ready.iter().map(|m| EvictionCandidate {
                id: m.id.clone(),
                template: t.clone(),
                age_s: now.duration_since(m.ready_at).as_secs_f64(),
            }));
        }
        let order = eviction_order(&bounds, &candidates);
        let chosen: Vec<String> = order.into_iter().take(n).collect();
        for p in inner.pools.values_mut() {
            p.ready.retain(|m| !chosen.contains(&m.id));
        }
        chosen
    }

    /// One sizing step per pool (every second).
    fn tick(&self) {
        let now_ms = corral_core::time::now_ms();
        let mut inner = self.inner.lock();
        let allocated: HashMap<String, u32> = inner.pools.keys().map(|t| (t.clone(), inner.allocated_of(t))).collect();
        for (t, p) in inner.pools.iter_mut() {
            p.sizer.refill_lead_s = p.lead_s.max(0.05);
            let input = SizingInput {
                now_ms,
                ready: p.ready.len() as u32,
                allocated: allocated.get(t).copied().unwrap_or(0),
                claims: std::mem::take(&mut p.claims),
            };
            p.sizer.tick(input);
        }
    }

    /// Ready members above their pool's target, removed from the pool.
    fn take_excess(&self) -> Vec<String> {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        for p in inner.pools.values_mut() {
            let target = p.target();
            while p.unclaimed() > target && !p.ready.is_empty() {
                // The oldest go first.
                out.push(p.ready.pop_front().unwrap().id);
            }
        }
        inner.pools.retain(|_, p| !p.conf.is_empty() || p.unclaimed() > 0);
        out
    }

    /// The template to prewarm next (the largest deficit), marked warming.
    /// While `quiet` (just after a user start) only a pool short of half its
    /// target qualifies.
    fn next_to_warm(&self, quiet: bool) -> Option<String> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut inner = self.inner.lock();
        if inner.in_flight >= self.opts.refill_concurrency.max(1) {
            return None;
        }
        let now = Instant::now();
        let pick = inner
            .pools
            .iter()
            .filter(|(_, p)| p.retry_at.is_none_or(|t| t <= now))
            .filter(|(_, p)| !quiet || p.unclaimed() * 2 < p.target())
            .map(|(t, p)| (p.target().saturating_sub(p.unclaimed()), t))
            .filter(|(deficit, _)| *deficit > 0)
            .max_by_key(|(deficit, _)| *deficit)
            .map(|(_, t)| t.clone())?;
        inner.in_flight += 1;
        if let Some(p) = inner.pools.get_mut(&pick) {
            p.warming += 1;
        }
        Some(pick)
    }

    /// A prewarm ended. Returns the member back when the pool no longer wants it.
    fn warmed(&self, template: &str, result: Result<String, String>, took: Duration) -> Option<String> {
        let mut inner = self.inner.lock();
        inner.in_flight -= 1;
        let Some(p) = inner.pools.get_mut(template) else {
            return result.ok();
        };
        p.warming = p.warming.saturating_sub(1);
        match result {
            Ok(id) => {
                p.failures = 0;
                p.retry_at = None;
                p.lead_s = 0.8 * p.lead_s + 0.2 * took.as_secs_f64();
                if p.conf.is_empty() {
                    return Some(id);
                }
                debug!(template, member = %id, took = ?took, "pool member ready");
                p.ready.push_back(Member { id, ready_at: Instant::now() });
                drop(inner);
                self.readied.notify_waiters();
                None
            }
            Err(e) => {
                p.failures += 1;
                let backoff = Duration::from_millis(200 * 2u64.pow(p.failures.min(6)));
                p.retry_at = Some(Instant::now() + backoff);
                warn!(template, failures = p.failures, "prewarm failed: {e}; retrying in {backoff:?}");
                None
            }
        }
    }

    /// Stops refilling for good and destroys every unclaimed member, waiting
    /// (up to `patience`) for those still being made: they land in `ready` and
    /// are destroyed here with the rest, before this returns. For a shutdown
    /// that must leave nothing behind. Claimed members are sandboxes, stopped
    /// as such.
    pub async fn discard_all(&self, patience: Duration) {
        self.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + patience;
        while self.inner.lock().in_flight > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let members: Vec<String> = {
            let mut inner = self.inner.lock();
            inner.pools.values_mut().flat_map(|p| p.ready.drain(..).map(|m| m.id)).collect()
        };
        if !members.is_empty() {
            info!(members = members.len(), "destroying the pools' unclaimed members");
        }
        let destroys = members.iter().map(|m| async move {
            if let Err(e) = self.driver.discard(m).await {
                warn!(member = %m, "discard pool member: {e}");
            }
        });
        futures::future::join_all(destroys).await;
    }

    /// Destroys a member in the background.
    pub fn discard_later(&self, member: String) {
        let driver = self.driver.clone();
        tokio::spawn(async move {
            if let Err(e) = driver.discard(&member).await {
                warn!(member = %member, "discard pool member: {e}");
            }
        });
    }
}

/// Refills the pools until the dataplane stops. `alive` counts the host's
/// alive sandboxes (for `max_sandboxes`).
pub async fn refill_loop(pools: Arc<PoolManager>, alive: impl Fn() -> u64 + Send + 'static) {
    if !pools.enabled {
        return;
    }
    let mut next_tick = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        // Retries after a failure's backoff, or once the quiet time is over.
        let recheck = pools.quiet_left().map_or(Duration::from_millis(250), |q| q + Duration::from_millis(1));
        tokio::select! {
            _ = pools.wake.notified() => {}
            _ = tokio::time::sleep_until(next_tick) => {}
            _ = tokio::time::sleep(recheck) => {}
        }
        if tokio::time::Instant::now() >= next_tick {
            pools.tick();
            next_tick += Duration::from_secs(1);
        }
        for m in pools.take_excess() {
            pools.discard_later(m);
        }
        // User starts first: no new prewarm while one is queued or running.
        while !pools.user_starts_pending() && (alive() as usize + pools.members()) < pools.opts.max_sandboxes {
            let Some(template) = pools.next_to_warm(pools.quiet_left().is_some()) else { break };
            let p = pools.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let result = p.driver.prewarm(&template).await.map_err(|e| e.to_string());
                if let Some(unwanted) = p.warmed(&template, result, t0.elapsed()) {
                    p.discard_later(unwanted);
                }
                p.wake.notify_one();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_presets() {
        assert_eq!(
            PoolConf::parse("base=10:20:3").unwrap(),
            PoolConf { template: "base".into(), min: 10, max: 20, buffer: 3, prewarm: Vec::new() }
        );
        assert_eq!(PoolConf::parse("py=5").unwrap(), PoolConf { template: "py".into(), min: 5, max: 0, buffer: 0, prewarm: Vec::new() });
        assert!(PoolConf::parse("=1").is_err());
        assert!(PoolConf::parse("x=a").is_err());
        assert!(PoolConf::parse("x=1:2:3:4").is_err());
    }

    #[test]
    fn right_after_a_user_start_only_a_short_pool_refills() {
        let presets = vec![PoolConf::parse("full=4").unwrap(), PoolConf::parse("short=4").unwrap()];
        let opts = PoolOptions { wait: Duration::ZERO, max_sandboxes: 100, refill_concurrency: 8, presets };
        let pools = PoolManager::new(Arc::new(crate::driver::sim::SimDriver::new(Duration::ZERO)), opts);
        {
            let mut inner = pools.inner.lock();
            let full = inner.pools.get_mut("full").unwrap();
            for i in 0..3 {
                full.ready.push_back(Member { id: format!("m{i}"), ready_at: Instant::now() });
            }
            inner.pools.get_mut("short").unwrap().ready.push_back(Member { id: "s0".into(), ready_at: Instant::now() });
        }
        assert_eq!(pools.quiet_left(), None, "no user start yet");
        pools.begin_user_start();
        pools.end_user_start();
        assert!(pools.quiet_left().is_some_and(|q| q <= REFILL_QUIET));
        // "full" holds 3 of 4 (not short): it waits; "short" holds 1 of 4.
        assert_eq!(pools.next_to_warm(true).as_deref(), Some("short"));
        assert_eq!(pools.next_to_warm(true), None, "2 of 4 (ready + warming) is half: not short any more");
        // Once quiet, everyone refills to target: 1 more for "full", 2 for "short".
        let mut picks: Vec<String> = std::iter::from_fn(|| pools.next_to_warm(false)).collect();
        picks.sort();
        assert_eq!(picks, ["full", "short", "short"]);
    }

    #[test]
    fn max_zero_means_the_floor() {
        let s = PoolConf { template: "b".into(), min: 10, max: 0, buffer: 0, prewarm: Vec::new() }.settings();
        assert_eq!((s.min, s.max), (10, 10));
        let p = Pool::new(PoolConf { template: "b".into(), min: 10, max: 0, buffer: 0, prewarm: Vec::new() });
        assert_eq!(p.target(), 10);
        let p = Pool::new(PoolConf { template: "b".into(), min: 2, max: 8, buffer: 5, prewarm: Vec::new() });
        assert_eq!(p.target(), 5);
    }
}
