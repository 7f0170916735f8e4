//! The fault suite's way to delay or drop this node's outgoing peer messages, since the test
//! kernel has no netem. Compiled in but inert: only a node started with
//! `--enable-fault-injection` accepts settings (through `POST /internal/faults`, served in
//! [`super::server`]), and with both knobs at zero it costs one atomic load per message.
//!
//! Refuses: any effect on incoming messages, and being switched on after start.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

pub use kith_core::FaultSettings;

/// Test-only message delay and loss on this node's outgoing peer messages.
///
/// Written only by the `/internal/faults` handler (which refuses unless `enabled`), read by
/// every [`PeerTransport::call`]. Randomness comes from a SplitMix64 counter rather than a
/// crate: it only decides which test messages to disturb and never reaches a state machine.
#[derive(Debug, Default)]
pub struct FaultLayer {
    /// Fixed at start from `NodeConfig::fault_injection`; nothing can switch it on later.
    enabled: bool,
    /// Fast path: false while both knobs are zero.
    active: AtomicBool,
    delay_ms: AtomicU64,
    drop_per_million: AtomicU32,
    random_state: AtomicU64,
}

impl FaultLayer {
    pub fn new(enabled: bool) -> Self {
        FaultLayer {
            enabled,
            random_state: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            ..Default::default()
        }
    }

    /// Whether this node was started with fault injection allowed.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Applies `settings`; returns false (and changes nothing) unless enabled.
    pub fn set(&self, settings: FaultSettings) -> bool {
        if !self.enabled {
            return false;
        }
        self.delay_ms.store(settings.delay_ms, Ordering::Relaxed);
        self.drop_per_million
            .store(settings.drop_per_million.min(1_000_000), Ordering::Relaxed);
        let active = settings.delay_ms > 0 || settings.drop_per_million > 0;
        self.active.store(active, Ordering::Release);
        true
    }

    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            drop_per_million: self.drop_per_million.load(Ordering::Relaxed),
        }
    }

    /// SplitMix64 over a shared counter: uniform enough for choosing test faults.
    fn next_random(&self) -> u64 {
        let mut z = self
            .random_state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Delays and possibly drops one outgoing message; `Err` means "dropped".
    pub(super) async fn disturb(&self) -> Result<(), ()> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let settings = self.settings();
        if settings.delay_ms > 0 {
            let ms = self.next_random() % (settings.delay_ms + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if (self.next_random() % 1_000_000) < u64::from(settings.drop_per_million) {
            return Err(());
        }
        Ok(())
    }
}
