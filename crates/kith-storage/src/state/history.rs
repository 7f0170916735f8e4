//! How far the kept history (watch events and ledger hashes) is trimmed: a pure rule on the
//! newest revision or index, so every replica keeps the same history however its applies
//! were batched. Owns the bounds ([`StoreConfig`]) and the count rule; the events' byte
//! bound is enforced in `kv`.

/// History is trimmed in chunks of a sixteenth of what is kept, at most this many: dropping
/// the oldest item on every apply would dirty, and so rewrite, the tables' leftmost pages
/// every time.
const HISTORY_CHUNK_MAX: u64 = 256;
const HISTORY_CHUNK_DIVISOR: u64 = 16;

/// Everything at or below this goes from a history whose newest item is `newest` and which
/// keeps `kept`: `newest - kept`, rounded down to a multiple of the chunk. It depends on
/// `newest` alone, so replicas that batch their applies differently keep the same history;
/// a chunk of 1 (`kept` below 32) keeps exactly `kept`.
pub(crate) fn history_cutoff(newest: u64, kept: u64) -> u64 {
    let chunk = (kept / HISTORY_CHUNK_DIVISOR).clamp(1, HISTORY_CHUNK_MAX);
    let exact = newest.saturating_sub(kept);
    exact - exact % chunk
}

/// Default byte bound on the kept watch events (256 MiB).
pub const EVENTS_BYTES_KEPT_DEFAULT: u64 = 256 * 1024 * 1024;

/// Bounds on the history the state machine keeps.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Change events kept for watches; older revisions answer "compacted".
    pub events_kept: u64,
    /// Bytes the kept change events may take (an event carries its value, so 100,000 events
    /// of 1 MiB values would be 100 GB); the oldest go first past it.
    pub events_bytes_kept: u64,
    /// Ledger hashes kept for `GET /v1/ledger?index=N`.
    pub ledger_kept: u64,
    /// The log index whose bytes this store alters before hashing them into its ledger, so
    /// that its chain departs from the other replicas' there: the `kith dev` playground's
    /// tamper. `None` on every node but one the playground restarted to tamper with.
    pub ledger_tamper_index: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            events_kept: 100_000,
            events_bytes_kept: EVENTS_BYTES_KEPT_DEFAULT,
            ledger_kept: 10_000,
            ledger_tamper_index: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::history_cutoff;

    #[test]
    fn the_cutoff_moves_in_chunks_and_depends_on_the_newest_alone() {
        // Below 32 kept, the chunk is 1: exactly `kept` stay.
        assert_eq!(history_cutoff(10, 20), 0);
        assert_eq!(history_cutoff(25, 20), 5);
        // 10,000 kept: chunks of 256 (a sixteenth is 625, capped).
        assert_eq!(history_cutoff(10_000, 10_000), 0);
        assert_eq!(history_cutoff(10_255, 10_000), 0);
        assert_eq!(history_cutoff(10_256, 10_000), 256);
        assert_eq!(history_cutoff(10_600, 10_000), 512);
        // 1,600 kept: chunks of 100.
        assert_eq!(history_cutoff(1_799, 1_600), 100);
        for newest in [0, 1, 99, 12_345, u64::MAX] {
            let cut = history_cutoff(newest, 1_000);
            assert!(newest.saturating_sub(cut) >= 1_000.min(newest));
            assert!(newest.saturating_sub(cut) < 1_000 + 62);
        }
    }
}
