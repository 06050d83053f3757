//! Bearer-token checks shared by the REST API and the dataplane protocol.

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `presented` is one of `accepted`.
pub fn token_accepted(accepted: &[String], presented: &str) -> bool {
    accepted.iter().fold(false, |ok, t| ok | constant_time_eq(t.as_bytes(), presented.as_bytes()))
}

/// A new random token: 32 hex digits (128 bits).
pub fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn accepts_only_listed_tokens() {
        let accepted = vec!["one".to_string(), "two".to_string()];
        assert!(token_accepted(&accepted, "two"));
        assert!(!token_accepted(&accepted, "tw"));
        assert!(!token_accepted(&accepted, "three"));
        assert!(!token_accepted(&[], "one"));
        assert_eq!(new_token().len(), 32);
    }
}
