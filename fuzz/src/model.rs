//! Arbitrary command sequences for the state machine, and [`KvModel`], the plain in-memory
//! key-value store they are checked against.
//!
//! The generator draws from small alphabets (four keys, two rooms, two queues, two paths,
//! job ids 1–4) so that commands collide: compare-and-set on a key just written, a TTL that
//! runs out between two writes, a job completed after its lease passed. The leader's clock
//! usually moves forward, and sometimes back, as after a change of leader.
//!
//! The model knows revisions as etcd counts them (one counter, one step per change), the
//! compare-and-set rule, and TTL expiry by the store's clock (the largest `now_ms` applied,
//! due keys expired oldest first before each command). It refuses everything else: rooms,
//! jobs and files are checked only by comparing two stores with each other.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use kith_core::files::{ChunkRef, FileCommand, NewFile};
use kith_core::jobs::{Enqueue, JobCommand};
use kith_core::kv::EXPIRE_PER_APPLY_MAX;
use kith_core::rooms::Post;
use kith_core::{Command, EventKind, Proposal, Response};

const KEYS: [&str; 4] = ["a", "a/b", "b", "c"];
const ROOMS: [&str; 2] = ["general", "r.2"];
const QUEUES: [&str; 2] = ["q", "mail"];
const PATHS: [&str; 2] = ["docs/a.txt", "b"];
const WORKERS: [&str; 2] = ["w1", "w2"];
/// Where the leader's clock starts: a real epoch time, so that saturating sums matter.
const CLOCK_START_MS: u64 = 1_700_000_000_000;

/// The leader's clock as the generator moves it.
pub struct Clock {
    now_ms: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            now_ms: CLOCK_START_MS,
        }
    }
}

impl Clock {
    /// Mostly forward by up to 3 s; one step in eight goes back by up to 2 s (a new leader
    /// whose clock is behind), one in sixteen jumps by an arbitrary amount.
    fn tick(&mut self, u: &mut Unstructured) -> Result<u64> {
        self.now_ms = match u.int_in_range(0..=15u8)? {
            0 => self.now_ms.saturating_sub(u.int_in_range(0..=2_000)?),
            1 => self.now_ms.saturating_add(u.arbitrary::<u32>()?.into()),
            _ => self.now_ms.saturating_add(u.int_in_range(0..=3_000)?),
        };
        Ok(self.now_ms)
    }
}

fn pick<'a>(u: &mut Unstructured, from: &[&'a str]) -> Result<&'a str> {
    Ok(*u.choose(from)?)
}

/// A key: usually one of [`KEYS`]; sometimes one the public API would refuse (empty, with
/// a control character, or arbitrary), which a forwarded or replayed entry may still carry.
fn key(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=15u8)? {
        0 => String::new(),
        1 => "a\u{1b}[2J".into(),
        2 => u.arbitrary::<String>()?,
        _ => pick(u, &KEYS)?.into(),
    })
}

fn small_revision(u: &mut Unstructured) -> Result<Option<u64>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Some(u.int_in_range(0..=12)?),
        1 => Some(u.arbitrary()?),
        _ => None,
    })
}

fn ttl_ms(u: &mut Unstructured) -> Result<Option<u64>> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Some(u.int_in_range(0..=6_000)?),
        1 => Some(u.arbitrary()?),
        _ => None,
    })
}

fn text(u: &mut Unstructured, from: &[&str]) -> Result<String> {
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        pick(u, from).map(str::to_owned)
    }
}

