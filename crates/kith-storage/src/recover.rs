//! `force_new_cluster`: one surviving member's data made into a one-member cluster, the last
//! resort after a quorum is lost for good (etcd's `--force-new-cluster`).
//!
//! Owns: the offline rewrite of a stopped node's log. Refuses: a directory a running node
//! holds (the state file's lock), one that is not a node's, and one whose node is not in the
//! membership it last knew of.
//!
//! How: openraft takes a node's effective membership from the last membership entry in its
//! log, committed or not (`StorageHelper::get_membership`). So one membership entry naming
//! only this node (at its stored address), appended after the log's last entry, makes the
//! node the single voter when it starts; it then elects itself, and its first commit commits
//! everything before it, entries the lost majority may never have held included.
//!
//! The entry's term is one past both the stored vote's and the last entry's, with a vote
//! for this node in that term saved first: log ids must grow along the log (a log id orders
//! by term, then by node id, so reusing the last entry's term under this node's id could
//! sort before it), and a node's vote is never below its last entry's term.
//!
//! What may be lost: entries the lost members had committed but this node never received.
//! Members that were not recovered keep the old membership and must be wiped and join the
//! new cluster, never restarted with their old data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use redb::{Database, ReadableDatabase};

use crate::codec::encode;
use crate::state::tables::{self, META};
use crate::wal::Wal;
use crate::{StoreError, TypeConfig};
use kith_core::NodeId;

type NodeMembership = Membership<NodeId, BasicNode>;

/// Entries read back at a time while looking for the last membership entry.
const SCAN_STEP: u64 = 256;

/// What `force_new_cluster` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub node_id: NodeId,
    /// The address the node is reached at, from the membership it last knew.
    pub addr: String,
    /// The log index of the new membership entry.
    pub index: u64,
    /// The term of the new entry and of the vote saved with it.
    pub term: u64,
    /// The voters of the membership this node last knew (this node among them or not).
    pub old_voters: BTreeSet<NodeId>,
}

/// Appends a membership entry naming only `id` to the log in `dir` (see the module docs).
/// The node must be stopped: the state file's lock is held throughout, so a node cannot
/// start on `dir` meanwhile.
pub fn force_new_cluster(dir: &Path, id: NodeId) -> Result<Recovered, StoreError> {
    let state = dir.join("state.redb");
    let log_dir = dir.join("raft-log");
    if !state.is_file() || !log_dir.is_dir() {
        return Err(StoreError::CannotRecover(format!(
            "{} is not a kith node's data directory (no state.redb and raft-log/)",
            dir.display()
        )));
    }
    let db = match Database::open(&state) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::InUse(dir.display().to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let (applied, sm_membership): (u64, Option<tables::Membership>) = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        (
            tables::applied_index(&meta)?,
            tables::meta_get(&meta, tables::KEY_MEMBERSHIP)?,
        )
    };
    let mut wal = Wal::open(&log_dir)?;
    let (vote, last_purged, last) = {
        let index = wal.index();
        let index = index.read().expect("wal index lock poisoned");
        (index.vote(), index.last_purged(), index.last_log_id())
    };
    let last = last.or(last_purged);
    // The log's last membership entry unless the state holds a later one (applied, and
    // the entry purged since).
    let sm_at = sm_membership
        .as_ref()
        .and_then(|m| m.log_id().map(|l| l.index));
    let in_log = last_membership(&wal, last_purged, last)?
        .filter(|(at, _)| *at > applied || sm_at.is_none_or(|s| *at > s));
    let old = in_log
        .map(|(_, m)| m)
        .or_else(|| sm_membership.map(|m| m.membership().clone()))
        .ok_or_else(|| {
            StoreError::CannotRecover(
                "this node never learned a membership: there is no cluster to recover".into(),
            )
        })?;
    let node = old.get_node(&id).cloned().ok_or_else(|| {
        StoreError::CannotRecover(format!(
            "node {id} is not in the membership its data last knew of ({}); recover a member's data",
            ids(old.nodes().map(|(n, _)| *n))
        ))
    })?;
    let term = vote
        .map_or(0, |v| v.leader_id.term)
        .max(last.map_or(0, |l| l.leader_id.term))
        + 1;
    let index = last.map_or(1, |l| l.index + 1);
    let log_id = LogId::new(CommittedLeaderId::new(term, id), index);
    let entry = Entry::<TypeConfig> {
        log_id,
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([id])],
            BTreeMap::from([(id, node.clone())]),
        )),
    };
    // The vote first: a crash between the two leaves a higher vote and the old log, which a
    // second run recovers from like the first.
    wal.save_vote(Vote::new(term, id))?;
    wal.append(&[(index, log_id, encode(&entry)?)])?;
    wal.sync()?;
    drop(db);
    Ok(Recovered {
        node_id: id,
        addr: node.addr,
        index,
        term,
        old_voters: old.voter_ids().collect(),
    })
}

