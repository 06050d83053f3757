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

/// A short, stable name for a token that does not reveal it: `sha256:` and
/// the first 16 hex digits (64 bits) of its SHA-256. Stored with each
/// sandbox to count what a token holds; the token itself is never stored.
pub fn fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The owner recorded for requests that presented no token (open servers).
pub const ANONYMOUS: &str = "anonymous";

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

    #[test]
    fn fingerprints_are_short_stable_and_distinct() {
        // SHA-256("abc") = ba7816bf8f01cfea…
        assert_eq!(fingerprint("abc"), "sha256:ba7816bf8f01cfea");
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert!(!fingerprint("secret-token").contains("secret"));
    }
}
