//! Commands carried in the Raft log and the responses produced by applying them.
//!
//! These types are encoded with postcard both on disk (log entries) and on the peer path, so
//! changing a variant's fields changes the on-disk format: add variants at the end only.

use serde::{Deserialize, Serialize};

use crate::limits::{self, InvalidInput, Limits};

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
    /// Create or revoke a client token.
    Token(crate::auth::TokenCommand),
    /// A key-value transaction as etcd's v3 API means it (also its lone put and
    /// delete-range): compares, then one branch, every change at one revision.
    Txn(crate::txn::Txn),
    /// Grant, revoke or keep alive a lease (etcd's): keys attached to it go when it ends.
    Lease(crate::lease::LeaseCommand),
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
    /// The entry's command broke an input rule (see [`Command::validate`]) and changed
    /// nothing. The leader validates before proposing, so only an entry that bypassed it
    /// (a bug, or a hostile peer) is answered this way, identically on every replica.
    Rejected { reason: String },
    /// What deleting a room did: `deleted` is false when there was no such room.
    RoomDeleted { deleted: bool, messages: u64 },
    /// What a token command did.
    Token(crate::auth::TokenOutcome),
    /// What a transaction did; `revision` is the store's revision after it (unchanged when
    /// it changed nothing).
    Txn {
        revision: u64,
        outcome: crate::txn::TxnOutcome,
    },
    /// What a lease command did; `revision` is the store's revision after it.
    Lease {
        revision: u64,
        outcome: crate::lease::LeaseOutcome,
    },
}

