//! Outbox sequencing: the rules by which commands are numbered, applied and
//! acknowledged.
//!
//! The server numbers each host's commands 1, 2, 3, … within an epoch. The
//! dataplane remembers the highest seq it applied (its cursor) and applies a
//! received batch strictly in order: a seq it already applied is a duplicate
//! (skipped), the next one is applied, anything beyond a hole is a gap (it
//! stops there and asks again from its cursor). Asking from seq `n` acks every
//! command up to `n`.

/// What the dataplane does with one batch, given its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    /// Indices into the batch of the commands to apply, in order.
    pub apply: Vec<usize>,
    /// How many were already applied.
    pub duplicates: usize,
    /// The first seq that did not follow on, if the batch had a hole.
    pub gap_at: Option<u64>,
    /// The cursor after applying `apply`.
    pub new_cursor: u64,
}

/// Plans a batch whose seqs are `seqs` (in the order received) against `cursor`.
pub fn plan_batch(cursor: u64, seqs: &[u64]) -> ApplyPlan {
    let mut plan = ApplyPlan { apply: Vec::new(), duplicates: 0, gap_at: None, new_cursor: cursor };
    for (i, &seq) in seqs.iter().enumerate() {
        if seq <= plan.new_cursor {
            plan.duplicates += 1;
        } else if seq == plan.new_cursor + 1 {
            plan.apply.push(i);
            plan.new_cursor = seq;
        } else {
            plan.gap_at = Some(seq);
            break;
        }
    }
    plan
}

/// How the server answers a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollVerdict {
    /// Everything up to `ack` is applied; send what follows it.
    Resume { ack: u64 },
    /// The dataplane's view cannot be continued: send the host's whole desired state.
    FullSync(FullSyncReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullSyncReason {
    /// The dataplane holds another epoch (new to this server, or forgotten).
    EpochMismatch,
    /// It asks from before what it already acked: those commands are deleted.
    AckRegression,
    /// It claims seqs the server never issued (the server lost data).
    AheadOfServer,
}

impl FullSyncReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EpochMismatch => "epoch_mismatch",
            Self::AckRegression => "ack_regression",
            Self::AheadOfServer => "ahead_of_server",
        }
    }
}

/// The server's judgement of a poll `(epoch, after_seq)` against the host's
/// record `(epoch, acked_seq, last_seq)`.
pub fn judge_poll(host_epoch: u64, acked_seq: u64, last_seq: u64, epoch: u64, after_seq: u64) -> PollVerdict {
    if epoch != host_epoch {
        PollVerdict::FullSync(FullSyncReason::EpochMismatch)
    } else if after_seq < acked_seq {
        PollVerdict::FullSync(FullSyncReason::AckRegression)
    } else if after_seq > last_seq {
        PollVerdict::FullSync(FullSyncReason::AheadOfServer)
    } else {
        PollVerdict::Resume { ack: after_seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_in_order_from_the_cursor() {
        let p = plan_batch(4, &[5, 6, 7]);
        assert_eq!(p, ApplyPlan { apply: vec![0, 1, 2], duplicates: 0, gap_at: None, new_cursor: 7 });
    }

    #[test]
    fn skips_duplicates_then_applies_the_rest() {
        let p = plan_batch(6, &[5, 6, 7, 8]);
        assert_eq!(p, ApplyPlan { apply: vec![2, 3], duplicates: 2, gap_at: None, new_cursor: 8 });
    }

    #[test]
    fn stops_at_a_gap() {
        let p = plan_batch(2, &[3, 5, 6]);
        assert_eq!(p, ApplyPlan { apply: vec![0], duplicates: 0, gap_at: Some(5), new_cursor: 3 });
        let p = plan_batch(2, &[4]);
        assert_eq!(p, ApplyPlan { apply: vec![], duplicates: 0, gap_at: Some(4), new_cursor: 2 });
    }

    #[test]
    fn a_redelivered_batch_is_all_duplicates() {
        let p = plan_batch(9, &[7, 8, 9]);
        assert_eq!(p, ApplyPlan { apply: vec![], duplicates: 3, gap_at: None, new_cursor: 9 });
    }

    #[test]
    fn an_empty_batch_changes_nothing() {
        assert_eq!(plan_batch(3, &[]), ApplyPlan { apply: vec![], duplicates: 0, gap_at: None, new_cursor: 3 });
    }

    #[test]
    fn the_server_resumes_a_consistent_poll() {
        assert_eq!(judge_poll(7, 10, 20, 7, 10), PollVerdict::Resume { ack: 10 });
        assert_eq!(judge_poll(7, 10, 20, 7, 15), PollVerdict::Resume { ack: 15 });
        assert_eq!(judge_poll(7, 10, 20, 7, 20), PollVerdict::Resume { ack: 20 });
        assert_eq!(judge_poll(7, 0, 0, 7, 0), PollVerdict::Resume { ack: 0 });
    }

    #[test]
    fn the_server_full_syncs_what_it_cannot_continue() {
        use FullSyncReason::*;
        assert_eq!(judge_poll(7, 10, 20, 6, 10), PollVerdict::FullSync(EpochMismatch));
        assert_eq!(judge_poll(7, 10, 20, 0, 0), PollVerdict::FullSync(EpochMismatch));
        assert_eq!(judge_poll(7, 10, 20, 7, 9), PollVerdict::FullSync(AckRegression));
        assert_eq!(judge_poll(7, 10, 20, 7, 21), PollVerdict::FullSync(AheadOfServer));
    }
}
