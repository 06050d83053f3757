//! The full-sync diff: what a dataplane does when handed the complete desired
//! state of its host.
//!
//! It keeps every sandbox that is both wanted and known, starts the wanted ones
//! it does not have, and stops the ones it has that are no longer wanted. It
//! never restarts a sandbox it already knows — even one that has exited — so a
//! full sync can never start a sandbox twice, and it never wipes healthy ones.

use std::collections::{BTreeMap, BTreeSet};

/// What the dataplane knows of one local sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Being started, or running.
    Alive,
    /// Exited or failed; its end is reported (or about to be).
    Ended,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncDiff {
    /// Wanted and absent: start these.
    pub start: Vec<String>,
    /// Alive and unwanted: stop these.
    pub stop: Vec<String>,
    /// Ended and unwanted: forget these.
    pub forget: Vec<String>,
    /// Wanted and known (alive or already ended): leave them alone.
    pub keep: Vec<String>,
}

/// Diffs the desired set against the local one. Output lists are sorted.
pub fn diff(desired: &BTreeSet<String>, local: &BTreeMap<String, Local>) -> SyncDiff {
    let mut d = SyncDiff::default();
    for id in desired {
        if local.contains_key(id) {
            d.keep.push(id.clone());
        } else {
            d.start.push(id.clone());
        }
    }
    for (id, state) in local {
        if desired.contains(id) {
            continue;
        }
        match state {
            Local::Alive => d.stop.push(id.clone()),
            Local::Ended => d.forget.push(id.clone()),
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn local(items: &[(&str, Local)]) -> BTreeMap<String, Local> {
        items.iter().map(|(id, st)| (id.to_string(), *st)).collect()
    }

    #[test]
    fn keeps_wanted_starts_missing_stops_unwanted() {
        let d = diff(&set(&["a", "b", "c"]), &local(&[("a", Local::Alive), ("x", Local::Alive), ("y", Local::Ended)]));
        assert_eq!(d.keep, vec!["a"]);
        assert_eq!(d.start, vec!["b", "c"]);
        assert_eq!(d.stop, vec!["x"]);
        assert_eq!(d.forget, vec!["y"]);
    }

    #[test]
    fn never_restarts_a_wanted_sandbox_that_already_ended() {
        let d = diff(&set(&["a"]), &local(&[("a", Local::Ended)]));
        assert_eq!(d, SyncDiff { keep: vec!["a".into()], ..Default::default() });
    }

    #[test]
    fn an_identical_view_changes_nothing() {
        let d = diff(&set(&["a", "b"]), &local(&[("a", Local::Alive), ("b", Local::Alive)]));
        assert_eq!(d, SyncDiff { keep: vec!["a".into(), "b".into()], ..Default::default() });
    }

    #[test]
    fn an_empty_desired_state_stops_everything_alive() {
        let d = diff(&set(&[]), &local(&[("a", Local::Alive), ("b", Local::Ended)]));
        assert_eq!(d.stop, vec!["a"]);
        assert_eq!(d.forget, vec!["b"]);
        assert!(d.start.is_empty() && d.keep.is_empty());
    }
}