fn job(u: &mut Unstructured) -> Result<JobCommand> {
    let id = u.int_in_range(1..=4)?;
    let attempt = u.int_in_range(0..=3)?;
    Ok(match u.int_in_range(0..=6u8)? {
        0 => JobCommand::Enqueue(Enqueue {
            queue: text(u, &QUEUES)?,
            payload: "{}".into(),
            priority: u.int_in_range(0..=10)?,
            run_at_ms: if u.ratio(1, 4)? { u.arbitrary()? } else { 0 },
            delay_ms: u.int_in_range(0..=4_000)?,
            max_attempts: u.int_in_range(0..=3)?,
            timeout_ms: u.int_in_range(0..=5_000)?,
            idempotency_key: if u.ratio(1, 2)? {
                Some(text(u, &["k1", "k2"])?)
            } else {
                None
            },
            retention_ms: u.int_in_range(0..=10_000)?,
        }),
        1 => JobCommand::Claim {
            queue: text(u, &QUEUES)?,
            lease_ms: u.int_in_range(0..=5_000)?,
            worker: text(u, &WORKERS)?,
        },
        2 => JobCommand::Heartbeat {
            id,
            attempt,
            lease_ms: u.arbitrary()?,
        },
        3 => JobCommand::Complete {
            id,
            attempt,
            result: None,
            retention_ms: u.arbitrary()?,
        },
        4 => JobCommand::Fail {
            id,
            attempt,
            error: "boom".into(),
        },
        5 => JobCommand::Retry { id },
        _ => JobCommand::Cancel {
            id,
            retention_ms: u.arbitrary()?,
        },
    })
}

