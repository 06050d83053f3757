//! Placement: which host gets a sandbox. Pure functions, no I/O.
//!
//! Hard filters first (a live lease, the template, room for the request's cpu
//! and memory after overcommit, a sandbox slot — see [`Room`] — and a free
//! network slot for a `nat` sandbox), then the score from DESIGN.md:
//! `100×warm_slots + free_net_slots − 0.1×cpu_pct − 1000×stale`.
//! A host that can take the sandbox without evicting anything always beats
//! one that must evict an idle pool member (the vacuum), and among those the
//! one giving up the cheapest member ([`EvictionClass`]) wins.
//! Ties go to the lower cpu, then to the host with fewer sandboxes (so an idle
//! fleet spreads instead of piling onto the first host), then to the smaller
//! id, which keeps every decision deterministic.

use std::cmp::Ordering;

use corral_core::pool::EvictionClass;

/// What the scheduler knows of one host at the moment of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub supports_template: bool,
    /// The lease is over: the host gets no new work.
    pub expired: bool,
    /// Heartbeats are late but the lease holds: strongly avoided.
    pub stale: bool,
    pub warm_slots: u64,
    pub free_net_slots: u64,
    pub cpu_pct: f64,
    /// Schedulable capacity left (after overcommit), may be negative.
    pub free_cpu_millis: i64,
    pub free_memory_mb: i64,
    pub sandboxes: u64,
    /// Sandbox slots left (`max_sandboxes` − live − pool members); `None`
    /// when the host sets no such bound.
    pub free_slots: Option<i64>,
    /// What making a slot would cost: the class of the idle pool member the
    /// host would evict first, `None` when it has none.
    pub vacuum: Option<EvictionClass>,
}

/// How a host makes room for one more sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Room {
    /// A ready member of the template is claimed: no new slot is needed.
    Warm,
    /// A free slot.
    Free,
    /// An idle pool member of this class is evicted first.
    Evict(EvictionClass),
}

/// How `c` would make room, or `None` when it cannot.
pub fn room(c: &Candidate) -> Option<Room> {
    if c.warm_slots > 0 {
        Some(Room::Warm)
    } else if c.free_slots.is_none_or(|n| n > 0) {
        Some(Room::Free)
    } else {
        c.vacuum.map(Room::Evict)
    }
}

/// Warm and free rooms cost nothing (the score orders them); evictions
/// cost their class.
fn room_cost(r: Option<Room>) -> u8 {
    match r {
        Some(Room::Warm | Room::Free) | None => 0,
        Some(Room::Evict(class)) => 1 + class as u8,
    }
}

/// The host's score; higher is better.
pub fn score(c: &Candidate) -> f64 {
    100.0 * c.warm_slots as f64 + c.free_net_slots as f64 - 0.1 * c.cpu_pct - if c.stale { 1000.0 } else { 0.0 }
}

/// What a sandbox needs from its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub cpu_millis: u32,
    pub memory_mb: u32,
    /// A `nat` sandbox takes one of the host's network slots.
    pub net_slot: bool,
}

fn fits(c: &Candidate, need: Need) -> bool {
    c.supports_template
        && !c.expired
        && c.free_cpu_millis >= i64::from(need.cpu_millis)
        && c.free_memory_mb >= i64::from(need.memory_mb)
        && (!need.net_slot || c.free_net_slots > 0)
        && room(c).is_some()
}

fn better(a: &Candidate, b: &Candidate) -> Ordering {
    room_cost(room(b))
        .cmp(&room_cost(room(a)))
        .then_with(|| score(a).total_cmp(&score(b)))
        .then_with(|| b.cpu_pct.total_cmp(&a.cpu_pct))
        .then_with(|| b.sandboxes.cmp(&a.sandboxes))
        .then_with(|| b.id.cmp(a.id))
}

/// The index of the best host for a request, or `None` when nothing fits.
pub fn pick(candidates: &[Candidate], cpu_millis: u32, memory_mb: u32) -> Option<usize> {
    pick_for(candidates, Need { cpu_millis, memory_mb, net_slot: false })
}

