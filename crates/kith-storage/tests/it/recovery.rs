//! A store reopened from its directory holds exactly what was made durable.

use kith_core::auth::{Grant, Role, TokenCommand, TokenOutcome, TokenRecord};
use kith_core::files::{ChunkRef, FileCommand, FileOutcome, NewFile};
use kith_core::{Command, Proposal, Response};
use kith_storage::{StateMachineStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, Vote,
};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn put(term: u64, index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(vec![Proposal {
            now_ms: 1_000,
            command: Command::Put {
                key: key.into(),
                value: value.into(),
                if_revision: None,
                ttl_ms: None,
            },
        }]),
    }
}

#[tokio::test]
async fn vote_log_and_state_survive_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let (mut log, mut sm) = kith_storage::open_ungated(dir.path(), Default::default()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        let responses = sm
            .apply(vec![put(3, 1, "a", "1"), put(3, 2, "b", "2")])
            .await
            .unwrap();
        assert_eq!(
            responses,
            vec![
                vec![Response::Put { revision: 1 }],
                vec![Response::Put { revision: 2 }]
            ]
        );
    }
    let (mut log, mut sm) = kith_storage::open_ungated(dir.path(), Default::default()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(3, 2)));
    let reader = sm.reader();
    assert_eq!(reader.get("b").unwrap().unwrap().value, b"2");
    assert_eq!(reader.kv_meta().unwrap().revision, 2);
    assert_eq!(reader.ledger_head().unwrap().index, 2);
    let page = reader.events(1, "", 10).unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.next_revision, 3);
}

