//! The applied state (openraft's `RaftStateMachine`) and snapshots, on redb.
//!
//! Layout of `state.redb`:
//! - `kv`: key → postcard [`KvEntry`];
//! - `expiry`: (expires_at_ms, key) → () — the TTL index, earliest first;
//! - `events`: revision → postcard [`KvEvent`] — the recent change history watches read;
//! - `ledger`: log index → 32-byte hash — the recent part of the hash chain;
//! - `rooms`: room → postcard [`RoomMeta`]; `messages`: (room, seq) → postcard [`Message`];
//!   `message_ids`: (room, id) → seq — the chat rooms and their idempotency keys;
//! - `jobs`: id → postcard [`Job`]; `job_ready`: (queue, rank, id); `job_timers`:
//!   (at_ms, id); `job_keys`: (queue, idempotency key) → id; `job_stats`: queue → counts —
//!   the job queue and its indexes;
//! - `files`, `chunk_refs`, `shares`, `share_expiry`: file manifests, chunk reference
//!   counts and share links (see `files_tables`);
//! - `meta`: `last_applied`, `membership`, `kv_meta` (revision and clock), `ledger_head`,
//!   `events_compacted` (every event at or below it is gone), `job_next_id` and
//!   `files_version` (the last ids handed out; absent means 0), `snapshot` (the newest
//!   snapshot's metadata).
//!
//! Invariants:
//! - Each batch of entries openraft hands to [`apply`](RaftStateMachine::apply) is applied in
//!   one redb write transaction together with the new `last_applied`, ledger head and
//!   counters, so after a crash they always agree; openraft re-applies anything after.
//! - Applies are not fsynced one by one: the Raft log is the durable record of every
//!   committed entry, so an apply commits with `Durability::None`, and one with
//!   `Durability::Immediate` (which makes all before it durable too) once `DURABLE_EVERY`
//!   has passed or `APPLIES_PER_FSYNC` applies were made since the last. A durable apply
//!   writes every page the applies since the last one dirtied and fsyncs, and the applies
//!   queued behind it wait: over 100,000 keys, puts dirty pages all over the table, and a
//!   durable apply each second stalled 16 writers for about 90 ms every second (their
//!   p99.9). Ten seconds dirty under twice the pages of one (most leaves are touched either
//!   way), so the stall is under twice as long and ten times rarer (docs/BENCHMARKS.md,
//!   fifth pass). A crash rolls `state.redb` back to its last durable apply, and openraft
//!   re-applies the rest from the log (applying is deterministic, so the state, revisions
//!   and ledger come out identical). This holds only while **the log is never purged past
//!   the durable `last_applied`**. openraft purges only entries a snapshot covers (up to
//!   its last log id, minus `max_in_snapshot_log_to_keep`), so the snapshot builder makes
//!   the state it read durable before it returns, and an installed snapshot is committed
//!   durably.
//! - `last_applied` only grows (asserted), except when a snapshot replaces the state.
//! - The ledger links: each applied entry's hash is computed from the hash of the entry
//!   applied before it (or the snapshot's head), in the same transaction.
//! - History is bounded: at most `events_kept` + 255 events and `ledger_kept` + 255 hashes are
//!   retained, and compaction never drops the newest `events_kept` or `ledger_kept` unless
//!   the events pass `events_bytes_kept`. It trims in chunks of a sixteenth of what is kept
//!   (1 to 256, see `history_cutoff`), at cutoffs that depend only on the newest revision or
//!   index, not on how applies were batched. The events also have a byte bound: past
//!   `events_bytes_kept` plus a sixteenth, the oldest go until they are back under it. Their
//!   size is kept in `meta.events_bytes` (recounted after a snapshot install or when absent),
//!   in the same transactions, so every replica trims the same events at the same revision.
//! - Building a snapshot copies nothing. `state.redb` already holds the state, so a build
//!   commits durably (everything up to the snapshot's `last_applied`, and the snapshot's
//!   metadata under `meta.snapshot`) and returns the metadata, which is all openraft keeps of
//!   a built snapshot: it decides from it how far the log may be purged. The data is made
//!   only when openraft asks for the current snapshot (to send it to a follower that is
//!   behind the purged log, and once at startup): after a durable commit (a copy must never
//!   be ahead of what survives a crash), one consistent redb read of the state as it is
//!   then, at or past the promised index, streamed record by record into `snapshot.bin`
//!   (temporary file, fsync, rename; the format is in `snapshot`) and kept until a newer
//!   build makes it stale. So the cost of a copy of the whole state is paid per follower
//!   that needs one, not per 10,000 entries, and never in memory.
//! - A snapshot carries the state and the kept history (events and ledger hashes), so a node
//!   that installs one answers watches and ledger lookups exactly as the others do, and goes
//!   on trimming alike. An install replaces every table and all of `meta` in one durable
//!   transaction that commits only once the whole file has checked out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{decode, encode};
use crate::files_tables::RedbFiles;
use crate::snapshot::{self, SnapshotBuilder};
use crate::{LogGate, StoreError, TypeConfig};
use kith_core::files;
use kith_core::jobs::{self, Job, JobTable, QueueStats};
use kith_core::ledger::{self, Hash};
use kith_core::rooms::{self, Message, RoomMeta, RoomTable};
use kith_core::{kv, Command, KvEntry, KvEvent, KvMeta, KvTable, NodeId, Response};

pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
pub(crate) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(crate) const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
pub(crate) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
pub(crate) const MESSAGE_IDS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("message_ids");
pub(crate) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
pub(crate) const JOB_READY: TableDefinition<(&str, u8, u64), ()> =
    TableDefinition::new("job_ready");
pub(crate) const JOB_TIMERS: TableDefinition<(u64, u64), ()> = TableDefinition::new("job_timers");
pub(crate) const JOB_KEYS: TableDefinition<(&str, &str), u64> = TableDefinition::new("job_keys");
pub(crate) const JOB_STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_stats");
pub(crate) const KEY_JOB_NEXT_ID: &str = "job_next_id";
pub(crate) const KEY_FILES_VERSION: &str = "files_version";

pub(crate) const KEY_LAST_APPLIED: &str = "last_applied";
pub(crate) const KEY_MEMBERSHIP: &str = "membership";
pub(crate) const KEY_KV_META: &str = "kv_meta";
pub(crate) const KEY_LEDGER_HEAD: &str = "ledger_head";
pub(crate) const KEY_EVENTS_COMPACTED: &str = "events_compacted";
/// Bytes the kept watch events take (keys and encoded events), for their byte bound.
pub(crate) const KEY_EVENTS_BYTES: &str = "events_bytes";
/// The metadata of the newest snapshot built or installed (see the module docs).
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";

/// An apply is committed with fsync once this long has passed since the last one that was,
/// or after this many applies without; the others rely on the log (see above). Together they
/// bound what a restart re-applies from the log.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const APPLIES_PER_FSYNC: u64 = 4096;
/// How long an apply waits for the log to make its entries durable before it fails (which
/// stops the node). It waits at all only where the leader alone is a quorum; a log whose
/// writes failed never gets there, a disk that merely stalls should.
const APPLY_LOG_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// History is trimmed in chunks of a sixteenth of what is kept, at most this many: dropping
/// the oldest item on every apply would dirty, and so rewrite, the tables' leftmost pages
/// every time.
const HISTORY_CHUNK_MAX: u64 = 256;
const HISTORY_CHUNK_DIVISOR: u64 = 16;

pub(crate) type SResult<T> = Result<T, StorageError<NodeId>>;
pub(crate) type Membership = StoredMembership<NodeId, BasicNode>;

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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            events_kept: 100_000,
            events_bytes_kept: EVENTS_BYTES_KEPT_DEFAULT,
            ledger_kept: 10_000,
        }
    }
}

/// The newest link of the ledger: the hash after applying the entry at `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHead {
    pub index: u64,
    pub hash: Hash,
}

/// The state machine as openraft drives it. Owned by openraft's core task.
pub struct StateMachineStore {
    db: Arc<Database>,
    dir: PathBuf,
    config: StoreConfig,
    /// Publishes the store revision after every committed apply; watchers wait on it.
    revision_tx: Arc<watch::Sender<u64>>,
    /// Publishes the durable `last_applied` index (0 for none) after every durable commit;
    /// the log's purge waits on it (see `log_store.rs`).
    durable: Arc<watch::Sender<u64>>,
    /// Counts snapshots built by this process, to make snapshot ids unique.
    snapshot_seq: u64,
    /// Test-only fault: the log index whose bytes this node alters before hashing.
    corrupt_ledger_at: Option<u64>,
    fail_apply_at: Option<u64>,
    /// Applies committed without fsync since the last durable one, and when that was.
    applies_since_fsync: u64,
    last_durable: std::time::Instant,
    /// The log's durable index, when opened by `crate::open`: an apply waits until it
    /// covers the entries it applies (see `durability`). `None` for a store opened on its own.
    log_gate: Option<LogGate>,
    /// When the earliest job timer in the committed state is set for (`None`: no timers).
    /// Exact, not a hint: set on open, after a snapshot install, and after every apply that
    /// opened the job tables (only those can change the timers). Lets an apply leave the job
    /// tables closed while no timer is due.
    job_timer_first_ms: Option<u64>,
}

/// Read-only view of the applied state for the node's read paths. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) db: Arc<Database>,
    revision_tx: Arc<watch::Sender<u64>>,
}

/// Backs [`KvTable`] with open redb tables inside one write transaction.
struct RedbKv<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    expiry: Table<'t, (u64, &'static str), ()>,
    events: Table<'t, u64, &'static [u8]>,
    /// What the kept events take (`meta.events_bytes`), updated as events are recorded.
    events_bytes: u64,
    /// Revisions at or below this are gone (`meta.events_compacted`).
    events_compacted: u64,
    events_kept: u64,
    events_bytes_kept: u64,
}

