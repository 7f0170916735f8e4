//! How many bytes of data the applied state holds: the measure the storage quota compares
//! with its bound.
//!
//! Owns one question, answered from redb's own statistics: the key and value bytes stored in
//! every table of `state.redb` except the bounded history (`events`, `ledger`) and the
//! bookkeeping (`meta`). That count falls as soon as data is deleted, unlike the file's size
//! (redb reuses freed pages but never shrinks its file), and the history is left out because
//! a delete cannot shrink it: it is trimmed by count as revisions pass.
//!
//! Refuses: deciding what the bound is or what to refuse (that is `kith-node`'s quota), and
//! walking on the apply path. The statistics walk every page of the counted tables in one
//! read transaction, so callers run it off the async runtime and not on every request.

use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};

use crate::{StateReader, StoreError};

/// Tables left out of the count (see the module docs).
const UNCOUNTED_TABLES: [&str; 3] = ["events", "ledger", "meta"];

impl StateReader {
    /// Key and value bytes held by the counted tables, as of the newest committed apply.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let mut total: u64 = 0;
        for handle in txn.list_tables()? {
            if UNCOUNTED_TABLES.contains(&handle.name()) {
                continue;
            }
            let table = txn.open_untyped_table(handle)?;
            total = total.saturating_add(table.stats()?.stored_bytes());
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use kith_core::{Command, Proposal};
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use crate::{StateMachineStore, StoreConfig, TypeConfig};

    fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(vec![Proposal { now_ms: 1, command }]),
        }
    }

    #[tokio::test]
    async fn a_delete_brings_the_count_back_down_though_history_keeps_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path(), StoreConfig::default()).unwrap();
        let reader = sm.reader();
        let empty = reader.stored_bytes().unwrap();
        let put = Command::Put {
            key: "big".into(),
            value: vec![7; 100_000],
            if_revision: None,
            ttl_ms: None,
        };
        sm.apply([entry(1, put)]).await.unwrap();
        let full = reader.stored_bytes().unwrap();
        assert!(full >= empty + 100_000, "{empty} -> {full}");
        let delete = Command::Delete {
            key: "big".into(),
            if_revision: None,
        };
        sm.apply([entry(2, delete)]).await.unwrap();
        let after = reader.stored_bytes().unwrap();
        assert!(after < empty + 1_000, "{empty} -> {full} -> {after}");
    }
}
