//! The leader's overlapped fsync and the gates that keep it safe. Every other mention of
//! this rule links here.
//!
//! openraft 0.9's core waits for each append's fsync before it sends the entries to anyone,
//! so a write would pay the leader's fsync and then a follower's, one after the other. A
//! node opened with [`crate::open`] instead reports its own appends as the elected leader to
//! openraft as soon as they are queued (`LogStore::own_leader_append`), and its core
//! replicates them while the storage thread writes and fsyncs them, as etcd's leader does.
//! A follower's appends always wait for their fsync: it acknowledges what it writes.
//!
//! The leader's own copy then counts toward a commit before it is durable, so two gates
//! stand where the fsync stood, both waiting on the log's durable index
//! (`LogStore::durable_index`, published by the storage thread after each fsync):
//!
//! - the peer transport hands openraft a follower's acknowledgement only once the index
//!   covers what it acknowledges, and sends a commit index only once the index covers it
//!   ([`LogGate`], which the transport cannot be built without);
//! - the state machine applies nothing the log does not hold durably (`StateMachineStore`'s
//!   `apply`), which covers the case where the leader alone is a quorum: the entry commits
//!   but takes no effect and answers no one until it is durable.
//!
//! So every entry commits only on a quorum of durable copies, the leader's included, as
//! with the fsync first. The durable index never moves after a failed write (see
//! `log_store`), so no entry whose write may have failed passes a gate.
//!
//! [`crate::open`] is the only way to turn the overlap on, and it turns on both gates with
//! it: it links the state machine to the log and returns the [`LogGate`] for the transport.
//! A log and state machine opened apart (`LogStore::open`, `StateMachineStore::open`,
//! [`crate::open_ungated`]) never overlap, so they need no gate.

use std::time::Duration;

use tokio::sync::watch;

/// The log's durable index, as the gates wait on it (see the module docs). Only kith-storage
/// makes one, together with a log whose leader appends overlap their fsync. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogGate {
    durable_index: watch::Receiver<u64>,
}

impl LogGate {
    pub(crate) fn new(durable_index: watch::Receiver<u64>) -> Self {
        LogGate { durable_index }
    }

    /// Waits (at most `within`) until the log holds `index` durably. False if it did not in
    /// time, or if the log is gone.
    pub async fn holds(&self, index: u64, within: Duration) -> bool {
        crate::index_reaches(&self.durable_index, index, within).await
    }
}

/// Raises a published durable index (the log's, or the state machine's durable
/// `last_applied`, which the log's purge waits on) to `index`; it never goes back.
pub(crate) fn advance(durable: &watch::Sender<u64>, index: u64) {
    durable.send_if_modified(|d| {
        let raised = index > *d;
        *d = (*d).max(index);
        raised
    });
}
