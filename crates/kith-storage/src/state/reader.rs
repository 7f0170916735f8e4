//! [`StateReader`]: the read handle on the applied state the node's read paths use. Each
//! domain module (`kv`, `ledger`, `rooms`, `jobs`, `files`) adds its queries to it; this
//! module holds what spans domains. Refuses writing: redb is MVCC, so a read never blocks
//! an apply, and sees one committed state.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::watch;

use crate::state::tables::{EXPIRY, JOB_TIMERS};
use crate::StoreError;

/// Read-only view of the applied state for the node's read paths. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) db: Arc<Database>,
    pub(crate) revision_tx: Arc<watch::Sender<u64>>,
}

impl StateReader {
    /// A reader of `db`; `revision_tx` is the apply's revision publisher.
    pub(crate) fn new(db: Arc<Database>, revision_tx: Arc<watch::Sender<u64>>) -> Self {
        StateReader { db, revision_tx }
    }

    /// A receiver that sees the store revision after every apply.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    /// The earliest time-driven change pending: a key's TTL or a job timer.
    pub fn next_timer_ms(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let expiry = txn.open_table(EXPIRY)?.first()?.map(|(k, _)| k.value().0);
        let job = txn
            .open_table(JOB_TIMERS)?
            .first()?
            .map(|(k, _)| k.value().0);
        Ok(match (expiry, job) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}