impl RedbKv<'_> {
    /// Drops the oldest events after the event at `revision` was recorded: every one at or
    /// below the count cutoff (`history_cutoff`), then, once the events take more than
    /// `events_bytes_kept` and a sixteenth, as many more as bring them under it. Run after
    /// every recorded event, so what is kept depends only on the sequence of events, never
    /// on how applies were batched: every replica drops the same events at the same revision.
    fn trim_events(&mut self, revision: u64) -> Result<(), StoreError> {
        let cutoff = history_cutoff(revision, self.events_kept);
        if cutoff > self.events_compacted {
            // One by one, for the byte count; a chunk (at most 256) at a time.
            while let Some((oldest, len)) = oldest_event(&self.events)? {
                if oldest > cutoff {
                    break;
                }
                self.events.remove(oldest)?;
                self.events_bytes = self.events_bytes.saturating_sub(event_bytes(len));
            }
            self.events_compacted = cutoff;
        }
        let bytes_kept = self.events_bytes_kept;
        if self.events_bytes > bytes_kept.saturating_add(bytes_kept / 16) {
            while self.events_bytes > bytes_kept {
                let Some((oldest, len)) = oldest_event(&self.events)? else {
                    break;
                };
                self.events.remove(oldest)?;
                self.events_bytes = self.events_bytes.saturating_sub(event_bytes(len));
                self.events_compacted = self.events_compacted.max(oldest);
            }
        }
        Ok(())
    }
}

/// The oldest kept event's revision and encoded size.
fn oldest_event(
    events: &Table<'_, u64, &'static [u8]>,
) -> Result<Option<(u64, usize)>, StoreError> {
    Ok(events.first()?.map(|(k, v)| (k.value(), v.value().len())))
}

/// The bytes one kept event takes in the count `meta.events_bytes` keeps.
fn event_bytes(encoded_len: usize) -> u64 {
    encoded_len as u64 + 8
}

/// Counts what the kept events take, for a store that has no count yet (made before the
/// byte bound, or just installed from a snapshot).
fn count_events_bytes(events: &Table<'_, u64, &'static [u8]>) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for item in events.iter()? {
        let (_, v) = item?;
        total = total.saturating_add(event_bytes(v.value().len()));
    }
    Ok(total)
}

impl KvTable for RedbKv<'_> {
    type Error = StoreError;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        match self.kv.get(key)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), StoreError> {
        self.kv.insert(key, encode(entry)?.as_slice())?;
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.kv.remove(key)?;
        Ok(())
    }
    fn expiry_add(&mut self, at_ms: u64, key: &str) -> Result<(), StoreError> {
        self.expiry.insert((at_ms, key), ())?;
        Ok(())
    }
    fn expiry_remove(&mut self, at_ms: u64, key: &str) -> Result<(), StoreError> {
        self.expiry.remove((at_ms, key))?;
        Ok(())
    }
    fn expiry_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut due = Vec::new();
        for item in self.expiry.iter()? {
            let (k, _) = item?;
            let (at, key) = k.value();
            if at > now_ms || due.len() == limit {
                break;
            }
            due.push((at, key.to_owned()));
        }
        Ok(due)
    }
    fn record(&mut self, event: &KvEvent) -> Result<(), StoreError> {
        let bytes = encode(event)?;
        self.events_bytes = self.events_bytes.saturating_add(event_bytes(bytes.len()));
        if let Some(old) = self.events.insert(event.revision, bytes.as_slice())? {
            self.events_bytes = self
                .events_bytes
                .saturating_sub(event_bytes(old.value().len()));
        }
        self.trim_events(event.revision)
    }
}

/// Backs [`RoomTable`] with open redb tables inside one write transaction.
struct RedbRooms<'t> {
    rooms: Table<'t, &'static str, &'static [u8]>,
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    ids: Table<'t, (&'static str, &'static str), u64>,
}

impl<'t> RedbRooms<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(RedbRooms {
            rooms: txn.open_table(ROOMS)?,
            messages: txn.open_table(MESSAGES)?,
            ids: txn.open_table(MESSAGE_IDS)?,
        })
    }
}

impl RoomTable for RedbRooms<'_> {
    type Error = StoreError;
    fn room(&mut self, name: &str) -> Result<Option<RoomMeta>, StoreError> {
        match self.rooms.get(name)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put_room(&mut self, name: &str, meta: &RoomMeta) -> Result<(), StoreError> {
        self.rooms.insert(name, encode(meta)?.as_slice())?;
        Ok(())
    }
    fn room_count(&mut self) -> Result<u64, StoreError> {
        Ok(self.rooms.len()?)
    }
    fn put_message(&mut self, room: &str, message: &Message) -> Result<(), StoreError> {
        self.messages
            .insert((room, message.seq), encode(message)?.as_slice())?;
        Ok(())
    }
    fn take_message(&mut self, room: &str, seq: u64) -> Result<Option<Message>, StoreError> {
        let taken = match self.messages.remove((room, seq))? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(taken)
    }
    fn id_seq(&mut self, room: &str, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.ids.get((room, id))?.map(|v| v.value()))
    }
    fn put_id(&mut self, room: &str, id: &str, seq: u64) -> Result<(), StoreError> {
        self.ids.insert((room, id), seq)?;
        Ok(())
    }
    fn remove_id(&mut self, room: &str, id: &str) -> Result<(), StoreError> {
        self.ids.remove((room, id))?;
        Ok(())
    }
    fn remove_room(&mut self, name: &str) -> Result<(), StoreError> {
        self.rooms.remove(name)?;
        Ok(())
    }
}

