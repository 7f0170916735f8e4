//! Job timers fire on whatever proposal first carries a clock past them, however the entries
//! are batched and whether the store was reopened or installed from a snapshot in between.
//! (Applies leave the job tables closed while no timer is due, so this guards the cache of
//! the earliest timer that decision rests on.)

use kith_core::jobs::{Enqueue, Job, JobCommand, JobState};
use kith_core::{Command, Proposal};
use kith_storage::{StateMachineStore, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn entry(index: u64, now_ms: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(vec![Proposal { now_ms, command }]),
    }
}

fn put(index: u64, now_ms: u64) -> Entry<TypeConfig> {
    let command = Command::Put {
        key: format!("k{index}"),
        value: b"v".to_vec(),
        if_revision: None,
        ttl_ms: None,
    };
    entry(index, now_ms, command)
}

/// The history: a job delayed until 2 000, plain puts around that time, a claim with a lease
/// until 2 600, and plain puts past it (the lease runs out and the job backs off).
fn history() -> Vec<Entry<TypeConfig>> {
    let enqueue = JobCommand::Enqueue(Enqueue {
        queue: "q".into(),
        payload: "{}".into(),
        priority: 0,
        run_at_ms: 0,
        delay_ms: 1_000,
        max_attempts: 3,
        timeout_ms: 500,
        idempotency_key: None,
        retention_ms: 10_000,
    });
    let claim = JobCommand::Claim {
        queue: "q".into(),
        lease_ms: 500,
        worker: "w".into(),
    };
    vec![
        entry(1, 1_000, Command::Job(enqueue)),
        put(2, 1_500),
        put(3, 2_000),
        entry(4, 2_100, Command::Job(claim)),
        put(5, 2_400),
        put(6, 2_600),
        put(7, 2_700),
    ]
}

fn job(sm: &StateMachineStore) -> Job {
    sm.reader().job(1).unwrap().expect("job 1 exists")
}

#[tokio::test]
async fn timers_fire_alike_in_one_batch_one_by_one_after_reopen_and_after_install() {
    let entries = history();

    // Reference: every entry in one batch.
    let all_dir = tempfile::TempDir::new().unwrap();
    let (_, mut all) = kith_storage::open_ungated(all_dir.path(), Default::default()).unwrap();
    all.apply(entries.clone()).await.unwrap();
    let reference = job(&all);
    assert_eq!(
        reference.state,
        JobState::Delayed,
        "the lease ran out at 2 600"
    );
    assert_eq!(reference.attempts, 1);

    // One entry at a time, checking the timers fired by plain puts as they go.
    let one_dir = tempfile::TempDir::new().unwrap();
    let (_, mut one) = kith_storage::open_ungated(one_dir.path(), Default::default()).unwrap();
    one.apply(entries[..2].to_vec()).await.unwrap();
    assert_eq!(job(&one).state, JobState::Delayed, "not due at 1 500");
    // Reopened, the store must still know a timer is pending.
    drop(one);
    let (_, mut one) = kith_storage::open_ungated(one_dir.path(), Default::default()).unwrap();
    one.apply(entries[2..3].to_vec()).await.unwrap();
    assert_eq!(
        job(&one).state,
        JobState::Ready,
        "a plain put at 2 000 fires it"
    );
    one.apply(entries[3..5].to_vec()).await.unwrap();
    assert_eq!(job(&one).state, JobState::Leased);
    let snapshot = crate::recovery::snapshot_to_send(&mut one).await;
    one.apply(entries[5..6].to_vec()).await.unwrap();
    one.apply(entries[6..].to_vec()).await.unwrap();
    assert_eq!(job(&one), reference);

    // Installed from a snapshot taken while the job was leased.
    let installed_dir = tempfile::TempDir::new().unwrap();
    let (_, mut installed) =
        kith_storage::open_ungated(installed_dir.path(), Default::default()).unwrap();
    installed
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    installed.apply(entries[5..].to_vec()).await.unwrap();
    assert_eq!(job(&installed), reference);
    assert_eq!(
        installed.reader().ledger_head().unwrap(),
        all.reader().ledger_head().unwrap()
    );
}
