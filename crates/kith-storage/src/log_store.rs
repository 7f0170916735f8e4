//! The durable Raft log (openraft's `RaftLogStorage`), written by one storage thread into
//! the segment files of [`crate::wal`] (`raft-log/`).
//!
//! ```text
//!  RaftCore ──append(entries, LogFlushed)──▶ pending (in memory) ──▶ readers see them at once
//!      │                                   │
//!      │  save_vote / truncate / purge      ▼ bounded channel (WRITE_QUEUE_MAX jobs)
//!      └──── (awaits its reply) ─────▶ storage thread: drain everything queued, write it
//!                                        in order, ONE fdatasync for all the appends, then
//!                                        per job in order: drop the entries from `pending`,
//!                                        call LogFlushed / reply
//! ```
//!
//! Why a thread: an fsync blocks. Done inside `append` it stalled a tokio worker (the node
//! has two) for every log write; the storage thread keeps both workers serving HTTP and
//! replication while the disk works, and one fsync covers every job queued meanwhile (group
//! commit). `LogFlushed` is openraft 0.9's storage-v2 contract for exactly this: `append`
//! returns once the entries are readable, the callback reports durability.
//!
//! Invariants:
//! - An append is reported complete (`LogFlushed`) only after its records were fsynced:
//!   this is what makes a quorum acknowledgement durable. One exception, in a log opened by
//!   [`crate::open`]: the elected leader's own appends are reported as soon as they are
//!   queued, behind two gates on `durable_index` (see `durability`, the one place the rule
//!   is explained).
//! - `durable_index` only covers what an fsync made durable; after a failed write the
//!   storage thread writes nothing more and the index never moves again, and `append` fails
//!   (stopping the Raft core), so no entry whose write may have failed passes a gate.
//! - Entries are readable as soon as `append` returns (openraft's contract): they sit in
//!   `pending` until they are durable, and a read takes `pending` *before* it looks at the
//!   files, so an entry is always in one or the other.
//! - Jobs run in the order they were queued, so a truncate or purge never overtakes an append
//!   queued before it. `save_vote`, `truncate` and `purge` return only once durable (Raft
//!   §5.1: a server must not vote twice in one term, even across a crash).
//! - A restarted node never resumes leadership without an election: `read_vote` hands
//!   openraft the stored vote with `committed` cleared (same term, same candidate, so it
//!   never lets the node vote twice in a term). openraft 0.9 otherwise restores a node that
//!   led before the crash as leader at once, reusing its old no-op entry, so its read index
//!   is `max(old no-op, committed)` — and `committed` restarts from the state machine's
//!   *durable* `last_applied`, which trails what the node acknowledged before the crash
//!   (applies are not fsynced one by one; see `state::machine`). A linearizable read could
//!   then miss an acknowledged write; the fault suite's rolling restart caught exactly that.
//!   After an election the new leader's no-op comes after every acknowledged entry.
//! - The committed index is not persisted at all (openraft treats it as optional).
//! - The log is never purged past the state machine's *durable* `last_applied` (when the
//!   store was opened with [`crate::open`], which links the two). openraft 0.9 purges only
//!   what a snapshot covers, but when a follower installs a snapshot it sends the purge to
//!   the log at the same time as the install to the state machine, without waiting for it.
//!   A crash between the two left a log purged past a state that had not moved: the node
//!   could never start again (openraft asserts it), and the entries it had acknowledged were
//!   gone. So `purge` waits (at most `PURGE_WAIT_MAX`) until the state machine reports the
//!   purge point durable; the fault suite's frequent snapshots found this.
//!
//! A data directory from before the segment files (`raft-log.redb`) is converted once, at
//! open: its vote, purge point and entries are written as segments, made durable, and only
//! then is the old file renamed to `raft-log.redb.converted`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{decode, encode};
use crate::wal::{Index, Wal};
use crate::{StoreError, TypeConfig};
use kith_core::NodeId;

/// The tables of the log's redb file before the segment files (read once, to convert it).
const OLD_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const OLD_META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Jobs the storage thread's queue holds; `append` waits (asynchronously) when it is full.
const WRITE_QUEUE_MAX: usize = 1024;
/// How long a purge waits for the state machine to make the purge point durable before it
/// fails (which stops the node rather than leave a log it cannot restart from).
const PURGE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// Jobs one group (one fsync) takes at most, so one group stays bounded in size and time.
const GROUP_JOBS_MAX: usize = 256;