/// [`pick`] for a full [`Need`] (a `nat` sandbox needs a free network slot).
pub fn pick_for(candidates: &[Candidate], need: Need) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| fits(c, need))
        .max_by(|(_, a), (_, b)| better(a, b))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, warm: u64, net: u64, cpu: f64) -> Candidate<'_> {
        Candidate {
            id,
            supports_template: true,
            expired: false,
            stale: false,
            warm_slots: warm,
            free_net_slots: net,
            cpu_pct: cpu,
            free_cpu_millis: 10_000,
            free_memory_mb: 10_000,
            sandboxes: 0,
            free_slots: None,
            vacuum: None,
        }
    }

    #[test]
    fn the_design_example_warm_slots_dominate() {
        let a = host("a", 18, 21, 31.0);
        let b = host("b", 5, 23, 12.0);
        assert!((score(&a) - 1817.9).abs() < 1e-9);
        assert!((score(&b) - 521.8).abs() < 1e-9);
        assert_eq!(pick(&[b.clone(), a.clone()], 100, 100), Some(1));
    }

    #[test]
    fn ties_go_to_lower_cpu_then_fewer_sandboxes_then_id() {
        // Equal scores: 0 warm, 10 vs 11 net slots offset by 10 cpu points.
        let a = host("a", 0, 11, 10.0);
        let b = host("b", 0, 10, 0.0);
        assert_eq!(score(&a), score(&b));
        assert_eq!(pick(&[a, b], 1, 1), Some(1));

        let mut c = host("c", 0, 0, 0.0);
        c.sandboxes = 3;
        let d = host("d", 0, 0, 0.0);
        assert_eq!(pick(&[c, d], 1, 1), Some(1), "fewer sandboxes wins");

        assert_eq!(pick(&[host("y", 0, 0, 0.0), host("x", 0, 0, 0.0)], 1, 1), Some(1), "then the smaller id");
    }

    #[test]
    fn stale_hosts_are_avoided_and_expired_ones_excluded() {
        let mut stale = host("stale", 5, 0, 0.0);
        stale.stale = true;
        let fresh = host("fresh", 0, 0, 90.0);
        assert_eq!(pick(&[stale.clone(), fresh], 1, 1), Some(1));
        assert_eq!(pick(std::slice::from_ref(&stale), 1, 1), Some(0), "a stale host still beats nothing");

        let mut expired = host("expired", 50, 0, 0.0);
        expired.expired = true;
        assert_eq!(pick(&[expired], 1, 1), None);
    }

    #[test]
    fn resources_and_templates_are_hard_filters() {
        let mut small = host("small", 99, 0, 0.0);
        small.free_cpu_millis = 500;
        let big = host("big", 0, 0, 0.0);
        assert_eq!(pick(&[small.clone(), big.clone()], 1000, 1), Some(1));
        assert_eq!(pick(&[small.clone(), big.clone()], 500, 1), Some(0));
        let mut other = host("other", 99, 0, 0.0);
        other.supports_template = false;
        assert_eq!(pick(&[other], 1, 1), None);
        assert_eq!(pick(&[], 1, 1), None);
    }

    #[test]
    fn a_full_host_needs_a_warm_member_or_something_to_evict() {
        let mut full = host("full", 0, 0, 0.0);
        full.free_slots = Some(0);
        assert_eq!(room(&full), None);
        assert_eq!(pick(std::slice::from_ref(&full), 1, 1), None, "nothing to claim, nothing to evict");

        full.warm_slots = 1;
        assert_eq!(room(&full), Some(Room::Warm), "a claim needs no new slot");
        full.warm_slots = 0;
        full.vacuum = Some(EvictionClass::AtOrBelowMin);
        assert_eq!(room(&full), Some(Room::Evict(EvictionClass::AtOrBelowMin)));
        assert_eq!(pick(std::slice::from_ref(&full), 1, 1), Some(0), "evicting is better than waiting");

        let mut roomy = host("roomy", 0, 0, 95.0);
        roomy.free_slots = Some(1);
        assert_eq!(room(&roomy), Some(Room::Free));
        assert_eq!(pick(&[full.clone(), roomy], 1, 1), Some(1), "a free slot beats an eviction, even on a busier host");
    }

    #[test]
    fn the_vacuum_goes_where_the_cheapest_member_is() {
        let full = |id, class| {
            let mut h = host(id, 0, 50, 0.0);
            h.free_slots = Some(-2);
            h.vacuum = Some(class);
            h
        };
        let protected = full("a", EvictionClass::AtOrBelowMin);
        let headroom = full("b", EvictionClass::AboveMin);
        let surplus = full("c", EvictionClass::AboveBuffer);
        assert_eq!(pick(&[protected.clone(), headroom.clone(), surplus], 1, 1), Some(2));
        assert_eq!(pick(&[protected, headroom], 1, 1), Some(1));
    }

    #[test]
    fn nat_sandboxes_need_a_free_network_slot_and_isolated_ones_do_not() {
        let nat = Need { cpu_millis: 1, memory_mb: 1, net_slot: true };
        let isolated = Need { net_slot: false, ..nat };
        // The warm host would win on score, but it has no network slot left.
        let full = host("full", 50, 0, 0.0);
        let free = host("free", 0, 1, 0.0);
        assert_eq!(pick_for(&[full.clone(), free.clone()], nat), Some(1));
        assert_eq!(pick_for(&[full.clone(), free], isolated), Some(0));
        assert_eq!(pick_for(std::slice::from_ref(&full), nat), None);
        assert_eq!(pick_for(std::slice::from_ref(&full), isolated), Some(0));
    }
}
