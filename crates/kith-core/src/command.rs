//! Commands carried in the Raft log and the responses produced by applying them.
//!
//! These types are encoded with postcard both on disk (log entries) and on the peer path, so
//! changing a variant's fields changes the on-disk format: add variants at the end only.

use serde::{Deserialize, Serialize};

/// What the leader appends to the log: a command stamped with the leader's clock.
///
/// `now_ms` is the only notion of time a state machine ever sees (TTL expiry, leases). It is
/// read once, on the leader, when the command is proposed; every replica applies the same
/// value, so every replica expires the same keys at the same revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Milliseconds since the Unix epoch on the proposing leader's clock.
    pub now_ms: u64,
    pub command: Command,
}

/// A state change proposed to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`. With `if_revision`, only if the key's current modification
    /// revision equals it (`0` means "the key must not exist"). With `ttl_ms`, the key is
    /// deleted once the cluster's clock passes `now_ms + ttl_ms`.
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        if_revision: Option<u64>,
        ttl_ms: Option<u64>,
    },
    /// Remove `key`. With `if_revision`, only if its modification revision equals it.
    Delete {
        key: String,
        if_revision: Option<u64>,
    },
    /// Carries nothing but the leader's clock: keys whose time has come expire. The leader
    /// proposes it when a key is due and no other write would carry the time.
    Expire,
    /// Post a message to a chat room.
    Post(crate::rooms::Post),
    /// A job-queue command.
    Job(crate::jobs::JobCommand),
    /// A files command: commit or delete a manifest, create or revoke a share link.
    File(crate::files::FileCommand),
    /// Delete a chat room: its kept messages, their ids and its slot under `rooms_max`.
    DeleteRoom { room: String },
}

/// The outcome of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry carried no client-visible result (a blank entry, a membership change, an
    /// expiry tick).
    None,
    /// A put took effect at `revision`.
    Put { revision: u64 },
    /// A delete was applied; `deleted` says whether the key existed. `revision` is the store's
    /// revision after the command (unchanged when nothing was deleted).
    Delete { revision: u64, deleted: bool },
    /// A compare-and-set did not match. `current` is the key's modification revision (`0` when
    /// absent); nothing changed.
    RevisionMismatch { current: u64 },
    /// A message was stored at `seq` in its room — or, with `duplicate`, had been already.
    Posted {
        seq: u64,
        id: String,
        duplicate: bool,
    },
    /// A new room was refused: the cluster already holds `max` rooms.
    RoomsFull { max: u64 },
    /// What a job command produced.
    Job(crate::jobs::JobOutcome),
    /// What a files command produced.
    File(crate::files::FileOutcome),
    /// What deleting a room did: `deleted` is false when there was no such room.
    RoomDeleted { deleted: bool, messages: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Put` as it was encoded before its value was marked as bytes: logs, snapshots and
    /// peers written by an older kith must still decode.
    #[derive(Serialize)]
    enum OldCommand {
        Put {
            key: String,
            value: Vec<u8>,
            if_revision: Option<u64>,
            ttl_ms: Option<u64>,
        },
    }

    #[test]
    fn a_value_marked_as_bytes_keeps_the_postcard_encoding() {
        let value: Vec<u8> = (0..=255).collect();
        let old = OldCommand::Put {
            key: "k".into(),
            value: value.clone(),
            if_revision: Some(3),
            ttl_ms: None,
        };
        let new = Command::Put {
            key: "k".into(),
            value,
            if_revision: Some(3),
            ttl_ms: None,
        };
        let old_bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(postcard::to_allocvec(&new).unwrap(), old_bytes);
        assert_eq!(postcard::from_bytes::<Command>(&old_bytes).unwrap(), new);
    }
}