fn file(u: &mut Unstructured) -> Result<FileCommand> {
    let path = text(u, &PATHS)?;
    Ok(match u.int_in_range(0..=3u8)? {
        0 => {
            let chunks = (0..u.int_in_range(0..=3)?)
                .map(|_| -> Result<ChunkRef> {
                    Ok(ChunkRef {
                        hash: [u.int_in_range(0..=3)?; 32],
                        size: u.arbitrary()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            FileCommand::Put(NewFile {
                path,
                size: u.arbitrary()?,
                blake3: [1; 32],
                content_type: "text/plain".into(),
                chunk_bytes: u.arbitrary()?,
                chunks,
            })
        }
        1 => FileCommand::Delete { path },
        2 => FileCommand::Share {
            token: text(u, &["t1", "t2"])?,
            path,
            ttl_ms: u.arbitrary()?,
        },
        _ => FileCommand::Unshare {
            token: text(u, &["t1", "t2"])?,
        },
    })
}

/// One command, most often a key-value one.
pub fn command(u: &mut Unstructured) -> Result<Command> {
    Ok(match u.int_in_range(0..=11u8)? {
        0..=4 => Command::Put {
            key: key(u)?,
            value: u.arbitrary::<Vec<u8>>()?.into_iter().take(64).collect(),
            if_revision: small_revision(u)?,
            ttl_ms: ttl_ms(u)?,
        },
        5 | 6 => Command::Delete {
            key: key(u)?,
            if_revision: small_revision(u)?,
        },
        7 => Command::Expire,
        8 => Command::Post(Post {
            room: text(u, &ROOMS)?,
            author: text(u, &["ann", "bob"])?,
            text: "hi".into(),
            id: text(u, &["m1", "m2", "m3"])?,
            keep: u.int_in_range(0..=3)?,
            rooms_max: u.int_in_range(0..=2)?,
        }),
        9 | 10 => Command::Job(job(u)?),
        _ => Command::File(file(u)?),
    })
}

/// One log entry's payload: `None` for a blank entry, else a batch of proposals.
pub fn batch(u: &mut Unstructured, clock: &mut Clock) -> Result<Option<Vec<Proposal>>> {
    if u.ratio(1, 16)? {
        return Ok(None);
    }
    let len = u.int_in_range(1..=4)?;
    (0..len)
        .map(|_| {
            Ok(Proposal {
                now_ms: clock.tick(u)?,
                command: command(u)?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// One key as the model holds it; the fields mean what [`kith_core::KvEntry`]'s do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

/// One change, as a watcher sees it: its revision, its key and what happened.
pub type ModelEvent = (u64, String, ModelChange);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelChange {
    Put(Vec<u8>),
    Delete,
    Expire,
}

/// The key-value part of the state machine as a plain map.
#[derive(Debug, Default)]
pub struct KvModel {
    pub keys: BTreeMap<String, ModelEntry>,
    pub revision: u64,
    pub now_ms: u64,
    pub events: Vec<ModelEvent>,
}

impl KvModel {
    /// Applies one proposal and returns what the store must answer for it, or `None` for a
    /// command that is not a key-value one (its answer is not the model's to predict).
    pub fn apply(&mut self, proposal: &Proposal) -> Option<Response> {
        self.now_ms = self.now_ms.max(proposal.now_ms);
        self.expire_due();
        if let Some(answer) = invalid_answer(&proposal.command) {
            return Some(answer);
        }
        match &proposal.command {
            Command::Put {
                key,
                value,
                if_revision,
                ttl_ms,
            } => Some(self.put(key, value, *if_revision, *ttl_ms)),
            Command::Delete { key, if_revision } => Some(self.delete(key, *if_revision)),
            _ => None,
        }
    }

    fn current_revision(&self, key: &str) -> u64 {
        self.keys.get(key).map_or(0, |e| e.mod_revision)
    }

    fn put(
        &mut self,
        key: &str,
        value: &[u8],
        if_revision: Option<u64>,
        ttl: Option<u64>,
    ) -> Response {
        let current = self.current_revision(key);
        if if_revision.is_some_and(|r| r != current) {
            return Response::RevisionMismatch { current };
        }
        self.revision += 1;
        let revision = self.revision;
        let (create_revision, version) = match self.keys.get(key) {
            Some(old) => (old.create_revision, old.version + 1),
            None => (revision, 1),
        };
        let entry = ModelEntry {
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
            version,
            expires_at_ms: ttl.map(|t| self.now_ms.saturating_add(t)),
        };
        self.keys.insert(key.to_owned(), entry);
        self.events
            .push((revision, key.to_owned(), ModelChange::Put(value.to_vec())));
        Response::Put { revision }
    }

    fn delete(&mut self, key: &str, if_revision: Option<u64>) -> Response {
        let current = self.current_revision(key);
        if if_revision.is_some_and(|r| r != current) {
            return Response::RevisionMismatch { current };
        }
        let deleted = self.keys.remove(key).is_some();
        if deleted {
            self.revision += 1;
            self.events
                .push((self.revision, key.to_owned(), ModelChange::Delete));
        }
        Response::Delete {
            revision: self.revision,
            deleted,
        }
    }

    /// Every key whose expiry is at or before the clock goes, earliest expiry first (ties
    /// by key), each at its own revision; at most [`EXPIRE_PER_APPLY_MAX`] per proposal.
    fn expire_due(&mut self) {
        let mut due: Vec<(u64, String)> = self
            .keys
            .iter()
            .filter_map(|(k, e)| e.expires_at_ms.map(|at| (at, k.clone())))
            .filter(|(at, _)| *at <= self.now_ms)
            .collect();
        due.sort();
        for (_, key) in due.into_iter().take(EXPIRE_PER_APPLY_MAX) {
            self.keys.remove(&key);
            self.revision += 1;
            self.events.push((self.revision, key, ModelChange::Expire));
        }
    }
}

/// What the state machine answers for a command it must refuse, or `None` when it applies
/// the command. This is the one place that knows which input is invalid: a put or delete
/// that breaks an input rule at the ceiling bounds (whatever the leader's own limits were)
/// applies as `Rejected` and changes nothing.
fn invalid_answer(command: &Command) -> Option<Response> {
    match command {
        Command::Put { .. } | Command::Delete { .. } => command
            .validate(&kith_core::limits::Limits::CEILING)
            .err()
            .map(|e| Response::Rejected {
                reason: e.to_string(),
            }),
        _ => None,
    }
}

/// The watch event a store recorded, in the model's terms.
pub fn change_of(kind: &EventKind) -> ModelChange {
    match kind {
        EventKind::Put { value, .. } => ModelChange::Put(value.clone()),
        EventKind::Delete => ModelChange::Delete,
        EventKind::Expire => ModelChange::Expire,
    }
}
