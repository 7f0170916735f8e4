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
        let (log, sm) = kith_storage::open(dir.path(), Default::default()).expect("open stores");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(RedbBuilder).expect("openraft storage suite");
}

mod job_timers;
mod recovery;
