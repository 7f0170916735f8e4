//! The applied state (openraft's `RaftStateMachine`) and snapshots, on redb.
//!
//! Layout of `state.redb`:
//! - table `kv`: key → postcard-encoded [`KvEntry`];
//! - table `meta`: `last_applied` (log id), `membership` (stored membership), `revision`.
//!
//! Invariants:
//! - Each batch of entries openraft hands to [`apply`](RaftStateMachine::apply) is applied in
//!   one redb write transaction together with the new `last_applied`, so after a crash the
//!   state and the applied index always agree; openraft re-applies anything after it.
//! - `last_applied` only grows (asserted), except when a snapshot replaces the state.
//! - A snapshot is a consistent read of one redb transaction; the latest one is kept in
//!   `snapshot.bin`, written to a temporary file, fsynced and renamed into place.
//!
//! Snapshots are built in memory (the whole key space postcard-encoded): fine for the data
//! sizes kith's kv store targets; a streaming format is the upgrade path for larger stores.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::{StoreError, TypeConfig};
use kith_core::{kv, KvEntry, KvTable, NodeId, Response};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_LAST_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "membership";
const KEY_REVISION: &str = "revision";
const SNAPSHOT_FILE: &str = "snapshot.bin";

type SResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// The state machine as openraft drives it. Owned by openraft's core task.
pub struct StateMachineStore {
    db: Arc<Database>,
    dir: PathBuf,
    /// Counts snapshots built by this process, to make snapshot ids unique.
    snapshot_seq: u64,
}

/// Read-only view of the applied state for the node's read paths.
#[derive(Clone)]
pub struct StateReader {
    db: Arc<Database>,
}

/// The payload of a snapshot: the full key space at `last_applied`.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    revision: u64,
    entries: Vec<(String, KvEntry)>,
}

/// What `snapshot.bin` holds.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// Backs [`KvTable`] with an open redb table inside a write transaction.
struct RedbKv<'t> {
    table: Table<'t, &'static str, &'static [u8]>,
}

impl KvTable for RedbKv<'_> {
    type Error = StoreError;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        match self.table.get(key)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), StoreError> {
        let bytes = encode(entry)?;
        self.table.insert(key, bytes.as_slice())?;
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.table.remove(key)?;
        Ok(())
    }
}

fn meta_get<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn sm_read_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::create(dir.join("state.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(StateMachineStore {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
            snapshot_seq: 0,
        })
    }

    /// A read handle sharing this store's database.
    pub fn reader(&self) -> StateReader {
        StateReader {
            db: self.db.clone(),
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
    ) -> Result<Vec<Response>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut responses = Vec::new();
        {
            let mut meta = txn.open_table(META)?;
            let mut last_applied: Option<LogId<NodeId>> =
                meta_get(&meta, KEY_LAST_APPLIED)?.flatten();
            let mut revision: u64 = meta_get(&meta, KEY_REVISION)?.unwrap_or(0);
            let mut membership: Option<Membership> = None;
            let mut kv_table = RedbKv {
                table: txn.open_table(KV)?,
            };
            for entry in entries {
                assert!(
                    Some(entry.log_id) > last_applied,
                    "applied index must only grow: {:?} after {:?}",
                    entry.log_id,
                    last_applied
                );
                last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        Response::None
                    }
                    EntryPayload::Normal(cmd) => kv::apply(&mut kv_table, &mut revision, &cmd)?,
                };
                responses.push(response);
            }
            meta.insert(KEY_LAST_APPLIED, encode(&last_applied)?.as_slice())?;
            meta.insert(KEY_REVISION, encode(&revision)?.as_slice())?;
            if let Some(m) = membership {
                meta.insert(KEY_MEMBERSHIP, encode(&m)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(responses)
    }

    fn install_inner(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let body: SnapshotBody = decode(&data)?;
        let txn = self.db.begin_write()?;
        {
            let mut kv_table = txn.open_table(KV)?;
            kv_table.retain(|_, _| false)?;
            for (key, entry) in &body.entries {
                kv_table.insert(key.as_str(), encode(entry)?.as_slice())?;
            }
            let mut m = txn.open_table(META)?;
            m.insert(KEY_LAST_APPLIED, encode(&meta.last_log_id)?.as_slice())?;
            m.insert(KEY_MEMBERSHIP, encode(&meta.last_membership)?.as_slice())?;
            m.insert(KEY_REVISION, encode(&body.revision)?.as_slice())?;
        }
        txn.commit()?;
        save_snapshot_file(
            &self.dir,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )
    }
}

/// Writes `snapshot.bin` crash-safely: temp file, fsync, rename, fsync the directory.
fn save_snapshot_file(dir: &Path, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
    let bytes = encode(snapshot)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(StoreError::Io)?;
    f.write_all(&bytes).map_err(StoreError::Io)?;
    f.sync_all().map_err(StoreError::Io)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(StoreError::Io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Io)?;
    Ok(())
}

fn load_snapshot_file(dir: &Path) -> Result<Option<StoredSnapshot>, StoreError> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => Ok(Some(decode(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// Builds a snapshot from one consistent read of the state.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    dir: PathBuf,
    seq: u64,
}

impl SnapshotBuilder {
    fn build_inner(&mut self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta_table = txn.open_table(META)?;
        let last_applied: Option<LogId<NodeId>> =
            meta_get(&meta_table, KEY_LAST_APPLIED)?.flatten();
        let last_membership: Membership =
            meta_get(&meta_table, KEY_MEMBERSHIP)?.unwrap_or_default();
        let revision: u64 = meta_get(&meta_table, KEY_REVISION)?.unwrap_or(0);
        let kv_table = txn.open_table(KV)?;
        let mut entries = Vec::new();
        for item in kv_table.iter()? {
            let (k, v) = item?;
            entries.push((k.value().to_owned(), decode(v.value())?));
        }
        let data = encode(&SnapshotBody { revision, entries })?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        save_snapshot_file(&self.dir, &stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        self.build_inner()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> SResult<(Option<LogId<NodeId>>, Membership)> {
        self.applied_state_inner().map_err(sm_read_err)
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_inner(entries.into_iter()).map_err(sm_write_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.dir.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        self.install_inner(meta, snapshot.into_inner())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let stored =
            load_snapshot_file(&self.dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// One key as returned by a list.
pub type ListedKey = (String, KvEntry);

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
        let revision: u64 = meta_get(&meta, KEY_REVISION)?.unwrap_or(0);
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
        Ok((out, more, revision))
    }

    /// The store revision of the latest applied state.
    pub fn revision(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta_get(&meta, KEY_REVISION)?.unwrap_or(0))
    }
}