#[tokio::test]
async fn identical_histories_have_identical_ledgers_and_bounded_history() {
    let config = kith_storage::StoreConfig {
        events_kept: 5,
        ledger_kept: 4,
        ..Default::default()
    };
    let (a, b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (_, mut sm_a) = kith_storage::open_ungated(a.path(), config).unwrap();
    let (_, mut sm_b) = kith_storage::open_ungated(b.path(), config).unwrap();
    let entries: Vec<_> = (1..=10).map(|i| put(1, i, &format!("k{i}"), "v")).collect();
    sm_a.apply(entries.clone()).await.unwrap();
    sm_b.apply(entries[..5].to_vec()).await.unwrap();
    sm_b.apply(entries[5..].to_vec()).await.unwrap();
    let (ra, rb) = (sm_a.reader(), sm_b.reader());
    assert_eq!(ra.ledger_head().unwrap(), rb.ledger_head().unwrap());
    assert_eq!(ra.ledger_at(8).unwrap().0, rb.ledger_at(8).unwrap().0);
    // Only the newest 4 hashes and 5 events are kept (histories this small trim exactly).
    assert_eq!(ra.ledger_at(6).unwrap(), (None, Some(7)));
    assert_eq!(ra.events_compacted().unwrap(), 5);
    assert_eq!(ra.events(0, "", 100).unwrap().events.len(), 5);

    // A different entry at one index gives a different head from there on.
    let (c, mut other) = {
        let dir = tempfile::TempDir::new().unwrap();
        let (_, sm) = kith_storage::open_ungated(dir.path(), config).unwrap();
        (dir, sm)
    };
    let mut diverged = entries.clone();
    diverged[6] = put(1, 7, "k7", "different");
    other.apply(diverged).await.unwrap();
    let rc = other.reader();
    assert_eq!(rc.ledger_at(6).unwrap().0, None);
    assert_ne!(
        rc.ledger_head().unwrap().hash,
        ra.ledger_head().unwrap().hash
    );
    drop(c);
}

/// Kept events are bounded by bytes too, whatever their count: large values push the oldest
/// out, on every replica at the same revision however the applies were batched, and a
/// reopened store keeps counting from what it holds.
#[tokio::test]
async fn kept_events_are_bounded_by_bytes() {
    let config = kith_storage::StoreConfig {
        events_kept: 1_000,
        events_bytes_kept: 64 * 1024,
        ..Default::default()
    };
    let (a, b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let value = "v".repeat(10_000);
    let entries: Vec<_> = (1..=40)
        .map(|i| put(1, i, &format!("k{i}"), &value))
        .collect();
    {
        let (_, mut sm_a) = kith_storage::open_ungated(a.path(), config).unwrap();
        let (_, mut sm_b) = kith_storage::open_ungated(b.path(), config).unwrap();
        sm_a.apply(entries[..20].to_vec()).await.unwrap();
        sm_a.apply(entries[20..].to_vec()).await.unwrap();
        for entry in &entries {
            sm_b.apply(vec![entry.clone()]).await.unwrap();
        }
        let (ra, rb) = (sm_a.reader(), sm_b.reader());
        let kept = ra.events(0, "", 1_000).unwrap().events;
        // Each event is a little over 10,000 bytes: 64 KiB holds 6 of them, and trimming
        // starts only past a sixteenth more.
        assert!((6..=7).contains(&kept.len()), "{} events kept", kept.len());
        assert_eq!(kept.last().map(|e| e.revision), Some(40));
        assert_eq!(ra.events_compacted().unwrap(), 40 - kept.len() as u64);
        assert_eq!(
            rb.events_compacted().unwrap(),
            ra.events_compacted().unwrap()
        );
    }
    // With events of about 1 KB the trimming's slack (a sixteenth) spans many events, so a
    // trim at the end of a batch would keep a different set than a trim per apply.
    let small = "s".repeat(1_000);
    let entries: Vec<_> = (1..=300)
        .map(|i| put(1, i, &format!("s{i}"), &small))
        .collect();
    let mut kept_by_batching = Vec::new();
    for batch in [300, 1, 7] {
        let dir = tempfile::TempDir::new().unwrap();
        let (_, mut sm) = kith_storage::open_ungated(dir.path(), config).unwrap();
        for part in entries.chunks(batch) {
            sm.apply(part.to_vec()).await.unwrap();
        }
        let reader = sm.reader();
        let revisions: Vec<u64> = reader
            .events(0, "", 1_000)
            .unwrap()
            .events
            .iter()
            .map(|e| e.revision)
            .collect();
        kept_by_batching.push((revisions, reader.events_compacted().unwrap()));
    }
    assert!(kept_by_batching[0].0.len() < 100, "the byte bound trimmed");
    assert_eq!(kept_by_batching[0], kept_by_batching[1]);
    assert_eq!(kept_by_batching[0], kept_by_batching[2]);

    // After a reopen the count goes on from the stored one: more large values keep the
    // history under the bound.
    let (_, mut sm_a) = kith_storage::open_ungated(a.path(), config).unwrap();
    let more: Vec<_> = (41..=60)
        .map(|i| put(1, i, &format!("k{i}"), &value))
        .collect();
    sm_a.apply(more).await.unwrap();
    let kept = sm_a.reader().events(0, "", 1_000).unwrap().events;
    assert!((6..=7).contains(&kept.len()), "{} events kept", kept.len());
    assert_eq!(kept.last().map(|e| e.revision), Some(60));
}

/// A longer history is trimmed a chunk at a time (a sixteenth of what is kept): never below
/// what is kept, never more than a chunk above, and at the same cutoff however it is batched.
#[tokio::test]
async fn longer_histories_are_trimmed_in_chunks_whatever_the_batching() {
    let config = kith_storage::StoreConfig {
        events_kept: 64, // chunks of 4
        ledger_kept: 48, // chunks of 3
        ..Default::default()
    };
    let (a, b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (_, mut sm_a) = kith_storage::open_ungated(a.path(), config).unwrap();
    let (_, mut sm_b) = kith_storage::open_ungated(b.path(), config).unwrap();
    let entries: Vec<_> = (1..=101)
        .map(|i| put(1, i, &format!("k{i}"), "v"))
        .collect();
    sm_a.apply(entries.clone()).await.unwrap();
    for batch in entries.chunks(7) {
        sm_b.apply(batch.to_vec()).await.unwrap();
    }
    for reader in [sm_a.reader(), sm_b.reader()] {
        // 101 - 48 = 53, down to a multiple of 3: 51 and below are gone, 50 hashes remain.
        assert_eq!(reader.ledger_at(51).unwrap(), (None, Some(52)));
        // 101 - 64 = 37, down to a multiple of 4: 36 and below are gone, 65 events remain.
        assert_eq!(reader.events_compacted().unwrap(), 36);
        assert_eq!(reader.events(0, "", 1_000).unwrap().events.len(), 65);
    }
}

/// What openraft does to send a snapshot: build one (which records it), then ask for the
/// current one (which copies the state).
pub(crate) async fn snapshot_to_send(sm: &mut StateMachineStore) -> Snapshot<TypeConfig> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    sm.get_current_snapshot().await.unwrap().unwrap()
}

#[tokio::test]
async fn a_built_snapshot_is_copied_only_when_asked_for_and_then_kept() {
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    sm.apply(vec![put(1, 1, "x/1", "one"), put(1, 2, "x/2", "two")])
        .await
        .unwrap();
    let built = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 2)));
    assert!(
        !src.path().join("snapshot.bin").exists(),
        "a build copies nothing"
    );

    // Asked for later, the snapshot is a copy of the state as it is then, at or past the
    // built one, so a follower that installs it needs no entry the log may have dropped.
    sm.apply(vec![put(1, 3, "x/3", "three")]).await.unwrap();
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 3)));
    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    other
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(other.reader().list("x/", 10).unwrap().0.len(), 3);

    // The copy is kept, across a restart too, until a newer build makes it stale.
    let again = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(again.meta, current.meta);
    drop(sm);
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().unwrap().meta,
        current.meta
    );
    sm.apply(vec![put(1, 4, "x/4", "four")]).await.unwrap();
    let newer = snapshot_to_send(&mut sm).await;
    assert_eq!(newer.meta.last_log_id, Some(log_id(1, 4)));
    assert_ne!(newer.meta.snapshot_id, current.meta.snapshot_id);
}

