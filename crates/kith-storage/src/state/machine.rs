//! [`StateMachineStore`]: the applied state as openraft's `RaftStateMachine`, on redb
//! (`state.redb`; its layout is in `tables`). Owns the apply transaction, when it is made
//! durable, and the openraft adapter; what a command does is `kith_core::machine::apply`,
//! each domain's tables are its own module, and snapshots are `snapshot`'s.
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
//!   queued behind it wait; a long interval dirties not many more pages than a short one
//!   (most leaves are touched either way), so the stall is barely longer and much rarer
//!   (docs/BENCHMARKS.md has the figures). A crash rolls `state.redb` back to its last
//!   durable apply, and openraft re-applies the rest from the log (applying is
//!   deterministic, so the state, revisions and ledger come out identical). This holds
//!   only while **the log is never purged past the durable `last_applied`**. openraft
//!   purges only entries a snapshot covers (up to its last log id, minus
//!   `max_in_snapshot_log_to_keep`), so the snapshot builder makes the state it read
//!   durable before it returns, and an installed snapshot is committed durably.
//! - `last_applied` only grows (asserted), except when a snapshot replaces the state.
//! - The ledger links (see `ledger`), and history is bounded (see `history` and `kv`):
//!   at most `events_kept` + 255 events and `ledger_kept` + 255 hashes are retained, and
//!   compaction never drops the newest `events_kept` or `ledger_kept` unless the events pass
//!   `events_bytes_kept`, at cutoffs that depend only on the newest revision or index, so
//!   every replica trims the same history at the same revision.
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
use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use tokio::sync::watch;

use crate::codec::encode;
use crate::durability::{advance, LogGate};
use crate::snapshot::{self, SnapshotBuilder};
use crate::state::apply_tables::{Applied, ApplyTables};
use crate::state::history::StoreConfig;
use crate::state::jobs::read_job_timer_first_ms;
use crate::state::kv::read_kv_meta;
use crate::state::reader::StateReader;
use crate::state::tables::{
    self, applied_index, meta_get, Membership, SResult, KEY_LAST_APPLIED, KEY_MEMBERSHIP, META,
};
use crate::{StoreError, TypeConfig};
use kith_core::{machine, NodeId, Response};

/// An apply is committed with fsync once this long has passed since the last one that was,
/// or after this many applies without; the others rely on the log (see above). Together they
/// bound what a restart re-applies from the log.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const APPLIES_PER_FSYNC: u64 = 4096;
/// How long an apply waits for the log to make its entries durable before it fails (which
/// stops the node). It waits at all only where the leader alone is a quorum; a log whose
/// writes failed never gets there, a disk that merely stalls should.
const APPLY_LOG_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(300);

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
    /// The log index whose bytes this node alters before hashing: the playground's tamper
    /// (`StoreConfig::ledger_tamper_index`) or the test hook.
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
        tables::create_all(&txn)?;
        txn.commit()?;
        let db = Arc::new(db);
        let revision = read_kv_meta(&db)?.revision;
        let job_timer_first_ms = read_job_timer_first_ms(&db)?;
        // What the file holds at open is durable, whatever commits made it.
        let durable = applied_index(&db.begin_read()?.open_table(META)?)?;
        let corrupt_ledger_at = config
            .ledger_tamper_index
            .or_else(|| hook_index("KITH_TEST_CORRUPT_LEDGER_INDEX"));
        Ok(StateMachineStore {
            db,
            dir: dir.to_path_buf(),
            config,
            revision_tx: Arc::new(watch::Sender::new(revision)),
            durable: Arc::new(watch::Sender::new(durable)),
            snapshot_seq: 0,
            corrupt_ledger_at,
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
        StateReader::new(self.db.clone(), self.revision_tx.clone())
    }

    fn applied_state_inner(&self) -> Result<(Option<LogId<NodeId>>, Membership), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let last_applied = meta_get(&meta, KEY_LAST_APPLIED)?.flatten();
        let membership = meta_get(&meta, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    /// Begins the write transaction of one apply: durable (fsynced at commit) once
    /// `DURABLE_EVERY` has passed or `APPLIES_PER_FSYNC` applies were made since the last
    /// durable one, otherwise left to the log (see the module docs). Says which.
    fn begin_apply(&mut self) -> Result<(WriteTransaction, bool), StoreError> {
        let mut txn = self.db.begin_write()?;
        self.applies_since_fsync += 1;
        let durable = self.applies_since_fsync >= APPLIES_PER_FSYNC
            || self.last_durable.elapsed() >= DURABLE_EVERY;
        if durable {
            self.applies_since_fsync = 0;
            self.last_durable = std::time::Instant::now();
        } else {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Engine(e.into()))?;
        }
        Ok((txn, durable))
    }

    fn apply_inner(
        &mut self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<Vec<Response>>, StoreError> {
        let (txn, durable) = self.begin_apply()?;
        let mut responses = Vec::new();
        let (applied, job_timer_first_ms) = {
            let mut tables = ApplyTables::open(&txn, &self.config, self.job_timer_first_ms)?;
            let mut applied = tables.applied()?;
            for entry in entries {
                responses.push(self.apply_entry(&mut tables, &mut applied, entry)?);
            }
            let job_timer_first_ms = tables.finish(&applied, self.config.ledger_kept)?;
            (applied, job_timer_first_ms)
        };
        txn.commit()?;
        if durable {
            advance(&self.durable, applied.last_applied.map_or(0, |l| l.index));
        }
        self.job_timer_first_ms = job_timer_first_ms;
        self.revision_tx.send_replace(applied.kv_meta.revision);
        Ok(responses)
    }

    /// Applies one entry: links it into the ledger, then applies its proposals in order (one
    /// entry is a batch of them, the leader's group commit), answering once per proposal.
    fn apply_entry(
        &self,
        tables: &mut ApplyTables<'_>,
        applied: &mut Applied,
        entry: Entry<TypeConfig>,
    ) -> Result<Vec<Response>, StoreError> {
        assert!(
            Some(entry.log_id) > applied.last_applied,
            "applied index must only grow: {:?} after {:?}",
            entry.log_id,
            applied.last_applied
        );
        if self.fail_apply_at == Some(entry.log_id.index) {
            return Err(StoreError::Io(std::io::Error::other(
                "KITH_TEST_FAIL_APPLY_INDEX: this apply fails on purpose",
            )));
        }
        applied.last_applied = Some(entry.log_id);
        let mut bytes = encode(&entry)?;
        if self.corrupt_ledger_at == Some(entry.log_id.index) {
            bytes.push(0xff);
        }
        applied.head = applied.head.next(entry.log_id, &bytes);
        tables
            .ledger
            .insert(applied.head.index, applied.head.hash.as_slice())?;
        let proposals = match entry.payload {
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(m) => {
                applied.membership = Some(StoredMembership::new(Some(entry.log_id), m));
                Vec::new()
            }
            EntryPayload::Normal(proposals) => proposals,
        };
        let mut responses = Vec::with_capacity(proposals.len());
        for proposal in &proposals {
            responses.push(machine::apply(tables, &mut applied.kv_meta, proposal)?);
        }
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