/// Backs [`JobTable`] with open redb tables inside one write transaction.
struct RedbJobs<'t> {
    jobs: Table<'t, u64, &'static [u8]>,
    ready: Table<'t, (&'static str, u8, u64), ()>,
    timers: Table<'t, (u64, u64), ()>,
    keys: Table<'t, (&'static str, &'static str), u64>,
    stats: Table<'t, &'static str, &'static [u8]>,
    /// Next id to hand out; written back to `meta` when the batch commits.
    next_id: u64,
}

impl<'t> RedbJobs<'t> {
    fn open(txn: &'t WriteTransaction, next_id: u64) -> Result<Self, StoreError> {
        Ok(RedbJobs {
            jobs: txn.open_table(JOBS)?,
            ready: txn.open_table(JOB_READY)?,
            timers: txn.open_table(JOB_TIMERS)?,
            keys: txn.open_table(JOB_KEYS)?,
            stats: txn.open_table(JOB_STATS)?,
            next_id,
        })
    }

    /// When the earliest timer is set for, as this transaction sees it.
    fn first_timer_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.timers.first()?.map(|(k, _)| k.value().0))
    }
}

impl JobTable for RedbJobs<'_> {
    type Error = StoreError;
    fn next_id(&mut self) -> Result<u64, StoreError> {
        self.next_id += 1;
        Ok(self.next_id)
    }
    fn get(&mut self, id: u64) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, job: &Job) -> Result<(), StoreError> {
        self.jobs.insert(job.id, encode(job)?.as_slice())?;
        Ok(())
    }
    fn remove(&mut self, id: u64) -> Result<(), StoreError> {
        self.jobs.remove(id)?;
        Ok(())
    }
    fn ready_add(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), StoreError> {
        self.ready.insert((queue, rank, id), ())?;
        Ok(())
    }
    fn ready_remove(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), StoreError> {
        self.ready.remove((queue, rank, id))?;
        Ok(())
    }
    fn ready_first(&mut self, queue: &str) -> Result<Option<u64>, StoreError> {
        let first = self
            .ready
            .range((queue, 0u8, 0u64)..=(queue, u8::MAX, u64::MAX))?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().2);
        Ok(first)
    }
    fn timer_add(&mut self, at_ms: u64, id: u64) -> Result<(), StoreError> {
        self.timers.insert((at_ms, id), ())?;
        Ok(())
    }
    fn timer_remove(&mut self, at_ms: u64, id: u64) -> Result<(), StoreError> {
        self.timers.remove((at_ms, id))?;
        Ok(())
    }
    fn timers_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut due = Vec::new();
        for item in self
            .timers
            .range((0u64, 0u64)..=(now_ms, u64::MAX))?
            .take(limit)
        {
            due.push(item?.0.value());
        }
        Ok(due)
    }
    fn idempotent(&mut self, queue: &str, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.keys.get((queue, key))?.map(|v| v.value()))
    }
    fn idempotent_put(
        &mut self,
        queue: &str,
        key: &str,
        id: Option<u64>,
    ) -> Result<(), StoreError> {
        match id {
            Some(id) => self.keys.insert((queue, key), id)?,
            None => self.keys.remove((queue, key))?,
        };
        Ok(())
    }
    fn stats(&mut self, queue: &str) -> Result<QueueStats, StoreError> {
        match self.stats.get(queue)? {
            Some(v) => Ok(decode(v.value())?),
            None => Ok(QueueStats::default()),
        }
    }
    fn stats_put(&mut self, queue: &str, stats: &QueueStats) -> Result<(), StoreError> {
        self.stats.insert(queue, encode(stats)?.as_slice())?;
        Ok(())
    }
    fn stats_remove(&mut self, queue: &str) -> Result<bool, StoreError> {
        Ok(self.stats.remove(queue)?.is_some())
    }
    fn idempotent_clear(&mut self, queue: &str) -> Result<(), StoreError> {
        // Keys sort by queue first: this queue's keys are one run from (queue, "").
        let mut mine = Vec::new();
        for item in self.keys.range((queue, "")..)? {
            let (k, _) = item?;
            let (q, key) = k.value();
            if q != queue {
                break;
            }
            mine.push(key.to_owned());
        }
        for key in mine {
            self.keys.remove((queue, key.as_str()))?;
        }
        Ok(())
    }
}

