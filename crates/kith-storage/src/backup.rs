//! Backups: a copy of the whole replicated state — KV with revisions and expiry times, rooms,
//! jobs, file manifests, shares, tokens, recent change events and the ledger — taken from one
//! read transaction while writes go on, and a restore that turns such a copy into the data
//! directory of a member of a new cluster.
//!
//! A backup is a snapshot file (`snapshot`'s format, BLAKE3 trailer included) whose meta names
//! the log position it was taken at and the membership of the cluster it came from. A
//! restore checks the whole file first, then writes the same records under a meta naming the
//! new cluster's members, installs them as the state, and starts the Raft log empty just
//! after the backup's position: the new cluster's entries continue the index, and its kv
//! revisions continue the backup's, so a watcher never sees either go backwards.
//!
//! A backup taken with its files also carries the bytes of every chunk a file references
//! (snapshot format version 2). A restore puts them all into the new member's `chunks/`:
//! which members should hold a chunk depends on the new cluster's membership, so every
//! member starts with every chunk and serves any file without asking a peer. Without them
//! a restored cluster has the files' manifests only, and reading a file fails.
//!
//! Owns: writing a backup from a [`StateReader`] and preparing a data directory from one
//! (its state, its chunks, its `node-id`, see `identity`).
//! Refuses: restoring into a directory that holds anything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufWriter;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, LogId, Membership, SnapshotMeta, StoredMembership};
use redb::ReadableDatabase;

use crate::chunk_store::ChunkStore;
use crate::state::tables::{meta_get, KEY_KV_META, KEY_LAST_APPLIED, KEY_MEMBERSHIP, META};
use crate::{snapshot, StateReader, StoreConfig, StoreError};
use kith_core::ledger::Hash;
use kith_core::{KvMeta, NodeId};

/// Where a backup stands in the history it copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupPoint {
    /// The last log entry the copy includes, and that entry's term (0, 0 for an empty state).
    pub index: u64,
    pub term: u64,
    /// The kv store's revision in the copy.
    pub revision: u64,
}

/// The file name a restore installs from, inside the new data directory, while it runs.
const RESTORE_FILE: &str = "restore.bin.tmp";

impl StateReader {
    /// Writes a backup of the applied state to `path` (created; must not exist) from one
    /// read transaction: a point-in-time copy that writes running meanwhile do not touch.
    pub fn write_backup(&self, path: &Path) -> Result<BackupPoint, StoreError> {
        self.write_backup_from(path, None)
    }

    /// As [`write_backup`](Self::write_backup), and the copy also carries the bytes of every
    /// chunk a file references, which `chunk` gives for a hash (asked once per chunk).
    pub fn write_backup_with_chunks(
        &self,
        path: &Path,
        chunk: &mut dyn FnMut(Hash) -> Result<Vec<u8>, StoreError>,
    ) -> Result<BackupPoint, StoreError> {
        self.write_backup_from(path, Some(chunk))
    }