type SResult<T> = Result<T, StorageError<NodeId>>;
type Pending = Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>;

/// How many appends were queued and how many have been through their commit (failed ones
/// included), since the store opened. `queued == flushed` means the disk is idle for the log.
#[derive(Clone, Copy, Debug, Default)]
struct AppendProgress {
    queued: u64,
    flushed: u64,
}

/// Handle on the log. Cheap to clone; clones share one database and one storage thread.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the durable entries lie, the vote and the purge point; written by the storage
    /// thread's [`Wal`].
    index: Arc<RwLock<Index>>,
    /// Appended entries whose transaction has not committed yet, by index. Inserted by
    /// `append` (before it queues the job), removed by the storage thread after the commit.
    pending: Pending,
    /// The storage thread's queue. `None` only while `Inner` is dropped (closing it stops
    /// the thread).
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Written by `append` (queued) and the storage thread (flushed); read by
    /// [`LogStore::wait_idle_after`].
    progress: Arc<watch::Sender<AppendProgress>>,
    /// Highest committed index openraft has reported; written by `save_committed`, read by
    /// `/v1/health`. Monotonic while the process lives.
    committed_index: AtomicU64,
    /// The state machine's durable `last_applied` index, which a purge must not pass (see
    /// the module docs). `None` for a log opened on its own.
    durable_applied: Option<watch::Receiver<u64>>,
    /// This node's id once [`LogStore::overlap_leader_fsync`] was called: then its own
    /// appends as the leader are reported to openraft before their fsync (see `durability`).
    own_id: std::sync::OnceLock<NodeId>,
    /// The last index of the log as it is durable on disk (after truncations, the cut-back
    /// index). Published by the storage thread after each fsync; the gates of `durability`
    /// wait on it.
    durable_index: Arc<watch::Sender<u64>>,
    /// Set by the storage thread on its first failed write. From then on nothing is written
    /// and `durable_index` never moves again, so no entry whose write may have failed can
    /// pass a gate, and `append` fails (which stops the Raft core).
    failed: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued and exit; joining it means
        // the files are closed when the last handle is gone, so the log can be reopened.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One unit of work for the storage thread.
