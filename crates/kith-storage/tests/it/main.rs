//! kith-storage integration tests: openraft's own storage conformance suite against the
//! redb log store and state machine, plus kith-specific recovery checks.

use kith_storage::{LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<kith_core::NodeId>> {
        let dir = TempDir::new().expect("create temp dir");
        // Opened apart, not linked by `kith_storage::open`: the suite purges logs its state
        // machine never applied, which a linked log refuses (its purge waits for the state
        // machine to make the purge point durable; see `recovery.rs` for that).
        let sm = StateMachineStore::open(dir.path(), Default::default()).expect("open state");
        let log = LogStore::open(dir.path()).expect("open log");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(RedbBuilder).expect("openraft storage suite");
}

mod job_timers;
mod recovery;
