//! How many live sandboxes one API token may hold.
//!
//! A token's live sandboxes are those it created that have not ended
//! (`pending` through `stopping`). A create, or a whole batch, that would take
//! the token past its limit is refused as one: nothing of it is written, and
//! ending any of the token's sandboxes makes room again.

/// The limit a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota<'a> {
    /// The token's fingerprint (see `corral_core::auth::fingerprint`).
    pub owner: &'a str,
    /// Most live sandboxes it may hold; `None` = no limit.
    pub max_live: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this token holds {live} live sandboxes and asked for {asking} more; its limit is {limit}")]
pub struct OverQuota {
    pub live: usize,
    pub asking: usize,
    pub limit: usize,
}

/// Whether a token holding `live` sandboxes may add `asking` more.
pub fn admit(live: usize, asking: usize, max_live: Option<usize>) -> Result<(), OverQuota> {
    match max_live {
        Some(limit) if asking > 0 && live.saturating_add(asking) > limit => Err(OverQuota { live, asking, limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_not_one_more() {
        assert_eq!(admit(0, 3, Some(3)), Ok(()));
        assert_eq!(admit(2, 1, Some(3)), Ok(()));
        assert_eq!(admit(3, 1, Some(3)), Err(OverQuota { live: 3, asking: 1, limit: 3 }));
        assert_eq!(admit(1, 3, Some(3)), Err(OverQuota { live: 1, asking: 3, limit: 3 }), "a batch is all or nothing");
    }

    #[test]
    fn no_limit_admits_everything_and_asking_for_nothing_always_passes() {
        assert_eq!(admit(usize::MAX, 1, None), Ok(()));
        assert_eq!(admit(5, 0, Some(3)), Ok(()), "idempotent replays add nothing");
        assert_eq!(admit(0, 1, Some(0)), Err(OverQuota { live: 0, asking: 1, limit: 0 }));
    }
}
