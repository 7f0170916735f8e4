//! The body of `POST /internal/faults`, shared by the node that serves it and the fault
//! suite that sends it.

use serde::{Deserialize, Serialize};

/// Settings of a node's fault layer (delay and loss on its outgoing peer messages), as `POST /internal/faults` carries them (JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Each outgoing peer message waits a uniformly random 0..=`delay_ms` before it is sent.
    pub delay_ms: u64,
    /// Each outgoing peer message is dropped (not sent; the caller sees a connect failure, as
    /// for a lost SYN) with this probability, in parts per million.
    pub drop_per_million: u32,
}