    fn write_backup_from(
        &self,
        path: &Path,
        chunk: Option<snapshot::ChunkSource<'_>>,
    ) -> Result<BackupPoint, StoreError> {
        let txn = self.db.begin_read()?;
        let (last_applied, membership, kv) = {
            let meta = txn.open_table(META)?;
            let last_applied: Option<LogId<NodeId>> = meta_get(&meta, KEY_LAST_APPLIED)?.flatten();
            let membership: StoredMembership<NodeId, BasicNode> =
                meta_get(&meta, KEY_MEMBERSHIP)?.unwrap_or_default();
            let kv: KvMeta = meta_get(&meta, KEY_KV_META)?.unwrap_or_default();
            (last_applied, membership, kv)
        };
        let point = BackupPoint {
            index: last_applied.map_or(0, |l| l.index),
            term: last_applied.map_or(0, |l| l.leader_id.term),
            revision: kv.revision,
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: format!("backup-{}-{}", point.term, point.index),
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(StoreError::Io)?;
        let out = BufWriter::new(file);
        let out = match chunk {
            Some(chunk) => snapshot::write_copy_with_chunks(out, &txn, &meta, chunk)?,
            None => snapshot::write_copy(out, &txn, &meta)?,
        };
        out.into_inner()
            .map_err(|e| StoreError::Io(e.into_error()))?
            .sync_all()
            .map_err(StoreError::Io)?;
        Ok(point)
    }
}

/// Checks the backup at `path` whole (every record, the checksum); returns where it stands.
pub fn verify_backup(path: &Path) -> Result<BackupPoint, StoreError> {
    let (meta, revision) = snapshot::verify_any(path)?;
    Ok(BackupPoint {
        index: meta.last_log_id.map_or(0, |l| l.index),
        term: meta.last_log_id.map_or(0, |l| l.leader_id.term),
        revision,
    })
}

/// Prepares `dir` (absent or empty) from the backup at `backup` as the data directory of a
/// member of a new cluster whose voters are `members`. Checks the backup whole before it
/// creates anything; if a later step fails, removes what it created.
pub async fn restore(
    backup: &Path,
    dir: &Path,
    id: NodeId,
    members: BTreeMap<NodeId, BasicNode>,
) -> Result<BackupPoint, StoreError> {
    let refuse = |message: String| StoreError::InvalidSnapshot(message);
    if members.is_empty() {
        return Err(refuse(
            "a restored cluster needs at least one member".into(),
        ));
    }
    let (meta, revision) = snapshot::verify_any(backup)?;
    let point = BackupPoint {
        index: meta.last_log_id.map_or(0, |l| l.index),
        term: meta.last_log_id.map_or(0, |l| l.leader_id.term),
        revision,
    };
    let Some(last_log_id) = meta.last_log_id else {
        return Err(refuse(
            "the backup holds no history (taken before any write)".into(),
        ));
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(refuse(format!(
                    "{} is not empty: a restore makes a new data directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Io(e)),
    }
    let existed = dir.exists();
    let result = restore_into(backup, dir, id, last_log_id, members).await;
    if result.is_err() {
        // Leave nothing half made: the directory as it was (absent, or empty).
        let _ = std::fs::remove_dir_all(dir);
        if existed {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    result.map(|()| point)
}

async fn restore_into(
    backup: &Path,
    dir: &Path,
    id: NodeId,
    last_log_id: LogId<NodeId>,
    members: BTreeMap<NodeId, BasicNode>,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let meta = SnapshotMeta {
        last_log_id: Some(last_log_id),
        // The new cluster's membership, as of the backup's last entry: the log that follows
        // starts from it, and nothing of the old cluster's membership survives.
        last_membership: StoredMembership::new(
            Some(last_log_id),
            Membership::new(vec![voters], members),
        ),
        snapshot_id: format!(
            "restore-{}-{}",
            last_log_id.leader_id.term, last_log_id.index
        ),
    };
    let staged = dir.join(RESTORE_FILE);
    let chunks = ChunkStore::open(&dir.join("chunks"))?;
    snapshot::copy_with_meta(backup, &staged, &meta, &mut |hash, bytes| {
        chunks.put(&hash, bytes).map(drop)
    })?;
    let (mut log, mut state) = crate::open_ungated(dir, StoreConfig::default())?;
    let file = tokio::fs::File::open(&staged)
        .await
        .map_err(StoreError::Io)?;
    state
        .install_snapshot(&meta, Box::new(file))
        .await
        .map_err(|e| StoreError::InvalidSnapshot(e.to_string()))?;
    // An empty log that starts after the backup's last entry, and a vote in that entry's
    // term: the new cluster's first election is in a later term, so its leader's entries
    // sort after the backup's (a leader of the backup's own term, elected afresh, could
    // otherwise be older than the leader that wrote the backup's last entry).
    let failed =
        |e: openraft::StorageError<NodeId>| StoreError::Io(std::io::Error::other(e.to_string()));
    log.purge(last_log_id).await.map_err(failed)?;
    log.save_vote(&openraft::Vote::new(last_log_id.leader_id.term, id))
        .await
        .map_err(failed)?;
    std::fs::remove_file(&staged).map_err(StoreError::Io)?;
    crate::identity::claim(dir, id)
}
