//! The ledger: a BLAKE3 hash chain over every applied log entry.
//!
//! `h(n) = BLAKE3(h(n-1) ‖ n ‖ term(n) ‖ bytes(n))`, with `h(0)` all zeroes, integers as
//! 8-byte little-endian and `bytes(n)` the entry's postcard encoding. Two replicas with the
//! same head at index `n` applied the same `n` entries in the same order; one flipped bit
//! anywhere in a history changes every later hash.

/// A ledger hash.
pub type Hash = [u8; 32];

/// The hash before the first entry.
pub const GENESIS: Hash = [0; 32];

/// Extends the chain by one entry.
pub fn chain(prev: &Hash, index: u64, term: u64, entry_bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(&index.to_le_bytes());
    h.update(&term.to_le_bytes());
    h.update(entry_bytes);
    *h.finalize().as_bytes()
}

/// Lower-case hex, as the API shows hashes.
pub fn to_hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_hash() {
        let base = chain(&GENESIS, 1, 1, b"entry");
        assert_ne!(base, chain(&GENESIS, 2, 1, b"entry"));
        assert_ne!(base, chain(&GENESIS, 1, 2, b"entry"));
        assert_ne!(base, chain(&GENESIS, 1, 1, b"entrY"));
        assert_ne!(base, chain(&[1; 32], 1, 1, b"entry"));
        assert_eq!(base, chain(&GENESIS, 1, 1, b"entry"));
        assert_eq!(to_hex(&GENESIS).len(), 64);
    }
}
