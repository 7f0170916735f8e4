//! A store reopened from its directory holds exactly what was made durable.

use std::io::Cursor;

use kith_core::{Command, Response};
use kith_storage::TypeConfig;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Vote};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn put(term: u64, index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Put {
            key: key.into(),
            value: value.into(),
            if_revision: None,
        }),
    }
}

#[tokio::test]
async fn vote_log_and_state_survive_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let (mut log, mut sm) = kith_storage::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        let responses = sm
            .apply(vec![put(3, 1, "a", "1"), put(3, 2, "b", "2")])
            .await
            .unwrap();
        assert_eq!(
            responses,
            vec![Response::Put { revision: 1 }, Response::Put { revision: 2 }]
        );
    }
    let (mut log, mut sm) = kith_storage::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3, 2)));
    let reader = sm.reader();
    assert_eq!(reader.get("b").unwrap().unwrap().value, b"2");
    assert_eq!(reader.revision().unwrap(), 2);
}

#[tokio::test]
async fn snapshot_installs_into_an_empty_store() {
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open(src.path()).unwrap();
    sm.apply(vec![put(1, 1, "x/1", "one"), put(1, 2, "x/2", "two")])
        .await
        .unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open(dst.path()).unwrap();
    other.apply(vec![put(1, 1, "stale", "gone")]).await.unwrap();
    let data: Cursor<Vec<u8>> = *snapshot.snapshot;
    other
        .install_snapshot(&snapshot.meta, Box::new(data))
        .await
        .unwrap();
    let reader = other.reader();
    assert!(reader.get("stale").unwrap().is_none());
    let (keys, more, revision) = reader.list("x/", 10).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(!more);
    assert_eq!(revision, 2);
    // The installed snapshot is what a restarted node will offer to others.
    drop(reader);
    drop(other);
    let (_, mut reopened) = kith_storage::open(dst.path()).unwrap();
    let current = reopened.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 2)));
}