#[tokio::test]
async fn snapshot_installs_into_an_empty_store() {
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    sm.apply(vec![put(1, 1, "x/1", "one"), put(1, 2, "x/2", "two")])
        .await
        .unwrap();
    let snapshot = snapshot_to_send(&mut sm).await;

    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    other.apply(vec![put(1, 1, "stale", "gone")]).await.unwrap();
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let reader = other.reader();
    assert!(reader.get("stale").unwrap().is_none());
    let (keys, more, revision) = reader.list("x/", 10).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(!more);
    assert_eq!(revision, 2);
    assert_eq!(
        reader.ledger_head().unwrap(),
        sm.reader().ledger_head().unwrap()
    );
    // The kept history travels with it (see the next test).
    assert_eq!(reader.events_compacted().unwrap(), 0);
    assert_eq!(reader.events(0, "", 10).unwrap().events.len(), 2);
    // The installed snapshot is what a restarted node will offer to others.
    drop(reader);
    drop(other);
    let (_, mut reopened) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    let current = reopened.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 2)));
}

/// A node that installs a snapshot serves the same watch history and ledger lookups as the
/// node it came from, so a watcher that fails over to it is not told "compacted" early.
#[tokio::test]
async fn a_snapshot_carries_the_kept_history() {
    let config = kith_storage::StoreConfig {
        events_kept: 16,
        ledger_kept: 16,
        ..Default::default()
    };
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(src.path(), config).unwrap();
    let entries: Vec<_> = (1..=60)
        .map(|i| put(1, i, &format!("k/{}", i % 7), &i.to_string()))
        .collect();
    sm.apply(entries).await.unwrap();
    let source = sm.reader();
    assert!(
        source.events_compacted().unwrap() > 0,
        "history was trimmed"
    );
    let snapshot = snapshot_to_send(&mut sm).await;

    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open_ungated(dst.path(), config).unwrap();
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let copy = other.reader();
    assert_eq!(
        copy.events_compacted().unwrap(),
        source.events_compacted().unwrap()
    );
    assert_eq!(
        copy.events(0, "", 1_000).unwrap().events,
        source.events(0, "", 1_000).unwrap().events
    );
    for index in 1..=60 {
        assert_eq!(
            copy.ledger_at(index).unwrap(),
            source.ledger_at(index).unwrap()
        );
    }
    // And both go on trimming alike: history depends only on the newest revision.
    sm.apply(vec![put(1, 61, "k/x", "61")]).await.unwrap();
    other.apply(vec![put(1, 61, "k/x", "61")]).await.unwrap();
    assert_eq!(
        copy.events(0, "", 1_000).unwrap().events,
        source.events(0, "", 1_000).unwrap().events
    );
}

