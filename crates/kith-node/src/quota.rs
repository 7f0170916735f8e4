//! The storage quota (like etcd's NOSPACE alarm): past `quota_bytes`, commands that add data
//! are refused before they are proposed; deletes, reads and every command that only
//! shrinks or moves data along go on, so a user can always get back under.
//!
//! Owns: the measure of what this node stores, and the admission check the leader runs in
//! `Node::propose` (every write reaches the log through it, whether it came by a public
//! route or a follower's forward, so the leader's setting is the one that counts). A node
//! storing file chunks runs the same check before it accepts one.
//!
//! What is measured (`used_bytes`):
//! - the key and value bytes of the applied state (`StateReader::stored_bytes`: every table
//!   but the bounded history), measured off the request path every
//!   [`MEASURE_INTERVAL_MIN`] or longer (see `measure_interval`);
//! - plus the bytes of every growing command this node admitted since that measurement
//!   began, so a burst of writes is counted at once, not a measurement later;
//! - plus the file chunks this node holds (`ChunkStore::usage`).
//!
//! It leaves out the Raft log (compacted by snapshots) and the watch and ledger history
//! (trimmed by count), which deleting data cannot shrink. A delete lowers the state's count
//! at the next measurement, and a node back under the quota admits writes again.
//!
//! Refuses: deciding what a command means (that is `kith-core`) or how the error looks on
//! the wire (that is `kith-api`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kith_core::files::FileCommand;
use kith_core::jobs::JobCommand;
use kith_core::Command;
use kith_storage::{ChunkStore, StateReader};
use serde::{Deserialize, Serialize};

/// The quota a node takes when none is configured and the disk's size cannot be read (the
/// same as etcd's default backend quota).
pub const QUOTA_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// Shortest time between two measurements of the state.
pub const MEASURE_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// A measurement walks every page of the counted tables; waiting this many times as long as
/// the last one took before the next keeps the walks under 1/20 of one core on a large store.
const MEASURE_INTERVAL_PER_WALK: u32 = 20;

/// What `/v1/health`, `/metrics` and the dashboard show of the quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// Bytes this node stores, as the quota measures them (module docs).
    pub used_bytes: u64,
    /// The bound (`kith serve --quota-bytes`).
    pub quota_bytes: u64,
    /// True while `used_bytes >= quota_bytes`: growing writes answer 507 `quota_exceeded`.
    pub exceeded: bool,
}

