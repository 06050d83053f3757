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

/// The candidates in eviction order (first = evict first). Candidates whose
/// template has no bounds are treated as `min = buffer = 0`, utilization 0.
pub fn eviction_order(pools: &[PoolBounds], candidates: &[EvictionCandidate]) -> Vec<String> {
    let bounds = |t: &str| pools.iter().find(|p| p.template == t);
    let score = |c: &EvictionCandidate| {
        let util = bounds(&c.template).map(|b| b.utilization.clamp(0.0, 1.0)).unwrap_or(0.0);
        c.age_s * (1.0 - util)
    };
    let mut ranked: Vec<(u8, f64, &EvictionCandidate)> = Vec::with_capacity(candidates.len());
    let mut templates: Vec<&str> = candidates.iter().map(|c| c.template.as_str()).collect();
    templates.sort_unstable();
    templates.dedup();
    for t in templates {
        let (min, buffer) = bounds(t).map(|b| (b.min, b.buffer)).unwrap_or((0, 0));
        let mut mine: Vec<&EvictionCandidate> = candidates.iter().filter(|c| c.template == t).collect();
        // The ones a pool would keep longest are its youngest, busiest.
        mine.sort_by(|a, b| score(a).total_cmp(&score(b)).then_with(|| a.id.cmp(&b.id)));
        for (keep_rank, c) in mine.into_iter().enumerate() {
            let rank = keep_rank as u32; // 0 = the last one this pool would give up
            let class = if rank >= buffer.max(min) {
                0
            } else if rank >= min {
                1
            } else {
                2
            };
            ranked.push((class, score(c), c));
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
    fn unknown_templates_are_fully_evictable_and_empty_input_is_empty() {
        assert_eq!(eviction_order(&[], &[cand("x", "t", 1.0)]), vec!["x"]);
        assert!(eviction_order(&[], &[]).is_empty());
    }
}
