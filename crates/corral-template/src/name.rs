//! Template names become directory names and appear in URLs and CLI output,
//! so they are restricted to a safe, boring alphabet.

use crate::error::{Result, TemplateError};

/// The longest accepted name (well below any file-name limit).
pub const MAX_NAME_LEN: usize = 128;

/// Accepts letters, digits, `_`, `-` and `.`, starting with a letter or digit,
/// at most [`MAX_NAME_LEN`] bytes. Starting alphanumeric keeps names from
/// colliding with the store's own dot-folders (`.cache`, `.building`, ...)
/// and from being `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Err(TemplateError::InvalidName { name: name.to_string(), reason });
    let Some(first) = name.chars().next() else {
        return bad("it is empty");
    };
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 128 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return bad("only letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in ["base", "py3.11", "a", "Debian_bookworm-1", "0x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".hidden", "-x", "_x", "a/b", "..", "a b", "é", "a\0", long.as_str()] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(128)).is_ok());
    }
}
