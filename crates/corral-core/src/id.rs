//! Identifiers.
//!
//! Sandbox ids sort by creation time (48 bits of milliseconds first), which keeps
//! store keys append-mostly and makes `ls` output naturally chronological, and
//! carry 64 random bits so two servers (or a restarted one) never collide.

use crate::time::now_ms;

/// A new sandbox id: `sb-` + 12 hex digits of milliseconds + 16 random hex digits.
pub fn new_sandbox_id() -> String {
    format!("sb-{:012x}{:016x}", now_ms() & 0xffff_ffff_ffff, fastrand::u64(..))
}

/// Whether `s` has the shape of a sandbox id; used to reject junk early.
pub fn is_sandbox_id(s: &str) -> bool {
    s.len() == 31 && s.starts_with("sb-") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape_and_sort_by_time() {
        let a = new_sandbox_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_sandbox_id();
        assert!(is_sandbox_id(&a), "{a}");
        assert!(a[..15] < b[..15], "{a} then {b}");
        assert!(!is_sandbox_id("sb-xyz"));
        assert!(!is_sandbox_id("does-not-exist"));
    }
}
