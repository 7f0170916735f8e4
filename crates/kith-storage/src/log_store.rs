//! The durable Raft log (openraft's `RaftLogStorage`) on redb.
//!
//! Layout of `raft-log.redb`:
//! - table `log`: log index (u64) → postcard-encoded `Entry<TypeConfig>`;
//! - table `meta`: `vote`, `last_purged` → postcard-encoded values.
//!
//! Invariants:
//! - An append is reported complete (`LogFlushed`) only after its redb transaction committed
//!   with `Durability::Immediate`, i.e. after fsync: this is what makes a quorum
//!   acknowledgement durable.
//! - The vote is fsynced before `save_vote` returns (Raft §5.1: a server must not vote twice
//!   in one term, even across a crash).
//! - Every commit is `Durability::Immediate`. The committed index is not persisted at all
//!   (openraft treats it as optional): an earlier version wrote it with `Durability::None`,
//!   and under load redb's debug assertions caught a page being freed while a reader still
//!   referenced it, so kith no longer mixes non-durable commits into the log.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{decode, encode};
use crate::{StoreError, TypeConfig};
use kith_core::NodeId;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_LAST_PURGED: &str = "last_purged";

type SResult<T> = Result<T, StorageError<NodeId>>;

/// Handle on the log. Cheap to clone; clones share one database.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// Highest committed index openraft has reported; written by `save_committed`, read by
    /// `/v1/health`. Monotonic while the process lives.
    committed_index: AtomicU64,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                db,
                committed_index: AtomicU64::new(0),
            }),
        })
    }

    /// The highest log index known to be committed by a quorum (0 before any).
    pub fn committed_index(&self) -> u64 {
        self.inner.committed_index.load(Ordering::Relaxed)
    }

    fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(META)?;
        match table.get(key)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes one meta record and fsyncs (redb's default `Durability::Immediate`).
    fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = encode(value)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            table.insert(key, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end))? {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let last = match table.last()? {
            Some((_, v)) => Some(decode::<Entry<TypeConfig>>(v.value())?.log_id),
            None => None,
        };
        Ok(last)
    }
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
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.meta_get(KEY_LAST_PURGED).map_err(read_err)?;
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
        self.meta_put(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        self.meta_get(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        // Kept in memory only, for `/v1/health`. Persisting it would cost either an fsync per
        // commit or a non-durable redb commit (which this store avoids entirely; see the
        // module docs). Without it a restarted node re-applies from its durable
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
        let result = (|| -> Result<(), StoreError> {
            let txn = self.inner.db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for entry in entries {
                    let bytes = encode(&entry)?;
                    table.insert(entry.log_id.index, bytes.as_slice())?;
                }
            }
            // Durability::Immediate is redb's default: commit returns after fsync.
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // Removes the conflicting suffix [log_id.index, ..) — Raft §5.3.
        (|| -> Result<(), StoreError> {
            let txn = self.inner.db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                table.retain_in(log_id.index.., |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })()
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        // Record the purge point first, in the same transaction as the deletion, so a crash
        // never leaves a gap that get_log_state cannot explain.
        (|| -> Result<(), StoreError> {
            let bytes = encode(&log_id)?;
            let txn = self.inner.db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())?;
                let mut table = txn.open_table(LOG)?;
                table.retain_in(..=log_id.index, |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })()
        .map_err(write_err)
    }
}