impl Command {
    /// Checks everything the command carries against `limits`, with the same rules and
    /// errors as the public routes. The leader calls it with its configured limits before
    /// proposing; the state machine with [`Limits::CEILING`] before applying.
    pub fn validate(&self, limits: &Limits) -> Result<(), InvalidInput> {
        match self {
            Command::Put {
                key,
                value,
                if_revision: _,
                ttl_ms,
            } => {
                limits::validate_key(key)?;
                limits::validate_value(value, limits.value_bytes_max)?;
                match ttl_ms {
                    Some(ttl_ms) => limits::validate_ttl_ms(*ttl_ms),
                    None => Ok(()),
                }
            }
            Command::Delete {
                key,
                if_revision: _,
            } => limits::validate_key(key),
            Command::Expire => Ok(()),
            Command::Post(post) => post.validate(),
            Command::Job(job) => job.validate(limits),
            Command::File(file) => file.validate(limits),
            Command::DeleteRoom { room } => limits::validate_room(room),
            Command::Token(token) => token.validate().map_err(|message| InvalidInput::Refused {
                message,
                too_large: false,
            }),
            Command::Txn(txn) => txn.validate(limits.value_bytes_max),
            Command::Lease(lease) => lease.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{FileCommand, MemFiles};
    use crate::jobs::{Enqueue, JobCommand, MemJobs};
    use crate::kv::{KvMeta, MemTable};
    use crate::rooms::{MemRooms, Post};

    const LIMITS: Limits = Limits {
        value_bytes_max: 1000,
        job_payload_bytes_max: 100,
        file_bytes_max: 1 << 20,
    };

    fn put(key: &str, value_bytes: usize, ttl_ms: Option<u64>) -> Command {
        Command::Put {
            key: key.into(),
            value: vec![b'v'; value_bytes],
            if_revision: None,
            ttl_ms,
        }
    }

    fn post(room: &str, author: &str, text: &str, id: &str) -> Command {
        Command::Post(Post {
            room: room.into(),
            author: author.into(),
            text: text.into(),
            id: id.into(),
            keep: 10,
            rooms_max: 10,
        })
    }

    fn enqueue(queue: &str, payload_bytes: usize, priority: u8, delay_ms: u64) -> Command {
        Command::Job(JobCommand::Enqueue(Enqueue {
            queue: queue.into(),
            payload: "x".repeat(payload_bytes),
            priority,
            run_at_ms: 0,
            delay_ms,
            max_attempts: 3,
            timeout_ms: 60_000,
            idempotency_key: None,
            retention_ms: 0,
        }))
    }

    /// What the public routes refuse, `validate` refuses too, with the same error kinds.
    #[test]
    fn validation_refuses_what_the_public_api_refuses() {
        let good = [
            put("a/b", 1000, Some(1000)),
            Command::Delete {
                key: "k".into(),
                if_revision: Some(u64::MAX),
            },
            Command::Expire,
            post("general", "ann", "hi", "m1"),
            enqueue("q", 100, 9, 0),
        ];
        for command in &good {
            assert_eq!(command.validate(&LIMITS), Ok(()), "{command:?}");
        }
        let too_large = [put("k", 1001, None), enqueue("q", 101, 5, 0)];
        for command in &too_large {
            let e = command.validate(&LIMITS).unwrap_err();
            assert!(e.is_too_large(), "{command:?}: {e}");
        }
        let bad = [
            put("", 1, None),
            put("a\u{1b}[31mb", 1, None),
            put(&"k".repeat(100_000), 1, None),
            put("k", 1, Some(0)),
            put("k", 1, Some(u64::MAX)),
            Command::Delete {
                key: String::new(),
                if_revision: None,
            },
            post("no room", "ann", "hi", "m1"),
            post("r", "", "hi", "m1"),
            post("r", "ann", "", "m1"),
            post("r", "ann", "hi", "bad id"),
            enqueue("", 1, 5, 0),
            enqueue("q", 1, 10, 0),
            enqueue("q", 1, 5, u64::MAX),
            Command::Job(JobCommand::Claim {
                queue: "q".into(),
                lease_ms: u64::MAX,
                worker: "w".into(),
            }),
            Command::Job(JobCommand::Claim {
                queue: "q".into(),
                lease_ms: 1000,
                worker: "\u{7}".into(),
            }),
            Command::File(FileCommand::Delete {
                path: "../etc".into(),
            }),
            Command::File(FileCommand::Share {
                token: "0".repeat(32),
                path: "f".into(),
                ttl_ms: u64::MAX,
            }),
            Command::File(FileCommand::Unshare {
                token: "not-a-token!".into(),
            }),
            Command::File(FileCommand::Unshare {
                token: "a".repeat(65),
            }),
        ];
        for command in &bad {
            let e = command.validate(&LIMITS).unwrap_err();
            assert!(!e.is_too_large(), "{command:?}: {e}");
        }
    }

    /// An entry that reached the log without validation (a hostile peer, a bug) applies as
    /// `Rejected` on every replica and changes nothing.
    #[test]
    fn an_entry_that_bypassed_validation_applies_as_rejected_and_changes_nothing() {
        let rejected =
            |r: Response| matches!(r, Response::Rejected { reason } if !reason.is_empty());
        let (mut kv, mut meta) = (MemTable::default(), KvMeta::default());
        for command in [
            put("", 1, None),
            put("a\u{1b}b", 1, None),
            put(&"k".repeat(100_000), 1, None),
            put("k", crate::limits::VALUE_BYTES_CEILING + 1, None),
            put("k", 1, Some(u64::MAX)),
        ] {
            let proposal = Proposal { now_ms: 5, command };
            assert!(rejected(
                crate::kv::apply(&mut kv, &mut meta, &proposal).unwrap()
            ));
        }
        assert!(kv.keys.is_empty() && kv.events.is_empty() && kv.expiry.is_empty());
        assert_eq!(meta.revision, 0);

        let mut rooms = MemRooms::default();
        let Command::Post(bad_post) = post("r", "ann", &"x".repeat(5000), "m1") else {
            unreachable!()
        };
        assert!(rejected(
            crate::rooms::apply(&mut rooms, 5, &bad_post).unwrap()
        ));
        assert!(rooms.rooms.is_empty() && rooms.messages.is_empty() && rooms.ids.is_empty());

        let mut jobs = MemJobs::default();
        let bad_jobs = [
            enqueue("q", crate::limits::JOB_PAYLOAD_BYTES_CEILING + 1, 5, 0),
            enqueue("q", 1, 200, 0),
            enqueue("q", 1, 5, u64::MAX),
        ];
        for command in bad_jobs {
            let Command::Job(job) = command else {
                unreachable!()
            };
            assert!(rejected(crate::jobs::apply(&mut jobs, 5, &job).unwrap()));
        }
        assert!(jobs.jobs.is_empty() && jobs.stats.is_empty() && jobs.next == 0);

        let mut files = MemFiles::default();
        let share = FileCommand::Share {
            token: "z z".into(),
            path: "f".into(),
            ttl_ms: 1000,
        };
        assert!(rejected(
            crate::files::apply(&mut files, 5, &share).unwrap()
        ));
        assert!(files.shares.is_empty());
    }

    /// The largest values a command can carry never overflow apply's arithmetic.
    #[test]
    fn extreme_numbers_apply_without_panicking() {
        let (mut kv, mut meta) = (MemTable::default(), KvMeta::default());
        let proposal = Proposal {
            now_ms: u64::MAX,
            command: Command::Put {
                key: "k".into(),
                value: vec![],
                if_revision: Some(u64::MAX),
                ttl_ms: None,
            },
        };
        assert_eq!(
            crate::kv::apply(&mut kv, &mut meta, &proposal),
            Ok(Response::RevisionMismatch { current: 0 })
        );
        let mut jobs = MemJobs::default();
        let Command::Job(mut job) = enqueue("q", 1, 5, 0) else {
            unreachable!()
        };
        if let JobCommand::Enqueue(e) = &mut job {
            e.run_at_ms = u64::MAX;
            e.retention_ms = u64::MAX;
        }
        crate::jobs::fire_timers(&mut jobs, u64::MAX).unwrap();
        assert!(matches!(
            crate::jobs::apply(&mut jobs, u64::MAX, &job),
            Ok(Response::Job(_))
        ));
        let mut rooms = MemRooms::default();
        rooms.rooms.insert(
            "r".into(),
            crate::rooms::RoomMeta {
                last_seq: u64::MAX,
                first_seq: 1,
                last_activity_ms: 0,
            },
        );
        let Command::Post(p) = post("r", "ann", "hi", "m1") else {
            unreachable!()
        };
        assert!(rejected_reason(
            crate::rooms::apply(&mut rooms, u64::MAX, &p).unwrap()
        ));
    }

    fn rejected_reason(r: Response) -> bool {
        matches!(r, Response::Rejected { .. })
    }

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