fn file_command(term: u64, index: u64, now_ms: u64, command: FileCommand) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(vec![Proposal {
            now_ms,
            command: Command::File(command),
        }]),
    }
}

fn new_file(path: &str, chunk_bytes: &[u8]) -> FileCommand {
    FileCommand::Put(NewFile {
        path: path.into(),
        size: 6,
        blake3: [9; 32],
        content_type: "text/plain".into(),
        chunk_bytes: 4,
        chunks: vec![
            ChunkRef {
                hash: [chunk_bytes[0]; 32],
                size: 4,
            },
            ChunkRef {
                hash: [chunk_bytes[1]; 32],
                size: 2,
            },
        ],
    })
}

#[tokio::test]
async fn files_and_shares_travel_in_snapshots_with_recomputed_references() {
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    let responses = sm
        .apply(vec![
            file_command(1, 1, 1_000, new_file("a/one", &[1, 2])),
            file_command(1, 2, 1_000, new_file("a/two", &[2, 3])),
            file_command(
                1,
                3,
                1_000,
                FileCommand::Share {
                    token: "t".into(),
                    path: "a/one".into(),
                    ttl_ms: 60_000,
                },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(
        responses[1][0],
        Response::File(FileOutcome::Stored {
            version: 2,
            created_ms: 1_000
        })
    );
    let reader = sm.reader();
    assert_eq!(reader.file_counts().unwrap(), (2, 3));
    assert!(reader.chunk_referenced(&[2; 32]).unwrap());
    let listed = reader.files("a/", Some("a/one"), 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "a/two");
    assert_eq!(
        reader.referenced_chunks(Some(&[1; 32]), 10).unwrap(),
        vec![[2; 32], [3; 32]]
    );

    let snapshot = snapshot_to_send(&mut sm).await;
    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let copy = other.reader();
    assert_eq!(copy.file("a/one").unwrap(), reader.file("a/one").unwrap());
    assert_eq!(copy.share("t").unwrap().unwrap().expires_at_ms, 61_000);
    assert_eq!(copy.file_counts().unwrap(), (2, 3));

    // Deleting releases only the chunks nothing else references; expiry prunes the share.
    other
        .apply(vec![file_command(
            1,
            4,
            61_000,
            FileCommand::Delete {
                path: "a/one".into(),
            },
        )])
        .await
        .unwrap();
    assert!(!copy.chunk_referenced(&[1; 32]).unwrap());
    assert!(copy.chunk_referenced(&[2; 32]).unwrap());
    assert!(copy.share("t").unwrap().is_none());
}

/// One entry carries a batch of proposals (the leader's group commit): they apply in order,
/// each with its own revision, and the entry answers once per proposal.
#[tokio::test]
async fn a_batched_entry_applies_each_proposal_in_order() {
    let dir = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(dir.path(), Default::default()).unwrap();
    let mut entry = put(1, 1, "a", "1");
    if let (EntryPayload::Normal(batch), EntryPayload::Normal(more)) =
        (&mut entry.payload, put(1, 1, "a", "2").payload)
    {
        batch.extend(more);
    }
    let responses = sm.apply(vec![entry, put(1, 2, "b", "3")]).await.unwrap();
    assert_eq!(
        responses,
        vec![
            vec![Response::Put { revision: 1 }, Response::Put { revision: 2 }],
            vec![Response::Put { revision: 3 }]
        ]
    );
    let reader = sm.reader();
    let a = reader.get("a").unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.version), (&b"2"[..], 2));
    assert_eq!(reader.ledger_head().unwrap().index, 2);
}

/// Regression (fault suite seed 1, rolling restart): a leader restarted over non-durable
/// applies must not resume leading with a read index below what it acknowledged, so the
/// vote comes back uncommitted and the node has to win an election first.
#[tokio::test]
async fn a_restarted_leader_must_win_an_election_again() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let (mut log, _) = kith_storage::open_ungated(dir.path(), Default::default()).unwrap();
        log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
    }
    let (mut log, _) = kith_storage::open_ungated(dir.path(), Default::default()).unwrap();
    let vote = log.read_vote().await.unwrap().unwrap();
    assert_eq!(vote, Vote::new(4, 1));
    assert!(!vote.is_committed());
}