enum Job {
    Append {
        entries: Vec<(u64, LogId<NodeId>, Vec<u8>)>,
        /// `None` when openraft was told at once (the leader's own appends, see
        /// [`LogStore::overlap_leader_fsync`]).
        callback: Option<LogFlushed<TypeConfig>>,
    },
    SaveVote {
        vote: Vote<NodeId>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Truncate {
        index: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Purge {
        log_id: LogId<NodeId>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

impl LogStore {
    /// Opens (or creates) the log in `dir/raft-log/`, converting `dir/raft-log.redb` first
    /// if an older kith left one.
    /// Opens the log on its own, with no state machine to wait for before a purge.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_linked(dir, None)
    }

    /// Opens the log so that a purge waits until `durable_applied` (the state machine's
    /// durable `last_applied` index) reaches the purge point.
    pub(crate) fn open_linked(
        dir: &Path,
        durable_applied: Option<watch::Receiver<u64>>,
    ) -> Result<Self, StoreError> {
        let wal_dir = dir.join("raft-log");
        let old = dir.join("raft-log.redb");
        if old.exists() {
            convert_redb_log(&old, &wal_dir)?;
        }
        let wal = Wal::open(&wal_dir)?;
        let index = wal.index();
        let last = index
            .read()
            .expect("log index lock poisoned")
            .last_log_id()
            .map_or(0, |l| l.index);
        let pending: Pending = Arc::default();
        let progress = Arc::new(watch::Sender::new(AppendProgress::default()));
        let durable_index = Arc::new(watch::Sender::new(last));
        let failed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let thread = {
            let writer = Writer {
                pending: pending.clone(),
                progress: progress.clone(),
                durable_index: durable_index.clone(),
                failed: failed.clone(),
                last,
            };
            std::thread::Builder::new()
                .name("kith-log-writer".into())
                .spawn(move || writer.run(wal, rx))
                .map_err(StoreError::Io)?
        };
        Ok(LogStore {
            inner: Arc::new(Inner {
                index,
                pending,
                jobs: Some(tx),
                thread: Some(thread),
                progress,
                committed_index: AtomicU64::new(0),
                durable_applied,
                own_id: std::sync::OnceLock::new(),
                durable_index,
                failed,
            }),
        })
    }

    /// From now on, this node's (`id`) own appends as the elected leader are reported
    /// flushed as soon as they are queued (when no earlier append is still being written).
    /// Only [`crate::open`] calls it, with the gates this needs (see `durability`).
    pub(crate) fn overlap_leader_fsync(&self, id: NodeId) {
        let _ = self.inner.own_id.set(id);
    }

    /// The last index this log holds durably, updated after every fsync. Never moves
    /// again after a failed write.
    pub fn durable_index(&self) -> watch::Receiver<u64> {
        self.inner.durable_index.subscribe()
    }

    /// Whether `entries` are this node's own appends as the current leader: the stored vote
    /// is this node's, committed (it won the election), and every entry was made under it.
    /// A follower's appends are the leader's entries; even entries this node made in an
    /// earlier term and gets back from a later leader carry an older term than its vote.
    fn own_leader_append(&self, entries: &[Entry<TypeConfig>]) -> bool {
        let Some(id) = self.inner.own_id.get() else {
            return false;
        };
        let Some(vote) = self.index().vote() else {
            return false;
        };
        vote.committed
            && vote.leader_id.node_id == *id
            && !entries.is_empty()
            && entries.iter().all(|e| {
                e.log_id.leader_id.term == vote.leader_id.term && e.log_id.leader_id.node_id == *id
            })
    }

    /// The highest log index known to be committed by a quorum (0 before any).
    pub fn committed_index(&self) -> u64 {
        self.inner.committed_index.load(Ordering::Relaxed)
    }

    /// Bytes of the log's segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.index().disk_bytes()
    }

    /// Appends queued since the store opened; a mark for [`LogStore::wait_idle_after`].
    pub fn appends_queued(&self) -> u64 {
        self.inner.progress.borrow().queued
    }

    /// Waits until an append after `mark` (from [`LogStore::appends_queued`]) was queued and
    /// every queued append has been through its commit: the log's disk is idle. The leader's
    /// write batcher waits for this before it forms the next batch, so that batch takes every
    /// write that arrived during the fsync instead of queueing behind it as a small one.
    pub async fn wait_idle_after(&self, mark: u64) {
        let mut rx = self.inner.progress.subscribe();
        // An error means the store is gone: nothing left to wait for.
        let _ = rx
            .wait_for(|p| p.queued > mark && p.flushed == p.queued)
            .await;
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.index.read().expect("log index lock poisoned")
    }

    /// Queues a job and waits for the storage thread to have committed it.
    async fn run_job(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Job,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.queue(make(done)).await?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(std::io::Error::other(e))),
            Err(_) => Err(writer_gone()),
        }
    }

    async fn queue(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self
            .inner
            .jobs
            .as_ref()
            .expect("jobs is only taken on drop");
        jobs.send(job).await.map_err(|_| writer_gone())
    }

    fn read_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        // `pending` first, then the files: an entry leaves `pending` only once it is durable,
        // so it is in the copy taken here or in the index read after.
        let mut out: BTreeMap<u64, Entry<TypeConfig>> = {
            let pending = self.inner.pending.lock().expect("pending lock poisoned");
            pending
                .range((start, end))
                .map(|(i, e)| (*i, e.clone()))
                .collect()
        };
        let from = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match end {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.index().read_into(from, to, &mut out)?;
        Ok(out.into_values().collect())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        let pending_last = {
            let pending = self.inner.pending.lock().expect("pending lock poisoned");
            pending.last_key_value().map(|(_, e)| e.log_id)
        };
        if pending_last.is_some() {
            return Ok(pending_last);
        }
        Ok(self.index().last_log_id())
    }
}

fn writer_gone() -> StoreError {
    StoreError::Io(std::io::Error::other(
        "the log's storage thread has stopped",
    ))
}

