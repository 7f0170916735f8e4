//! Input bounds shared by the HTTP API, the leader and the state machine.
//!
//! Every command is checked three times against the same rules: by the public route that
//! builds it (so a client gets a precise error), by the leader before it proposes it
//! (whatever path it came by: a public route, a forwarded write, a join), and by the state
//! machine when it applies it. The first two use the node's configured [`Limits`]; apply
//! uses [`Limits::CEILING`], bounds no node may configure past, so every replica refuses
//! exactly the same entries (a refused entry applies as `Response::Rejected` and changes
//! nothing).
//!
//! Refuses: anything about transport or HTTP; the API maps [`InvalidInput`] to a status.

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

/// Largest value any node may be configured to accept (`kith serve --value-bytes-max`), in
/// bytes. The state machine refuses larger values whatever the leader's setting was.
pub const VALUE_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// Largest job payload any node may be configured to accept, in bytes of JSON text.
pub const JOB_PAYLOAD_BYTES_CEILING: usize = 16 * 1024 * 1024;

/// The bounds a node may configure. The leader checks every command against its own before
/// proposing it; apply checks against [`Limits::CEILING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub value_bytes_max: usize,
    pub job_payload_bytes_max: usize,
    pub file_bytes_max: u64,
}

impl Limits {
    /// The widest bounds a node may have: what the state machine enforces on apply.
    pub const CEILING: Limits = Limits {
        value_bytes_max: VALUE_BYTES_CEILING,
        job_payload_bytes_max: JOB_PAYLOAD_BYTES_CEILING,
        file_bytes_max: u64::MAX,
    };
}

/// Longest room name, in characters (from a safe set: letters, digits, `-`, `_`, `.`).
pub const ROOM_NAME_CHARS_MAX: usize = 64;
/// Longest author name, in characters.
pub const AUTHOR_CHARS_MAX: usize = 64;
/// Longest message text, in bytes of UTF-8.
pub const MESSAGE_TEXT_BYTES_MAX: usize = 4096;
/// Longest client-supplied message id (idempotency key), from the room-name character set.
pub const MESSAGE_ID_CHARS_MAX: usize = 64;

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
    #[error("{what} must be 1 to {max} characters of letters, digits, '-', '_' or '.'")]
    BadName { what: &'static str, max: usize },
    #[error("author must be 1 to {max} characters without control characters")]
    BadAuthor { max: usize },
    #[error("text must be 1 to {max} bytes")]
    BadText { max: usize },
    #[error("invalid file path: {reason}")]
    BadPath { reason: &'static str },
    /// A number outside its range; `expected` says the range, in the client's units.
    #[error("{what} must be {expected}")]
    OutOfRange {
        what: &'static str,
        expected: String,
    },
    /// A text or payload over its byte bound (answered like an oversized value).
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A file manifest that does not describe a well-formed file.
    #[error("invalid file manifest: {0}")]
    BadManifest(String),
    /// Refused by the leader, as it told a forwarding node across the peer transport: its
    /// message, and whether it was about size.
    #[error("{message}")]
    Refused { message: String, too_large: bool },
}

impl InvalidInput {
    /// Whether the input was refused for its size (HTTP 413) rather than its form (400).
    pub fn is_too_large(&self) -> bool {
        match self {
            InvalidInput::ValueTooLarge { .. } | InvalidInput::TooLarge { .. } => true,
            InvalidInput::Refused { too_large, .. } => *too_large,
            _ => false,
        }
    }
}

/// Checks a byte length against its bound.
pub fn validate_len(what: &'static str, len: usize, max: usize) -> Result<(), InvalidInput> {
    if len > max {
        return Err(InvalidInput::TooLarge { what, len, max });
    }
    Ok(())
}

/// Checks that `value` lies in `min..=max`; `unit` names what the numbers count.
pub fn validate_range(
    what: &'static str,
    value: u64,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<(), InvalidInput> {
    if value < min || value > max {
        return Err(InvalidInput::OutOfRange {
            what,
            expected: if unit.is_empty() {
                format!("{min} to {max}")
            } else {
                format!("{min} to {max} {unit}")
            },
        });
    }
    Ok(())
}

fn is_safe_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.chars().count() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a room name: 1–64 characters from `[A-Za-z0-9._-]`.
pub fn validate_room(room: &str) -> Result<(), InvalidInput> {
    if is_safe_name(room, ROOM_NAME_CHARS_MAX) {
        Ok(())
    } else {
        Err(InvalidInput::BadName {
            what: "room name",
            max: ROOM_NAME_CHARS_MAX,
        })
    }
}

/// Checks a client-supplied message id (idempotency key).
pub fn validate_message_id(id: &str) -> Result<(), InvalidInput> {
    if is_safe_name(id, MESSAGE_ID_CHARS_MAX) {
        Ok(())
    } else {
        Err(InvalidInput::BadName {
            what: "message id",
            max: MESSAGE_ID_CHARS_MAX,
        })
    }
}

/// Checks a message's author and text.
pub fn validate_message(author: &str, text: &str) -> Result<(), InvalidInput> {
    let author_ok = !author.trim().is_empty()
        && author.chars().count() <= AUTHOR_CHARS_MAX
        && !author.chars().any(char::is_control);
    if !author_ok {
        return Err(InvalidInput::BadAuthor {
            max: AUTHOR_CHARS_MAX,
        });
    }
    if text.is_empty() || text.len() > MESSAGE_TEXT_BYTES_MAX {
        return Err(InvalidInput::BadText {
            max: MESSAGE_TEXT_BYTES_MAX,
        });
    }
    Ok(())
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

/// Checks a TTL in milliseconds, as a command carries it: at most [`TTL_S_MAX`] seconds.
/// (The routes take whole seconds, so commands they build are at least 1000 ms.)
pub fn validate_ttl_ms(ttl_ms: u64) -> Result<(), InvalidInput> {
    if ttl_ms == 0 || ttl_ms > TTL_S_MAX * 1000 {
        return Err(InvalidInput::TtlOutOfRange {
            got: ttl_ms / 1000,
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

/// Longest peer address a member may have, in bytes.
pub const MEMBER_ADDR_BYTES_MAX: usize = 255;

/// Checks a new member: a positive id and an address `HOST:PORT`, as `kith serve --listen`
/// takes it.
pub fn validate_member(id: u64, addr: &str) -> Result<(), InvalidInput> {
    if id == 0 {
        return Err(InvalidInput::OutOfRange {
            what: "node id",
            expected: "a positive integer".into(),
        });
    }
    let ok = addr.len() <= MEMBER_ADDR_BYTES_MAX
        && !addr.chars().any(|c| c.is_control() || c.is_whitespace())
        && addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if !ok {
        return Err(InvalidInput::OutOfRange {
            what: "addr",
            expected: format!("HOST:PORT (at most {MEMBER_ADDR_BYTES_MAX} bytes)"),
        });
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
    fn rooms_and_messages_are_bounded() {
        assert!(validate_room("general").is_ok());
        assert!(validate_room("a.b-c_d9").is_ok());
        for bad in ["", "has space", "slash/", "ünï", &"r".repeat(65)] {
            assert!(validate_room(bad).is_err(), "{bad}");
        }
        assert!(validate_message("ann", "hi").is_ok());
        assert!(validate_message(" ", "hi").is_err());
        assert!(validate_message("ann", "").is_err());
        assert!(validate_message("ann", &"x".repeat(4097)).is_err());
        assert!(validate_message(&"a".repeat(65), "hi").is_err());
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