/// openraft 0.9 sends a follower's purge to the log while the snapshot that covers it is
/// still being installed. The log waits for the install to be durable, so a crash between
/// the two can never leave a log purged past the state.
#[tokio::test]
async fn the_log_is_not_purged_past_the_durable_state() {
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    sm.apply(vec![put(1, 1, "a", "1"), put(1, 2, "b", "2")])
        .await
        .unwrap();
    let snapshot = snapshot_to_send(&mut sm).await;

    let dst = tempfile::TempDir::new().unwrap();
    let (mut log, mut other) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    let mut purging = log.clone();
    let mut purge = tokio::spawn(async move { purging.purge(log_id(1, 2)).await });
    // An unlinked purge is done in a few milliseconds; this one must still be waiting.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut purge)
            .await
            .is_err(),
        "the purge waits for the install"
    );
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, None);
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    purge.await.unwrap().unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(1, 2))
    );
}

fn token_command(index: u64, now_ms: u64, command: TokenCommand) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(vec![Proposal {
            now_ms,
            command: Command::Token(command),
        }]),
    }
}

/// Tokens apply through the state machine, an id is never taken twice, a revocation keeps
/// the record, and all of it travels in snapshots.
#[tokio::test]
async fn tokens_apply_survive_reopen_and_travel_in_snapshots() {
    let record = |id: &str, role: Role| TokenRecord {
        id: id.into(),
        name: "ci".into(),
        role,
        grants: vec![Grant::parse("kv:app/").unwrap()],
        hash: [7; 32],
        created_ms: 1_000,
        expires_ms: None,
        revoked_ms: None,
    };
    let src = tempfile::TempDir::new().unwrap();
    {
        let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
        let responses = sm
            .apply(vec![
                token_command(
                    1,
                    1_000,
                    TokenCommand::Create(record("00000000000000aa", Role::Write)),
                ),
                token_command(
                    2,
                    1_000,
                    TokenCommand::Create(record("00000000000000aa", Role::Admin)),
                ),
                token_command(
                    3,
                    2_000,
                    TokenCommand::Revoke {
                        id: "00000000000000aa".into(),
                    },
                ),
                token_command(
                    4,
                    3_000,
                    TokenCommand::Create(record("00000000000000bb", Role::Read)),
                ),
                token_command(5, 4_000, TokenCommand::Revoke { id: "admin".into() }),
            ])
            .await
            .unwrap();
        assert_eq!(responses[0][0], Response::Token(TokenOutcome::Created));
        assert!(matches!(
            responses[1][0],
            Response::Token(TokenOutcome::Refused { .. })
        ));
        assert_eq!(
            responses[2][0],
            Response::Token(TokenOutcome::Revoked { revoked: true })
        );
        assert_eq!(
            responses[4][0],
            Response::Token(TokenOutcome::Revoked { revoked: true })
        );
    }
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    let reader = sm.reader();
    let revoked = reader.token("00000000000000aa").unwrap().unwrap();
    assert_eq!(
        (revoked.role, revoked.revoked_ms),
        (Role::Write, Some(2_000))
    );
    assert_eq!(reader.token_list(10).unwrap().len(), 3);

    let snapshot = snapshot_to_send(&mut sm).await;
    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let copy = other.reader();
    assert_eq!(copy.token_list(10).unwrap(), reader.token_list(10).unwrap());
    assert!(copy.token("admin").unwrap().unwrap().revoked_ms.is_some());
}