/// Where a job sits in the indexes, rebuilt from the job itself on snapshot install.
pub(crate) fn index_job(
    job: &Job,
    ready: &mut Table<'_, (&'static str, u8, u64), ()>,
    timers: &mut Table<'_, (u64, u64), ()>,
    keys: &mut Table<'_, (&'static str, &'static str), u64>,
) -> Result<(), StoreError> {
    use kith_core::jobs::JobState;
    match job.state {
        JobState::Ready => {
            ready.insert(
                (
                    job.queue.as_str(),
                    jobs::PRIORITY_MAX - job.priority,
                    job.id,
                ),
                (),
            )?;
        }
        JobState::Delayed => {
            timers.insert((job.run_at_ms, job.id), ())?;
        }
        JobState::Leased => {
            if let Some(l) = &job.lease {
                timers.insert((l.until_ms, job.id), ())?;
            }
        }
        JobState::Completed | JobState::Cancelled => {
            if let Some(at) = job.expires_ms {
                timers.insert((at, job.id), ())?;
            }
        }
        JobState::Dead => {}
    }
    if let Some(key) = &job.idempotency_key {
        keys.insert((job.queue.as_str(), key.as_str()), job.id)?;
    }
    Ok(())
}

/// Everything at or below this goes from a history whose newest item is `newest` and which
/// keeps `kept`: `newest - kept`, rounded down to a multiple of the chunk. It depends on
/// `newest` alone, so replicas that batch their applies differently keep the same history;
/// a chunk of 1 (`kept` below 32) keeps exactly `kept`.
fn history_cutoff(newest: u64, kept: u64) -> u64 {
    let chunk = (kept / HISTORY_CHUNK_DIVISOR).clamp(1, HISTORY_CHUNK_MAX);
    let exact = newest.saturating_sub(kept);
    exact - exact % chunk
}

pub(crate) fn meta_get<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn meta_put<T: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    table.insert(key, encode(value)?.as_slice())?;
    Ok(())
}

