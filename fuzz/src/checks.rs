//! The `input_checks` target: kith-core's public validators, fed arbitrary text. They never
//! panic, and what they accept keeps the bounds they promise (a key that passes is
//! non-empty, at most `KEY_BYTES_MAX` bytes, without control characters; a parsed hash
//! prints back to the text it came from).

use kith_core::files::{hex, parse_hex, validate_path};
use kith_core::limits::{self, KEY_BYTES_MAX};

/// Checks one input: its first byte picks a validator, the rest (as text) is its input.
pub fn run(data: &[u8]) {
    let Some((tag, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match tag % 6 {
        0 => {
            if limits::validate_key(&text).is_ok() {
                assert!(!text.is_empty() && text.len() <= KEY_BYTES_MAX);
                assert!(!text.chars().any(char::is_control));
            }
        }
        1 => {
            let _ = validate_path(&text);
        }
        2 => {
            if limits::validate_room(&text).is_ok() {
                assert!(text.chars().count() <= limits::ROOM_NAME_CHARS_MAX);
            }
            let _ = limits::validate_message_id(&text);
        }
        3 => {
            let (author, message) = text.split_once('\n').unwrap_or((&text, ""));
            if limits::validate_message(author, message).is_ok() {
                assert!(!message.is_empty() && message.len() <= limits::MESSAGE_TEXT_BYTES_MAX);
            }
        }
        4 => {
            if let Some(hash) = parse_hex(&text) {
                assert_eq!(hex(&hash), text.to_ascii_lowercase());
            }
        }
        _ => {
            let n = text.parse::<u64>().unwrap_or(0);
            if limits::validate_ttl_s(n).is_ok() {
                assert!((1..=limits::TTL_S_MAX).contains(&n));
            }
        }
    }
}

/// One seed per validator.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let hash = hex(&[0xab; 32]);
    [
        ("key", 0, "a/b/c"),
        ("path", 1, "docs/report.pdf"),
        ("room", 2, "general"),
        ("message", 3, "ann\nhello"),
        ("hash", 4, hash.as_str()),
        ("ttl", 5, "3600"),
    ]
    .into_iter()
    .map(|(n, tag, text)| {
        let mut bytes = vec![tag];
        bytes.extend(text.as_bytes());
        (n.to_owned(), bytes)
    })
    .collect()
}