fn command(index: u64, now_ms: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(vec![Proposal { now_ms, command }]),
    }
}

/// A lease with keys attached travels in a snapshot, and the copy expires it on the same
/// clock: both keys go at one revision.
#[tokio::test]
async fn leases_travel_in_snapshots_and_expire_there() {
    use kith_core::lease::{LeaseCommand, LeaseOutcome};
    use kith_core::txn::{Txn, TxnOp};
    let put = |key: &str| {
        Command::Txn(Txn::single(TxnOp::Put {
            key: key.into(),
            value: b"v".to_vec(),
            prev_kv: false,
            ignore_value: false,
            lease: 42,
            ignore_lease: false,
        }))
    };
    let src = tempfile::TempDir::new().unwrap();
    let (_, mut sm) = kith_storage::open_ungated(src.path(), Default::default()).unwrap();
    let responses = sm
        .apply(vec![
            command(
                1,
                1_000,
                Command::Lease(LeaseCommand::Grant { id: 42, ttl_s: 10 }),
            ),
            command(2, 1_000, put("svc/a")),
            command(3, 1_000, put("svc/b")),
        ])
        .await
        .unwrap();
    assert!(matches!(
        responses[0][0],
        Response::Lease {
            outcome: LeaseOutcome::Granted { id: 42, ttl_s: 10 },
            ..
        }
    ));
    let snapshot = snapshot_to_send(&mut sm).await;
    let dst = tempfile::TempDir::new().unwrap();
    let (_, mut other) = kith_storage::open_ungated(dst.path(), Default::default()).unwrap();
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let copy = other.reader();
    let (lease, keys) = copy.lease(42).unwrap().expect("the lease travelled");
    assert_eq!((lease.ttl_s, lease.expires_at_ms), (10, 11_000));
    assert_eq!(keys, ["svc/a", "svc/b"]);
    assert_eq!(copy.key_leases(&["svc/a", "other"]).unwrap(), [42, 0]);
    // The copy's timer fires: the proposal carrying the clock past it takes both keys.
    assert_eq!(copy.next_timer_ms().unwrap(), Some(11_000));
    let before = copy.kv_meta().unwrap().revision;
    other
        .apply(vec![command(4, 11_000, Command::Expire)])
        .await
        .unwrap();
    assert!(copy.lease(42).unwrap().is_none());
    assert!(copy.get("svc/a").unwrap().is_none() && copy.get("svc/b").unwrap().is_none());
    assert_eq!(copy.kv_meta().unwrap().revision, before + 1);
}

#[tokio::test]
async fn a_store_told_to_tamper_departs_from_the_chain_at_that_index_only() {
    let honest = kith_storage::StoreConfig::default();
    let tampering = kith_storage::StoreConfig {
        ledger_tamper_index: Some(3),
        ..Default::default()
    };
    let (a, b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (_, mut sm_a) = kith_storage::open_ungated(a.path(), honest).unwrap();
    let (_, mut sm_b) = kith_storage::open_ungated(b.path(), tampering).unwrap();
    let entries: Vec<_> = (1..=5).map(|i| put(1, i, &format!("k{i}"), "v")).collect();
    sm_a.apply(entries.clone()).await.unwrap();
    sm_b.apply(entries).await.unwrap();
    let (ra, rb) = (sm_a.reader(), sm_b.reader());
    assert_eq!(ra.ledger_at(2).unwrap().0, rb.ledger_at(2).unwrap().0);
    assert_ne!(ra.ledger_at(3).unwrap().0, rb.ledger_at(3).unwrap().0);
    assert_ne!(
        ra.ledger_head().unwrap().hash,
        rb.ledger_head().unwrap().hash
    );
    // The data itself is the same: only the fingerprint was altered.
    assert_eq!(rb.get("k3").unwrap().unwrap().value, b"v");
}
