//! The `state_machine` target's run: an arbitrary log applied to two real
//! [`StateMachineStore`]s and checked against [`KvModel`].
//!
//! Store A applies the log one entry per call; store B in batches whose bounds the input
//! chooses, as a follower that fell behind applies them. Both must answer the same, end
//! with the same ledger head and hold the same keys and watch history, and the key-value
//! part of both must be what the model holds. Any violation panics, which libFuzzer reports
//! as a crash.

use std::sync::OnceLock;

use arbitrary::Unstructured;
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership};

use kith_core::{NodeId, Response};
use kith_storage::{StateMachineStore, StoreConfig, TypeConfig};

use crate::model::{self, change_of, Clock, KvModel, ModelEntry, ModelEvent};

/// Most log entries one input makes: enough for TTLs, leases and retention to run out.
const ENTRIES_MAX: usize = 64;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A log built from the input, and where store B's batches end.
struct Log {
    config: StoreConfig,
    entries: Vec<Entry<TypeConfig>>,
    batch_ends: Vec<bool>,
}

fn log(u: &mut Unstructured) -> arbitrary::Result<Log> {
    let config = StoreConfig {
        events_kept: u.int_in_range(1..=40)?,
        ledger_kept: u.int_in_range(1..=40)?,
        ..Default::default()
    };
    let mut clock = Clock::default();
    let mut term = 1;
    let mut entries = Vec::new();
    let mut batch_ends = Vec::new();
    while !u.is_empty() && entries.len() < ENTRIES_MAX {
        if u.ratio(1, 32)? {
            term += 1;
        }
        let payload = if u.ratio(1, 64)? {
            let nodes = [(1, BasicNode::new("127.0.0.1:1"))];
            EntryPayload::Membership(Membership::new(
                vec![[1].into()],
                nodes
                    .into_iter()
                    .collect::<std::collections::BTreeMap<NodeId, _>>(),
            ))
        } else {
            match model::batch(u, &mut clock)? {
                Some(proposals) => EntryPayload::Normal(proposals),
                None => EntryPayload::Blank,
            }
        };
        let index = entries.len() as u64 + 1;
        entries.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload,
        });
        batch_ends.push(u.ratio(1, 3)?);
    }
    Ok(Log {
        config,
        entries,
        batch_ends,
    })
}

/// Runs one input; panics on any violated invariant.
pub fn run(data: &[u8]) {
    let Ok(log) = log(&mut Unstructured::new(data)) else {
        return;
    };
    let dir = crate::scratch_dir();
    for store in ["a", "b"] {
        std::fs::create_dir(dir.path().join(store)).expect("a store directory");
    }
    let mut a = StateMachineStore::open(&dir.path().join("a"), log.config).expect("open store A");
    let mut b = StateMachineStore::open(&dir.path().join("b"), log.config).expect("open store B");
    let (answers_a, answers_b) = runtime().block_on(async {
        let mut answers_a = Vec::new();
        for entry in &log.entries {
            answers_a.extend(a.apply(vec![entry.clone()]).await.expect("store A applies"));
        }
        let mut answers_b = Vec::new();
        let mut batch = Vec::new();
        for (entry, end) in log.entries.iter().zip(&log.batch_ends) {
            batch.push(entry.clone());
            if *end {
                answers_b.extend(
                    b.apply(std::mem::take(&mut batch))
                        .await
                        .expect("store B applies"),
                );
            }
        }
        if !batch.is_empty() {
            answers_b.extend(b.apply(batch).await.expect("store B applies"));
        }
        (answers_a, answers_b)
    });
    assert_eq!(answers_a, answers_b, "both stores answer the same");
    let (reader_a, reader_b) = (a.reader(), b.reader());
    assert_eq!(
        reader_a.ledger_head().expect("ledger head A"),
        reader_b.ledger_head().expect("ledger head B"),
        "both stores end with the same ledger head"
    );

    let mut model = KvModel::default();
    for (entry, answers) in log.entries.iter().zip(&answers_a) {
        let proposals: &[kith_core::Proposal] = match &entry.payload {
            EntryPayload::Normal(p) => p,
            _ => &[],
        };
        assert_eq!(proposals.len(), answers.len(), "one answer per proposal");
        for (proposal, answer) in proposals.iter().zip(answers) {
            if let Some(expected) = model.apply(proposal) {
                assert_eq!(answer, &expected, "answer to {proposal:?}");
            } else {
                assert!(!matches!(
                    answer,
                    Response::Put { .. } | Response::Delete { .. }
                ));
            }
        }
    }
    for reader in [&reader_a, &reader_b] {
        check_against_model(reader, &model);
    }
}

fn check_against_model(reader: &kith_storage::StateReader, model: &KvModel) {
    let meta = reader.kv_meta().expect("kv meta");
    assert_eq!(meta.revision, model.revision, "store revision");
    assert_eq!(meta.now_ms, model.now_ms, "store clock");
    let (keys, more, revision) = reader.list("", usize::MAX).expect("list");
    assert!(!more);
    assert_eq!(revision, model.revision);
    let stored: Vec<(String, ModelEntry)> = keys
        .into_iter()
        .map(|(k, e)| {
            let entry = ModelEntry {
                value: e.value,
                create_revision: e.create_revision,
                mod_revision: e.mod_revision,
                version: e.version,
                expires_at_ms: e.expires_at_ms,
            };
            (k, entry)
        })
        .collect();
    let expected: Vec<(String, ModelEntry)> = model.keys.clone().into_iter().collect();
    assert_eq!(stored, expected, "the stored keys are the model's");

    let compacted = reader.events_compacted().expect("events compacted");
    let page = reader
        .events(compacted + 1, "", usize::MAX)
        .expect("events");
    let history: Vec<ModelEvent> = page
        .events
        .iter()
        .map(|e| (e.revision, e.key.clone(), change_of(&e.kind)))
        .collect();
    let expected: Vec<ModelEvent> = model
        .events
        .iter()
        .filter(|(revision, _, _)| *revision > compacted)
        .cloned()
        .collect();
    assert_eq!(history, expected, "the kept watch history is the model's");
}
