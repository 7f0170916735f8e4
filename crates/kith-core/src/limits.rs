//! Input bounds shared by the HTTP API and the state machine, so a request that would be
//! refused on apply is refused before it is ever proposed.

/// Longest key accepted, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 4096;
/// Default largest value accepted, in bytes; a node may configure another bound.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Most keys a single list request may return.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// Keys a list request returns when it names no limit.
pub const LIST_LIMIT_DEFAULT: usize = 1_000;
/// Longest TTL a key may have, in seconds (one year).
pub const TTL_S_MAX: u64 = 365 * 24 * 3600;

/// Why a key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("key must not be empty")]
    EmptyKey,
    #[error("key is {len} bytes; the limit is {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("key must not contain control characters")]
    KeyControlChar,
    #[error("value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("ttl must be between 1 and {max} seconds, got {got}")]
    TtlOutOfRange { got: u64, max: u64 },
}

/// Checks a TTL in seconds: at least one second, at most [`TTL_S_MAX`].
pub fn validate_ttl_s(ttl_s: u64) -> Result<(), InvalidInput> {
    if ttl_s == 0 || ttl_s > TTL_S_MAX {
        return Err(InvalidInput::TtlOutOfRange {
            got: ttl_s,
            max: TTL_S_MAX,
        });
    }
    Ok(())
}

/// Checks a key: non-empty, at most [`KEY_BYTES_MAX`] bytes, no control characters (they
/// make keys unprintable in every tool that lists them).
pub fn validate_key(key: &str) -> Result<(), InvalidInput> {
    if key.is_empty() {
        return Err(InvalidInput::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(InvalidInput::KeyTooLong {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    if key.chars().any(char::is_control) {
        return Err(InvalidInput::KeyControlChar);
    }
    Ok(())
}

/// Checks a value against the node's configured bound.
pub fn validate_value(value: &[u8], value_bytes_max: usize) -> Result<(), InvalidInput> {
    if value.len() > value_bytes_max {
        return Err(InvalidInput::ValueTooLarge {
            len: value.len(),
            max: value_bytes_max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded() {
        assert_eq!(validate_key(""), Err(InvalidInput::EmptyKey));
        assert!(validate_key("a/b/c").is_ok());
        assert!(validate_key(&"k".repeat(KEY_BYTES_MAX)).is_ok());
        assert!(matches!(
            validate_key(&"k".repeat(KEY_BYTES_MAX + 1)),
            Err(InvalidInput::KeyTooLong { .. })
        ));
        assert_eq!(validate_key("a\nb"), Err(InvalidInput::KeyControlChar));
    }

    #[test]
    fn values_are_bounded() {
        assert!(validate_value(&[0; 10], 10).is_ok());
        assert!(matches!(
            validate_value(&[0; 11], 10),
            Err(InvalidInput::ValueTooLarge { len: 11, max: 10 })
        ));
    }
}