/// The storage thread's state.
struct Writer {
    pending: Pending,
    progress: Arc<watch::Sender<AppendProgress>>,
    durable_index: Arc<watch::Sender<u64>>,
    failed: Arc<AtomicBool>,
    /// The log's last index once everything handed to the thread so far is written.
    last: u64,
}

impl Writer {
    /// One fsync per group of queued jobs.
    fn run(mut self, mut wal: Wal, mut rx: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(GROUP_JOBS_MAX);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < GROUP_JOBS_MAX {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.run_group(&mut wal, &mut group);
        }
    }

    fn run_group(&mut self, wal: &mut Wal, group: &mut Vec<Job>) {
        if let Some(ms) = leader_sync_delay_ms() {
            if group
                .iter()
                .any(|j| matches!(j, Job::Append { callback: None, .. }))
            {
                // Test-only: a leader whose disk is slow, to show nothing commits before it.
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        let result = if self.failed.load(Ordering::SeqCst) {
            Err("an earlier write to the log failed; nothing more is written".to_string())
        } else {
            write_group(wal, group).map_err(|e| e.to_string())
        };
        let appends = group
            .iter()
            .filter(|j| matches!(j, Job::Append { .. }))
            .count() as u64;
        // First, so that an append that follows from what this group unblocks (the next
        // write, once its predecessor commits) finds the disk idle (see `append`).
        self.progress.send_modify(|p| p.flushed += appends);
        match &result {
            Ok(()) => {
                for job in group.iter() {
                    match job {
                        Job::Append { entries, .. } => {
                            if let Some((index, _, _)) = entries.last() {
                                self.last = *index;
                            }
                        }
                        Job::Truncate { index, .. } => {
                            self.last = self.last.min(index.saturating_sub(1));
                        }
                        Job::SaveVote { .. } | Job::Purge { .. } => {}
                    }
                }
                self.durable_index.send_replace(self.last);
            }
            Err(e) => {
                if !self.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "a write to the Raft log failed; the log takes no more writes");
                }
            }
        }
        let pending = &self.pending;
        for job in group.drain(..) {
            match job {
                Job::Append { entries, callback } => {
                    if result.is_ok() {
                        let mut pending = pending.lock().expect("pending lock poisoned");
                        for (index, log_id, _) in &entries {
                            // A later append may have replaced the entry at this index
                            // (after a truncate); only the one just written leaves.
                            if pending.get(index).is_some_and(|e| e.log_id == *log_id) {
                                pending.remove(index);
                            }
                        }
                    }
                    if let Some(callback) = callback {
                        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                }
                Job::Truncate { index, done } => {
                    if result.is_ok() {
                        pending
                            .lock()
                            .expect("pending lock poisoned")
                            .retain(|i, _| *i < index);
                    }
                    let _ = done.send(result.clone());
                }
                Job::SaveVote { done, .. } | Job::Purge { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

/// Test-only fault (`KITH_TEST_LEADER_SYNC_DELAY_MS`): the storage thread waits this long
/// before writing a group that holds an append reported to openraft before its fsync.
#[cfg(feature = "test-hooks")]
fn leader_sync_delay_ms() -> Option<u64> {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("KITH_TEST_LEADER_SYNC_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

#[cfg(not(feature = "test-hooks"))]
fn leader_sync_delay_ms() -> Option<u64> {
    None
}

fn write_group(wal: &mut Wal, group: &[Job]) -> Result<(), StoreError> {
    for job in group {
        match job {
            Job::Append { entries, .. } => wal.append(entries)?,
            Job::SaveVote { vote, .. } => wal.save_vote(*vote)?,
            // Removes the conflicting suffix [index, ..) — Raft §5.3.
            Job::Truncate { index, .. } => wal.truncate(*index)?,
            Job::Purge { log_id, .. } => wal.purge(*log_id)?,
        }
    }
    // One fdatasync for every append of the group (truncate, purge and vote are durable on
    // their own, and rare).
    wal.sync()
}

/// Converts a log kept in redb by an older kith into segment files. The old file is renamed
/// only after the new log is durable, so a crash during conversion just converts again.
fn convert_redb_log(old: &Path, wal_dir: &Path) -> Result<(), StoreError> {
    let staging = wal_dir.with_extension("converting");
    let _ = std::fs::remove_dir_all(&staging);
    if wal_dir.exists() {
        // A conversion that finished, crashed before the rename below: the segments win.
        std::fs::rename(old, old.with_extension("redb.converted")).map_err(StoreError::Io)?;
        return Ok(());
    }
    {
        let db = Database::create(old)?;
        let txn = db.begin_read()?;
        let mut wal = Wal::open(&staging)?;
        if let Ok(meta) = txn.open_table(OLD_META) {
            if let Some(v) = meta.get("vote")? {
                wal.save_vote(decode(v.value())?)?;
            }
            if let Some(v) = meta.get("last_purged")? {
                wal.purge(decode(v.value())?)?;
            }
        }
        if let Ok(log) = txn.open_table(OLD_LOG) {
            for item in log.iter()? {
                let (k, v) = item?;
                let entry: Entry<TypeConfig> = decode(v.value())?;
                wal.append(&[(k.value(), entry.log_id, v.value().to_vec())])?;
            }
        }
        wal.sync()?;
    }
    std::fs::rename(&staging, wal_dir).map_err(StoreError::Io)?;
    if let Some(parent) = wal_dir.parent() {
        crate::wal::sync_dir(parent)?;
    }
    std::fs::rename(old, old.with_extension("redb.converted")).map_err(StoreError::Io)?;
    tracing::info!(from = %old.display(), to = %wal_dir.display(), "converted the Raft log to segment files");
    Ok(())
}

fn read_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry<TypeConfig>>> {
        self.read_range(range.start_bound().cloned(), range.end_bound().cloned())
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.index().last_purged();
        let last = self.last_entry_log_id().map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        let vote = *vote;
        self.run_job(|done| Job::SaveVote { vote, done })
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        let vote = self.index().vote();
        // Never resume leadership without an election (see the module docs).
        Ok(vote.map(|v| Vote {
            committed: false,
            ..v
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        // Kept in memory only, for `/v1/health`. Persisting it would cost a write per commit.
        // Without it a restarted node re-applies from its durable
        // `last_applied` once the leader tells it the commit index again.
        if let Some(c) = committed {
            self.inner
                .committed_index
                .fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        if self.inner.failed.load(Ordering::SeqCst) {
            return Err(write_err(StoreError::Io(std::io::Error::other(
                "an earlier write to the log failed; nothing more is written",
            ))));
        }
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        // Only while the log's disk keeps up: with an append still unwritten, this one waits
        // for its fsync as before, which holds the Raft core, so a leader whose disk hangs
        // stops sending heartbeats and loses its leadership instead of keeping it.
        let idle = {
            let p = self.inner.progress.borrow();
            p.queued == p.flushed
        };
        let early = idle && self.own_leader_append(&entries);
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            encoded.push((
                entry.log_id.index,
                entry.log_id,
                encode(entry).map_err(write_err)?,
            ));
        }
        {
            // Readable from here on (openraft's contract for `append`), durable once the
            // storage thread has written it (and `durable_index` covers it).
            let mut pending = self.inner.pending.lock().expect("pending lock poisoned");
            for entry in entries {
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.inner.progress.send_modify(|p| p.queued += 1);
        let (callback, now) = if early {
            (None, Some(callback))
        } else {
            (Some(callback), None)
        };
        self.queue(Job::Append {
            entries: encoded,
            callback,
        })
        .await
        .map_err(write_err)?;
        if let Some(callback) = now {
            // Queued and readable; durable once `durable_index` passes it (see
            // `durability` for what keeps that from mattering to a commit).
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        self.run_job(|done| Job::Truncate {
            index: log_id.index,
            done,
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        if let Some(durable) = &self.inner.durable_applied {
            if !crate::index_reaches(durable, log_id.index, PURGE_WAIT_MAX).await {
                return Err(write_err(StoreError::Io(std::io::Error::other(format!(
                    "refusing to purge the log to {}: the state machine has not made it \
                     durable within {} s",
                    log_id.index,
                    PURGE_WAIT_MAX.as_secs()
                )))));
            }
        }
        self.run_job(|done| Job::Purge { log_id, done })
            .await
            .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    #[tokio::test]
    async fn a_log_kept_in_redb_by_an_older_kith_is_converted_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let old = dir.path().join("raft-log.redb");
        let log_id = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
        {
            let db = Database::create(&old).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(OLD_LOG).unwrap();
                for i in 4..=6 {
                    let e = Entry::<TypeConfig> {
                        log_id: log_id(i),
                        payload: EntryPayload::Blank,
                    };
                    log.insert(i, encode(&e).unwrap().as_slice()).unwrap();
                }
                let mut meta = txn.open_table(OLD_META).unwrap();
                let vote = encode(&Vote::<NodeId>::new_committed(2, 1)).unwrap();
                meta.insert("vote", vote.as_slice()).unwrap();
                let purged = encode(&log_id(3)).unwrap();
                meta.insert("last_purged", purged.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let mut log = LogStore::open(dir.path()).unwrap();
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(3)));
            assert_eq!(state.last_log_id, Some(log_id(6)));
            let entries = log.try_get_log_entries(0..100).await.unwrap();
            let ids: Vec<_> = entries.iter().map(|e| e.log_id).collect();
            assert_eq!(ids, vec![log_id(4), log_id(5), log_id(6)]);
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
            assert!(!old.exists());
            assert!(dir.path().join("raft-log.redb.converted").exists());
        }
    }

    fn blank(term: u64, node: NodeId, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, node), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Only this node's appends as the current, elected leader skip the wait for their
    /// fsync; a follower's never do, not even entries it made itself in an earlier term.
    #[tokio::test]
    async fn only_the_elected_leaders_own_appends_are_reported_before_their_fsync() {
        use openraft::storage::RaftLogStorageExt;
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        assert!(
            !log.own_leader_append(&[blank(3, 1, 1)]),
            "not enabled: every append waits for its fsync"
        );
        log.overlap_leader_fsync(1);
        assert!(log.own_leader_append(&[blank(3, 1, 1), blank(3, 1, 2)]));
        assert!(!log.own_leader_append(&[]));
        assert!(
            !log.own_leader_append(&[blank(2, 1, 1)]),
            "made in an earlier term"
        );
        assert!(
            !log.own_leader_append(&[blank(3, 1, 1), blank(2, 1, 2)]),
            "one entry of an earlier term"
        );
        // A candidate that has not won.
        log.save_vote(&Vote::new(4, 1)).await.unwrap();
        assert!(!log.own_leader_append(&[blank(4, 1, 1)]));
        // A follower of node 2, given entries node 1 made when it led in term 3.
        log.save_vote(&Vote::new_committed(5, 2)).await.unwrap();
        assert!(!log.own_leader_append(&[blank(3, 1, 1)]));
        assert!(!log.own_leader_append(&[blank(5, 2, 1)]));
        // Elected again.
        log.save_vote(&Vote::new_committed(6, 1)).await.unwrap();
        log.blocking_append([blank(6, 1, 1), blank(6, 1, 2)])
            .await
            .unwrap();
        let mut durable = log.durable_index();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            durable.wait_for(|d| *d >= 2),
        )
        .await
        .expect("the storage thread makes the appends durable")
        .unwrap();
    }

    /// The durable index follows the log's last durable entry, back down after a
    /// truncation, and survives a reopen.
    #[tokio::test]
    async fn the_durable_index_follows_appends_and_truncations() {
        use openraft::storage::RaftLogStorageExt;
        let dir = tempfile::TempDir::new().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            assert_eq!(*log.durable_index().borrow(), 0);
            log.blocking_append((1..=5).map(|i| blank(1, 1, i)))
                .await
                .unwrap();
            assert_eq!(*log.durable_index().borrow(), 5, "reported after the fsync");
            log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
                .await
                .unwrap();
            assert_eq!(*log.durable_index().borrow(), 3);
            log.blocking_append([blank(2, 2, 4)]).await.unwrap();
            assert_eq!(*log.durable_index().borrow(), 4);
        }
        let log = LogStore::open(dir.path()).unwrap();
        assert_eq!(*log.durable_index().borrow(), 4);
    }
}