/// The last membership entry in the log's entries after `last_purged` up to `last`, with
/// its index.
fn last_membership(
    wal: &Wal,
    last_purged: Option<LogId<NodeId>>,
    last: Option<LogId<NodeId>>,
) -> Result<Option<(u64, NodeMembership)>, StoreError> {
    let first = last_purged.map_or(0, |p| p.index + 1);
    let mut end = last.map_or(0, |l| l.index + 1);
    while end > first {
        let start = end.saturating_sub(SCAN_STEP).max(first);
        let mut entries = BTreeMap::new();
        wal.index()
            .read()
            .expect("wal index lock poisoned")
            .read_into(start, end, &mut entries)?;
        for (at, entry) in entries.into_iter().rev() {
            if let EntryPayload::Membership(m) = entry.payload {
                return Ok(Some((at, m)));
            }
        }
        end = start;
    }
    Ok(None)
}

fn ids(ids: impl Iterator<Item = NodeId>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open_ungated, LogStore, StoreConfig};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::RaftLogReader;

    fn three() -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|i| (i, BasicNode::new(format!("127.0.0.1:700{i}"))))
            .collect();
        Membership::new(vec![nodes.keys().copied().collect()], nodes)
    }

    fn entry(
        term: u64,
        leader: NodeId,
        index: u64,
        payload: EntryPayload<TypeConfig>,
    ) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload,
        }
    }

    /// A member's log gets one membership entry naming only it, after its last entry, in a
    /// term above its vote; the node then starts as the single voter.
    #[tokio::test]
    async fn the_survivor_becomes_the_only_voter_after_its_last_entry() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let (mut log, _sm) = open_ungated(dir.path(), StoreConfig::default()).unwrap();
            log.save_vote(&Vote::new_committed(4, 3)).await.unwrap();
            log.blocking_append([
                entry(1, 1, 1, EntryPayload::Membership(three())),
                entry(1, 1, 2, EntryPayload::Blank),
                entry(4, 3, 3, EntryPayload::Blank),
            ])
            .await
            .unwrap();
        }
        let done = force_new_cluster(dir.path(), 2).unwrap();
        assert_eq!(done.index, 4);
        assert_eq!(done.term, 5);
        assert_eq!(done.addr, "127.0.0.1:7002");
        assert_eq!(done.old_voters, BTreeSet::from([1, 2, 3]));

        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(5, 2)));
        let entries = log.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(entries.len(), 4, "nothing before it was touched");
        let last = entries.last().unwrap();
        assert_eq!(last.log_id, LogId::new(CommittedLeaderId::new(5, 2), 4));
        let EntryPayload::Membership(m) = &last.payload else {
            panic!("a membership entry: {last:?}");
        };
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![2]);
        assert_eq!(m.nodes().count(), 1, "no learners either");
        assert!(entries.windows(2).all(|w| w[0].log_id < w[1].log_id));
    }

    #[tokio::test]
    async fn refuses_a_running_node_a_stranger_and_a_directory_without_a_cluster() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, sm) = open_ungated(dir.path(), StoreConfig::default()).unwrap();
        let err = force_new_cluster(dir.path(), 1).unwrap_err();
        assert!(matches!(err, StoreError::InUse(_)), "{err}");
        drop(sm);
        let err = force_new_cluster(dir.path(), 1).unwrap_err();
        assert!(
            err.to_string().contains("never learned a membership"),
            "{err}"
        );
        log.blocking_append([entry(1, 1, 1, EntryPayload::Membership(three()))])
            .await
            .unwrap();
        drop(log);
        let err = force_new_cluster(dir.path(), 9).unwrap_err();
        assert!(
            err.to_string().contains("node 9 is not in the membership"),
            "{err}"
        );
        let empty = tempfile::TempDir::new().unwrap();
        let err = force_new_cluster(empty.path(), 1).unwrap_err();
        assert!(
            err.to_string().contains("not a kith node's data directory"),
            "{err}"
        );
    }
}