fn sm_read_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        let db = Database::create(dir.join("state.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(EVENTS)?;
        txn.open_table(LEDGER)?;
        txn.open_table(META)?;
        txn.open_table(ROOMS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(MESSAGE_IDS)?;
        txn.open_table(JOBS)?;
        txn.open_table(JOB_READY)?;
        txn.open_table(JOB_TIMERS)?;
        txn.open_table(JOB_KEYS)?;
        txn.open_table(JOB_STATS)?;
        RedbFiles::open(&txn, 0)?;
        txn.commit()?;
        let db = Arc::new(db);
        let revision = read_kv_meta(&db)?.revision;
        let job_timer_first_ms = read_job_timer_first_ms(&db)?;
        // What the file holds at open is durable, whatever commits made it.
        let durable = applied_index(&db.begin_read()?.open_table(META)?)?;
        Ok(StateMachineStore {
            db,
            dir: dir.to_path_buf(),
            config,
            revision_tx: Arc::new(watch::Sender::new(revision)),
            durable: Arc::new(watch::Sender::new(durable)),
            snapshot_seq: 0,
            corrupt_ledger_at: hook_index("KITH_TEST_CORRUPT_LEDGER_INDEX"),
            fail_apply_at: hook_index("KITH_TEST_FAIL_APPLY_INDEX"),
            applies_since_fsync: 0,
            last_durable: std::time::Instant::now(),
            log_gate: None,
            job_timer_first_ms,
        })
    }

    /// From now on, an apply waits until the log holds the entries it applies durably
    /// (see `durability`).
    pub(crate) fn apply_after_log_durable(&mut self, log_gate: LogGate) {
        self.log_gate = Some(log_gate);
    }

    /// Follows the durable `last_applied` index (0 for none), for the log's purge.
    pub(crate) fn durable_applied(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// A read handle sharing this store's database.
    pub fn reader(&self) -> StateReader {
        StateReader {
            db: self.db.clone(),
            revision_tx: self.revision_tx.clone(),
        }
    }

    fn applied_state_inner(&self) -> Result<(Option<LogId<NodeId>>, Membership), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let last_applied = meta_get(&meta, KEY_LAST_APPLIED)?.flatten();
        let membership = meta_get(&meta, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    fn apply_inner(
        &mut self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<Vec<Response>>, StoreError> {
        let mut txn = self.db.begin_write()?;
        self.applies_since_fsync += 1;
        let durable = self.applies_since_fsync >= APPLIES_PER_FSYNC
            || self.last_durable.elapsed() >= DURABLE_EVERY;
        if durable {
            self.applies_since_fsync = 0;
            self.last_durable = std::time::Instant::now();
        } else {
            // The log holds these entries durably; see the module docs for the invariant.
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Engine(e.into()))?;
        }
        let mut responses = Vec::new();
        let (kv_meta, job_timer_first_ms, applied) = {
            let mut meta = txn.open_table(META)?;
            let mut last_applied: Option<LogId<NodeId>> =
                meta_get(&meta, KEY_LAST_APPLIED)?.flatten();
            let mut kv_meta: KvMeta = meta_get(&meta, KEY_KV_META)?.unwrap_or_default();
            let mut head: LedgerHead = meta_get(&meta, KEY_LEDGER_HEAD)?.unwrap_or_default();
            let mut membership: Option<Membership> = None;
            let mut ledger_table = txn.open_table(LEDGER)?;
            let events = txn.open_table(EVENTS)?;
            let events_bytes_stored: Option<u64> = meta_get(&meta, KEY_EVENTS_BYTES)?;
            let events_bytes = match events_bytes_stored {
                Some(bytes) => bytes,
                None => count_events_bytes(&events)?,
            };
            let compacted: u64 = meta_get(&meta, KEY_EVENTS_COMPACTED)?.unwrap_or(0);
            let mut table = RedbKv {
                kv: txn.open_table(KV)?,
                expiry: txn.open_table(EXPIRY)?,
                events,
                events_bytes,
                events_compacted: compacted,
                events_kept: self.config.events_kept,
                events_bytes_kept: self.config.events_bytes_kept,
            };
            // The rooms, jobs and files tables are opened on first use: most batches touch
            // none of them, and opening (then closing, at commit) a table is not free.
            let mut room_table: Option<RedbRooms> = None;
            let mut job_table: Option<RedbJobs> = None;
            let mut job_next_id_stored = 0;
            let mut files_table: Option<RedbFiles> = None;
            let mut files_version_stored = 0;
            for entry in entries {
                assert!(
                    Some(entry.log_id) > last_applied,
                    "applied index must only grow: {:?} after {:?}",
                    entry.log_id,
                    last_applied
                );
                if self.fail_apply_at == Some(entry.log_id.index) {
                    return Err(StoreError::Io(std::io::Error::other(
                        "KITH_TEST_FAIL_APPLY_INDEX: this apply fails on purpose",
                    )));
                }
                last_applied = Some(entry.log_id);
                let mut bytes = encode(&entry)?;
                if self.corrupt_ledger_at == Some(entry.log_id.index) {
                    bytes.push(0xff);
                }
                head = LedgerHead {
                    index: entry.log_id.index,
                    hash: ledger::chain(
                        &head.hash,
                        entry.log_id.index,
                        entry.log_id.leader_id.term,
                        &bytes,
                    ),
                };
                ledger_table.insert(head.index, head.hash.as_slice())?;
                // One entry is a batch of proposals (the leader's group commit), applied in
                // order; it answers once per proposal.
                let mut batch_responses = Vec::new();
                let proposals = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        Vec::new()
                    }
                    EntryPayload::Normal(proposals) => proposals,
                };
                for proposal in proposals {
                    // The clock (and so TTL expiry) applies to every proposal first.
                    let response = kv::apply(&mut table, &mut kv_meta, &proposal)?;
                    let now_ms = kv_meta.now_ms;
                    // Due job timers fire before every proposal. While the job tables are
                    // closed they are unchanged in this transaction, so the cached earliest
                    // timer is exact: if it is not due, `fire_timers` would fire nothing.
                    let timer_due = self.job_timer_first_ms.is_some_and(|at| at <= now_ms);
                    if job_table.is_none()
                        && (timer_due || matches!(proposal.command, Command::Job(_)))
                    {
                        job_next_id_stored = meta_get(&meta, KEY_JOB_NEXT_ID)?.unwrap_or(0);
                        job_table = Some(RedbJobs::open(&txn, job_next_id_stored)?);
                    }
                    if let Some(jobs_open) = job_table.as_mut() {
                        jobs::fire_timers(jobs_open, now_ms)?;
                    }
                    let response = match &proposal.command {
                        Command::Post(post) => {
                            if room_table.is_none() {
                                room_table = Some(RedbRooms::open(&txn)?);
                            }
                            let rooms_open = room_table.as_mut().expect("opened just above");
                            rooms::apply(rooms_open, now_ms, post)?
                        }
                        Command::DeleteRoom { room } => {
                            if room_table.is_none() {
                                room_table = Some(RedbRooms::open(&txn)?);
                            }
                            let rooms_open = room_table.as_mut().expect("opened just above");
                            rooms::delete(rooms_open, room)?
                        }
                        Command::Job(job) => {
                            let jobs_open = job_table.as_mut().expect("opened above for a job");
                            jobs::apply(jobs_open, now_ms, job)?
                        }
                        Command::File(file) => {
                            if files_table.is_none() {
                                files_version_stored =
                                    meta_get(&meta, KEY_FILES_VERSION)?.unwrap_or(0);
                                files_table = Some(RedbFiles::open(&txn, files_version_stored)?);
                            }
                            let files_open = files_table.as_mut().expect("opened just above");
                            files::apply(files_open, now_ms, file)?
                        }
                        _ => response,
                    };
                    batch_responses.push(response);
                }
                responses.push(batch_responses);
            }
            // Bounded history: drop the oldest hashes and events, a chunk at a time.
            let ledger_cutoff = history_cutoff(head.index, self.config.ledger_kept);
            let ledger_oldest = ledger_table.first()?.map(|(k, _)| k.value());
            if ledger_oldest.is_some_and(|oldest| oldest <= ledger_cutoff) {
                ledger_table.retain_in(..=ledger_cutoff, |_, _| false)?;
            }
            // The events were trimmed as they were recorded (`RedbKv::trim_events`).
            if table.events_compacted > compacted {
                meta_put(&mut meta, KEY_EVENTS_COMPACTED, &table.events_compacted)?;
            }
            if events_bytes_stored != Some(table.events_bytes) {
                meta_put(&mut meta, KEY_EVENTS_BYTES, &table.events_bytes)?;
            }
            meta_put(&mut meta, KEY_LAST_APPLIED, &last_applied)?;
            meta_put(&mut meta, KEY_KV_META, &kv_meta)?;
            let mut job_timer_first_ms = self.job_timer_first_ms;
            if let Some(jobs_open) = &job_table {
                if jobs_open.next_id != job_next_id_stored {
                    meta_put(&mut meta, KEY_JOB_NEXT_ID, &jobs_open.next_id)?;
                }
                job_timer_first_ms = jobs_open.first_timer_ms()?;
            }
            if let Some(files_open) = &files_table {
                if files_open.version != files_version_stored {
                    meta_put(&mut meta, KEY_FILES_VERSION, &files_open.version)?;
                }
            }
            meta_put(&mut meta, KEY_LEDGER_HEAD, &head)?;
            if let Some(m) = membership {
                meta_put(&mut meta, KEY_MEMBERSHIP, &m)?;
            }
            (
                kv_meta,
                job_timer_first_ms,
                last_applied.map_or(0, |l| l.index),
            )
        };
        txn.commit()?;
        if durable {
            advance(&self.durable, applied);
        }
        self.job_timer_first_ms = job_timer_first_ms;
        self.revision_tx.send_replace(kv_meta.revision);
        Ok(responses)
    }
}

/// A log index named by a test hook's environment variable; always `None` without the
/// `test-hooks` feature. The hooks: `KITH_TEST_CORRUPT_LEDGER_INDEX` (this entry's ledger
/// hash is computed over altered bytes) and `KITH_TEST_FAIL_APPLY_INDEX` (applying this
/// entry fails, as a broken disk would make it, which stops openraft's core on this node).
#[cfg(feature = "test-hooks")]
fn hook_index(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

#[cfg(not(feature = "test-hooks"))]
fn hook_index(_var: &str) -> Option<u64> {
    None
}

/// Raises the published durable index to `index` (it never goes back).
pub(crate) fn advance(durable: &watch::Sender<u64>, index: u64) {
    durable.send_if_modified(|d| {
        let raised = index > *d;
        *d = (*d).max(index);
        raised
    });
}

/// The `last_applied` index in `meta` (0 for none).
pub(crate) fn applied_index(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, StoreError> {
    let last_applied: Option<LogId<NodeId>> = meta_get(meta, KEY_LAST_APPLIED)?.flatten();
    Ok(last_applied.map_or(0, |l| l.index))
}

fn read_job_timer_first_ms(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read()?;
    let timers = txn.open_table(JOB_TIMERS)?;
    let first = timers.first()?.map(|(k, _)| k.value().0);
    Ok(first)
}

fn read_kv_meta(db: &Database) -> Result<KvMeta, StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta_get(&meta, KEY_KV_META)?.unwrap_or_default())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> SResult<(Option<LogId<NodeId>>, Membership)> {
        self.applied_state_inner().map_err(sm_read_err)
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Vec<Response>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if let (Some(last), Some(gate)) = (entries.last(), &self.log_gate) {
            // The log may still be writing an entry that is already committed: see
            // `durability`, the state machine's gate.
            let index = last.log_id.index;
            if !gate.holds(index, APPLY_LOG_WAIT_MAX).await {
                return Err(sm_write_err(StoreError::Io(std::io::Error::other(
                    format!(
                    "entry {index} is committed but the log has not made it durable within {} s",
                    APPLY_LOG_WAIT_MAX.as_secs()
                ),
                ))));
            }
        }
        self.apply_inner(entries.into_iter()).map_err(sm_write_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.dir.clone(),
            durable: self.durable.clone(),
            seq: self.snapshot_seq,
        }
    }

    /// kith receives snapshots itself (`SnapshotInbox`); this serves openraft's own
    /// chunked receive, which kith does not use, with a file no name refers to.
    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<tokio::fs::File>> {
        snapshot::unlinked_file(&self.dir)
            .map(Box::new)
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> SResult<()> {
        let file = snapshot.into_std().await;
        let (db, dir, owned_meta) = (self.db.clone(), self.dir.clone(), meta.clone());
        // Reading the file and writing the state can take a while; off the runtime's workers.
        let installed =
            tokio::task::spawn_blocking(move || snapshot::install(&db, &dir, &owned_meta, file))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))
                .and_then(|installed| installed)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        advance(&self.durable, meta.last_log_id.map_or(0, |l| l.index));
        self.job_timer_first_ms = installed.job_timer_first_ms;
        self.revision_tx.send_replace(installed.revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        // Copying the state can take a while; off the runtime's workers, as a build was.
        self.snapshot_seq += 1;
        let (db, durable) = (self.db.clone(), self.durable.clone());
        let (dir, seq) = (self.dir.clone(), self.snapshot_seq);
        tokio::task::spawn_blocking(move || snapshot::current_snapshot(&db, &durable, &dir, seq))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))
            .and_then(|current| current)
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// One key as returned by a list.
pub type ListedKey = (String, KvEntry);

/// A page of watch history: matching events, and where the scan stopped.
pub struct EventPage {
    pub events: Vec<KvEvent>,
    /// The next revision to scan from.
    pub next_revision: u64,
}

impl StateReader {
    /// The key's entry, as of the latest applied state.
    pub fn get(&self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let found = match table.get(key)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` keys starting with `prefix`, in key order, from one consistent read;
    /// the flag says whether more keys matched. Also returns the store revision of that read.
    pub fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<ListedKey>, bool, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let kv_meta: KvMeta = meta_get(&meta, KEY_KV_META)?.unwrap_or_default();
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        let mut more = false;
        for item in table.range::<&str>(prefix..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((key.to_owned(), decode(v.value())?));
        }
        Ok((out, more, kv_meta.revision))
    }

    /// The store's revision and clock as of the latest applied state.
    pub fn kv_meta(&self) -> Result<KvMeta, StoreError> {
        read_kv_meta(&self.db)
    }

    /// Every event at or below this revision is gone from this node's history.
    pub fn events_compacted(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta_get(&meta, KEY_EVENTS_COMPACTED)?.unwrap_or(0))
    }

    /// Scans at most `scan_max` events from revision `from` on and returns those whose key
    /// starts with `prefix`, in revision order.
    pub fn events(
        &self,
        from: u64,
        prefix: &str,
        scan_max: usize,
    ) -> Result<EventPage, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut events = Vec::new();
        let mut next_revision = from;
        for item in table.range(from..)?.take(scan_max) {
            let (k, v) = item?;
            next_revision = k.value() + 1;
            let event: KvEvent = decode(v.value())?;
            if event.key.starts_with(prefix) {
                events.push(event);
            }
        }
        Ok(EventPage {
            events,
            next_revision,
        })
    }

    /// A receiver that sees the store revision after every apply.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    /// The ledger's newest link.
    pub fn ledger_head(&self) -> Result<LedgerHead, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta_get(&meta, KEY_LEDGER_HEAD)?.unwrap_or_default())
    }

    /// The ledger hash at `index`, while it is retained; also the oldest retained index.
    pub fn ledger_at(&self, index: u64) -> Result<(Option<Hash>, Option<u64>), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEDGER)?;
        let hash = match table.get(index)? {
            Some(v) => Some(v.value().try_into().map_err(|_| {
                StoreError::Io(std::io::Error::other("ledger hash is not 32 bytes"))
            })?),
            None => None,
        };
        let oldest = table.first()?.map(|(k, _)| k.value());
        Ok((hash, oldest))
    }
}

impl StateReader {
    /// Up to `limit` rooms in name order, starting after `after` (for paging).
    pub fn rooms(&self, after: &str, limit: usize) -> Result<Vec<(String, RoomMeta)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROOMS)?;
        let mut out = Vec::new();
        for item in table.range::<&str>(after..)? {
            let (k, v) = item?;
            if k.value() == after {
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    /// One room's bookkeeping, if it exists.
    pub fn room(&self, name: &str) -> Result<Option<RoomMeta>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROOMS)?;
        let found = match table.get(name)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` kept messages of `room` with seq greater than `after`, in seq order.
    pub fn messages(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        let start = after.saturating_add(1);
        for item in table.range((room, start)..=(room, u64::MAX))?.take(limit) {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }
}

impl StateReader {
    /// One job, if it exists.
    pub fn job(&self, id: u64) -> Result<Option<Job>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let found = match table.get(id)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Every queue with its counts, in name order (at most `limit`).
    pub fn queues(&self, limit: usize) -> Result<Vec<(String, QueueStats)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOB_STATS)?;
        let mut out = Vec::new();
        for item in table.iter()?.take(limit) {
            let (k, v) = item?;
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Whether `queue` has a job ready to claim right now.
    pub fn has_ready(&self, queue: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOB_READY)?;
        let mut range = table.range((queue, 0u8, 0u64)..=(queue, u8::MAX, u64::MAX))?;
        Ok(range.next().is_some())
    }

    /// Up to `limit` jobs matching `filter`, newest first (a scan: for the few hundred jobs a
    /// page or a dead-letter list shows, not for bulk export).
    pub fn jobs_where(
        &self,
        limit: usize,
        filter: impl Fn(&Job) -> bool,
    ) -> Result<Vec<Job>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for item in table.iter()?.rev() {
            let job: Job = decode(item?.1.value())?;
            if filter(&job) {
                out.push(job);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The earliest time-driven change pending: a key's TTL or a job timer.
    pub fn next_timer_ms(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let expiry = txn.open_table(EXPIRY)?.first()?.map(|(k, _)| k.value().0);
        let job = txn
            .open_table(JOB_TIMERS)?
            .first()?
            .map(|(k, _)| k.value().0);
        Ok(match (expiry, job) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}
