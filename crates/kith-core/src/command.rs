//! Commands carried in the Raft log and the responses produced by applying them.
//!
//! These types are encoded with postcard both on disk (log entries) and on the peer path, so
//! changing a variant's fields changes the on-disk format: add variants at the end only.

use serde::{Deserialize, Serialize};

/// A state change proposed to the cluster. Only the leader appends commands to the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`. With `if_revision`, only if the key's current modification
    /// revision equals it (`0` means "the key must not exist").
    Put {
        key: String,
        value: Vec<u8>,
        if_revision: Option<u64>,
    },
    /// Remove `key`. With `if_revision`, only if its modification revision equals it.
    Delete {
        key: String,
        if_revision: Option<u64>,
    },
}

impl Command {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Delete { .. } => "delete",
        }
    }
}

/// The outcome of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry carried no command (a leader's blank entry or a membership change).
    None,
    /// A put took effect at `revision`.
    Put { revision: u64 },
    /// A delete was applied; `deleted` says whether the key existed. `revision` is the store's
    /// revision after the command (unchanged when nothing was deleted).
    Delete { revision: u64, deleted: bool },
    /// A compare-and-set did not match. `current` is the key's modification revision (`0` when
    /// absent); nothing changed.
    RevisionMismatch { current: u64 },
}