/// A node's quota: its bound and its running measure.
pub struct Quota {
    quota_bytes: u64,
    chunks: Arc<ChunkStore>,
    /// The state's stored bytes at the last measurement; written only by the measuring task.
    state_bytes: AtomicU64,
    /// Bytes of growing commands admitted since the last measurement began; added to by
    /// [`Quota::admit`], reduced by the measuring task by what the measurement covered.
    admitted_bytes: AtomicU64,
    /// The measuring task; aborted by [`Quota::stop`].
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Quota {
    /// Measures the state once, then keeps measuring it in the background.
    pub(crate) async fn start(
        quota_bytes: u64,
        state: StateReader,
        chunks: Arc<ChunkStore>,
    ) -> Arc<Quota> {
        let quota = Arc::new(Quota {
            quota_bytes,
            chunks,
            state_bytes: AtomicU64::new(0),
            admitted_bytes: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        let first = measure(&quota, &state).await;
        let task = tokio::spawn(drive_measure(
            Arc::downgrade(&quota),
            state,
            measure_interval(first),
        ));
        *quota.task.lock().expect("quota task lock") = Some(task);
        quota
    }

    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.lock().expect("quota task lock").take() {
            task.abort();
        }
    }

    pub fn usage(&self) -> QuotaUsage {
        let used_bytes = self
            .state_bytes
            .load(Ordering::Relaxed)
            .saturating_add(self.admitted_bytes.load(Ordering::Relaxed))
            .saturating_add(self.chunks.usage().1);
        QuotaUsage {
            used_bytes,
            quota_bytes: self.quota_bytes,
            exceeded: used_bytes >= self.quota_bytes,
        }
    }

    /// Admits `command` unless it adds data while the node is past its quota; an admitted
    /// command's bytes count at once.
    pub(crate) fn admit(&self, command: &Command) -> Result<(), QuotaUsage> {
        let Some(bytes) = added_bytes(command) else {
            return Ok(());
        };
        self.check()?;
        self.admitted_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Refuses anything that adds data while the node is past its quota (a file chunk).
    pub(crate) fn check(&self) -> Result<(), QuotaUsage> {
        let usage = self.usage();
        if usage.exceeded {
            Err(usage)
        } else {
            Ok(())
        }
    }
}

/// The bytes `command` may add to the state, or `None` when it adds none worth refusing:
/// deletes, expiry, the job lifecycle after enqueue (claim, heartbeat, complete, fail,
/// retry, cancel), which drains queues and so frees space, and tokens.
fn added_bytes(command: &Command) -> Option<u64> {
    let len = |s: &str| s.len() as u64;
    let bytes = match command {
        Command::Put { key, value, .. } => len(key) + value.len() as u64,
        Command::Txn(txn) => txn_put_bytes(txn),
        Command::Post(p) => len(&p.room) + len(&p.author) + len(&p.text) + len(&p.id),
        Command::Job(JobCommand::Enqueue(e)) => {
            len(&e.queue) + len(&e.payload) + e.idempotency_key.as_deref().map_or(0, len)
        }
        // A chunk reference is its hash and its size.
        Command::File(FileCommand::Put(f)) => {
            len(&f.path) + len(&f.content_type) + 36 * f.chunks.len() as u64
        }
        Command::File(FileCommand::Share { token, path, .. }) => len(token) + len(path),
        Command::Job(_)
        | Command::File(_)
        | Command::Delete { .. }
        | Command::Expire
        | Command::DeleteRoom { .. }
        // Tokens have their own bound (`kith_core::auth::TOKENS_MAX`), and administration
        // must keep working over quota.
        | Command::Token(_)
        // Leases are small and bounded in number (`kith_core::lease::LEASES_MAX`).
        | Command::Lease(_) => return None,
    };
    Some(bytes)
}

/// What a transaction's puts (in either branch, nested ones too) may add.
fn txn_put_bytes(txn: &kith_core::txn::Txn) -> u64 {
    use kith_core::txn::TxnOp;
    txn.success
        .iter()
        .chain(&txn.failure)
        .map(|op| match op {
            TxnOp::Put { key, value, .. } => (key.len() + value.len()) as u64,
            TxnOp::Txn(inner) => txn_put_bytes(inner),
            TxnOp::Delete { .. } | TxnOp::Range { .. } => 0,
        })
        .sum()
}

/// Measures the state once; returns how long the walk took.
async fn measure(quota: &Quota, state: &StateReader) -> Duration {
    let covered = quota.admitted_bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    let reader = state.clone();
    match tokio::task::spawn_blocking(move || reader.stored_bytes()).await {
        Ok(Ok(bytes)) => {
            quota.state_bytes.store(bytes, Ordering::Relaxed);
            // What was admitted before the walk began is applied or about to be: from now
            // on the measurement stands for it (a write still in flight is missed until the
            // next walk, by at most what is in flight).
            let _ = quota
                .admitted_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                    Some(a.saturating_sub(covered))
                });
        }
        Ok(Err(e)) => tracing::warn!("quota: measuring the state failed: {e}"),
        Err(e) => tracing::warn!("quota: the measuring task failed: {e}"),
    }
    started.elapsed()
}

fn measure_interval(walk: Duration) -> Duration {
    (walk * MEASURE_INTERVAL_PER_WALK).max(MEASURE_INTERVAL_MIN)
}

/// Measures the state again whenever something was applied since the last walk, no more
/// often than `measure_interval` allows. Ends when the quota is dropped.
async fn drive_measure(quota: std::sync::Weak<Quota>, state: StateReader, first: Duration) {
    let mut wait = first;
    let mut measured_at = state.ledger_head().map_or(0, |h| h.index);
    loop {
        tokio::time::sleep(wait).await;
        let Some(quota) = quota.upgrade() else {
            return;
        };
        let applied = state.ledger_head().map_or(measured_at, |h| h.index);
        if applied == measured_at && quota.admitted_bytes.load(Ordering::Relaxed) == 0 {
            wait = MEASURE_INTERVAL_MIN;
            continue;
        }
        measured_at = applied;
        wait = measure_interval(measure(&quota, &state).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commands_that_add_data_are_weighed() {
        let put = Command::Put {
            key: "k".into(),
            value: vec![0; 10],
            if_revision: None,
            ttl_ms: None,
        };
        assert_eq!(added_bytes(&put), Some(11));
        let delete = Command::Delete {
            key: "k".into(),
            if_revision: None,
        };
        assert_eq!(added_bytes(&delete), None);
        assert_eq!(added_bytes(&Command::Expire), None);
        let drop_room = Command::DeleteRoom { room: "r".into() };
        assert_eq!(added_bytes(&drop_room), None);
        let drop_queue = Command::Job(JobCommand::DeleteQueue { queue: "q".into() });
        assert_eq!(added_bytes(&drop_queue), None);
    }

    #[test]
    fn measuring_waits_longer_after_a_long_walk() {
        assert_eq!(measure_interval(Duration::ZERO), MEASURE_INTERVAL_MIN);
        assert_eq!(
            measure_interval(Duration::from_millis(500)),
            Duration::from_secs(10)
        );
    }
}
