//! Which idle pool sandboxes to give up when a host has no room.
//!
//! Only `ready` (unclaimed) sandboxes are candidates; an allocated one is never
//! evicted. They fall in three classes, evicted in order: those above their
//! pool's buffer (and min), then those above the pool's min, then those at or
//! below min. Within a class the oldest and least used go first, by
//! `age × (1 − pool utilization)`.

/// A pool's bounds and how busy it is.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolBounds {
    pub template: String,
    pub min: u32,
    pub buffer: u32,
    /// allocated / (allocated + ready), in 0..=1.
    pub utilization: f64,
}

/// One ready sandbox that could be evicted.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionCandidate {
    pub id: String,
    pub template: String,
    pub age_s: f64,
}

/// Why a ready member may go, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvictionClass {
    /// Beyond what the pool keeps as buffer (and min): pure surplus.
    AboveBuffer = 0,
    /// Within the buffer but above min: costs headroom for the next burst.
    AboveMin = 1,
    /// At or below min: costs a guaranteed warm start.
    AtOrBelowMin = 2,
}

/// The class of the member a pool would give up at `keep_rank` (0 = the one
/// it would keep longest): the pool keeps `min` above all and `max(buffer,
/// min)` before anything is pure surplus.
pub fn class_at(keep_rank: u32, min: u32, buffer: u32) -> EvictionClass {
    if keep_rank >= buffer.max(min) {
        EvictionClass::AboveBuffer
    } else if keep_rank >= min {
        EvictionClass::AboveMin
    } else {
        EvictionClass::AtOrBelowMin
    }
}

/// The class of the first member a pool of `ready` members would give up,
/// or `None` when it has none: its highest keep rank is `ready − 1`.
pub fn first_eviction(ready: u32, min: u32, buffer: u32) -> Option<EvictionClass> {
    ready.checked_sub(1).map(|rank| class_at(rank, min, buffer))
}

/// The candidates in eviction order (first = evict first). Candidates whose
/// template has no bounds are treated as `min = buffer = 0`, utilization 0.
pub fn eviction_order(pools: &[PoolBounds], candidates: &[EvictionCandidate]) -> Vec<String> {
    let bounds = |t: &str| pools.iter().find(|p| p.template == t);
    let score = |c: &EvictionCandidate| {
        let util = bounds(&c.template).map(|b| b.utilization.clamp(0.0, 1.0)).unwrap_or(0.0);
        c.age_s * (1.0 - util)
    };
    let mut ranked: Vec<(EvictionClass, f64, &EvictionCandidate)> = Vec::with_capacity(candidates.len());
    let mut templates: Vec<&str> = candidates.iter().map(|c| c.template.as_str()).collect();
    templates.sort_unstable();
    templates.dedup();
    for t in templates {
        let (min, buffer) = bounds(t).map(|b| (b.min, b.buffer)).unwrap_or((0, 0));
        let mut mine: Vec<&EvictionCandidate> = candidates.iter().filter(|c| c.template == t).collect();
        // The ones a pool would keep longest are its youngest, busiest.
        mine.sort_by(|a, b| score(a).total_cmp(&score(b)).then_with(|| a.id.cmp(&b.id)));
        for (keep_rank, c) in mine.into_iter().enumerate() {
            // keep_rank 0 = the last one this pool would give up.
            ranked.push((class_at(keep_rank as u32, min, buffer), score(c), c));
        }
    }
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| b.1.total_cmp(&a.1))
            .then_with(|| b.2.age_s.total_cmp(&a.2.age_s))
            .then_with(|| a.2.id.cmp(&b.2.id))
    });
    ranked.into_iter().map(|(_, _, c)| c.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(t: &str, min: u32, buffer: u32, utilization: f64) -> PoolBounds {
        PoolBounds { template: t.into(), min, buffer, utilization }
    }

    fn cand(id: &str, t: &str, age_s: f64) -> EvictionCandidate {
        EvictionCandidate { id: id.into(), template: t.into(), age_s }
    }

    #[test]
    fn above_buffer_then_above_min_then_the_rest() {
        // Pool "py": min 1, buffer 2, 4 ready; pool "js": min 2, buffer 2, 2 ready.
        let pools = [pool("py", 1, 2, 0.0), pool("js", 2, 2, 0.0)];
        let cands = [
            cand("py-a", "py", 40.0),
            cand("py-b", "py", 30.0),
            cand("py-c", "py", 20.0),
            cand("py-d", "py", 10.0),
            cand("js-a", "js", 100.0),
            cand("js-b", "js", 90.0),
        ];
        // py keeps its youngest first: rank 0 = py-d, 1 = py-c, 2 = py-b, 3 = py-a.
        // Class 0 (rank ≥ 2): py-a, py-b. Class 1 (1 ≤ rank < 2): py-c.
        // Class 2: py-d (rank 0), js-a and js-b (ranks < min 2).
        assert_eq!(eviction_order(&pools, &cands), vec!["py-a", "py-b", "py-c", "js-a", "js-b", "py-d"]);
    }

    #[test]
    fn within_a_class_old_and_idle_goes_first() {
        // Both pools have nothing protected; "busy" is 90% utilized.
        let pools = [pool("idle", 0, 0, 0.0), pool("busy", 0, 0, 0.9)];
        let cands = [cand("busy-old", "busy", 100.0), cand("idle-young", "idle", 20.0)];
        // Scores: busy-old 100 × 0.1 = 10, idle-young 20 × 1.0 = 20.
        assert_eq!(eviction_order(&pools, &cands), vec!["idle-young", "busy-old"]);
    }

    #[test]
    fn the_first_member_a_pool_gives_up() {
        // min 1, buffer 3: ranks 3.. are surplus, 1..3 above min, 0 protected.
        assert_eq!(first_eviction(0, 1, 3), None);
        assert_eq!(first_eviction(1, 1, 3), Some(EvictionClass::AtOrBelowMin));
        assert_eq!(first_eviction(2, 1, 3), Some(EvictionClass::AboveMin));
        assert_eq!(first_eviction(3, 1, 3), Some(EvictionClass::AboveMin));
        assert_eq!(first_eviction(4, 1, 3), Some(EvictionClass::AboveBuffer));
        // A buffer below min protects nothing beyond min.
        assert_eq!(first_eviction(2, 2, 0), Some(EvictionClass::AtOrBelowMin));
        assert_eq!(first_eviction(3, 2, 0), Some(EvictionClass::AboveBuffer));
        assert!(EvictionClass::AboveBuffer < EvictionClass::AboveMin);
        assert!(EvictionClass::AboveMin < EvictionClass::AtOrBelowMin);
    }

    #[test]
    fn unknown_templates_are_fully_evictable_and_empty_input_is_empty() {
        assert_eq!(eviction_order(&[], &[cand("x", "t", 1.0)]), vec!["x"]);
        assert!(eviction_order(&[], &[]).is_empty());
    }
}
