//! kith-storage: everything kith keeps on disk: the Raft log in its own segment files, the
//! state on the redb embedded engine.
//!
//! Owns:
//! - [`LogStore`]: the Raft log and the vote (`raft-log/`, segment files of checksummed
//!   records; see `wal`). Every append, truncate, purge and vote is fsynced before openraft
//!   is told it is done.
//! - [`StateMachineStore`] (`state`, split by domain): the applied state of kv, rooms, jobs
//!   and files, the recent change events (for watches), the ledger (hash chain) and the
//!   applied log id, all written in one redb transaction per batch of applied entries
//!   (`state.redb`; what each command does is `kith_core::machine`), plus the latest snapshot
//!   (`snapshot.bin`, replaced atomically; its format, building and installing are in
//!   `snapshot`, all streamed record by record, never a whole copy in memory).
//! - [`SnapshotInbox`]: a snapshot arriving from a peer in pieces, assembled in a file
//!   (`snapshot.recv`) and checked whole ([`verify_snapshot`]) before Raft may install it.
//! - [`ChunkStore`]: the file chunks this node holds (`chunks/`), one durable file per
//!   chunk, named and verified by its BLAKE3 hash.
//! - [`backup`]: a backup (the snapshot format, from one read transaction) and a restore
//!   that makes a new cluster member's data directory from one.
//! - [`force_new_cluster`] (`recover`): a stopped member's data made into a one-member
//!   cluster, the last resort after losing quorum; [`stored_node_id`] (`identity`): which
//!   node a data directory belongs to (`node-id`, checked by [`open`]).
//! - [`open`]: a node's log and state machine, linked, with the [`LogGate`] its peer
//!   transport needs (`durability`: the leader's overlapped fsync and its gates).
//! - [`StateReader`]: a cheap, cloneable read handle on the applied state for the node's
//!   read paths; it never blocks writers (redb is MVCC). `StateReader::stored_bytes`
//!   (`stored_bytes`) measures the data it holds, for the storage quota.
//!
//! Refuses: networking, clocks, deciding what a command means (that is `kith-core`), and
//! knowing about HTTP. Only this crate knows redb exists.
//!
//! The log and the state apart, so that log appends and state-machine applies, which
//! openraft runs concurrently, never queue behind each other.

pub mod backup;
mod chunk_store;
mod codec;
mod durability;
mod error;
mod identity;
mod log_store;
mod recover;
mod snapshot;
mod snapshot_inbox;
mod state;
mod stored_bytes;
mod wal;

use std::path::Path;

pub use chunk_store::{ChunkInfo, ChunkRead, ChunkStore};
pub use durability::LogGate;
pub use error::StoreError;
pub use identity::{stored_node_id, NODE_ID_FILE};
pub use log_store::LogStore;
pub use recover::{force_new_cluster, Recovered};
pub use snapshot::{verify_snapshot, RECORD_BYTES_MAX, SNAPSHOT_BYTES_MAX};
pub use snapshot_inbox::SnapshotInbox;
pub use state::history::{StoreConfig, EVENTS_BYTES_KEPT_DEFAULT};
pub use state::ledger::LedgerHead;
pub use state::machine::StateMachineStore;
pub use state::reader::StateReader;

openraft::declare_raft_types!(
    /// openraft's type configuration for kith: a log entry carries a batch of
    /// [`kith_core::Proposal`]s (the leader's group commit, `kith-node`'s batcher), applied
    /// in order, and applying it yields one [`kith_core::Response`] per proposal.
    pub TypeConfig:
        D = Vec<kith_core::Proposal>,
        R = Vec<kith_core::Response>,
        NodeId = kith_core::NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Waits (at most `within`) until the index `index` follows reaches `at_least`: the log's
/// durable index, or the state machine's durable `last_applied`. False if it did not in
/// time, or if what publishes it is gone.
pub async fn index_reaches(
    index: &tokio::sync::watch::Receiver<u64>,
    at_least: u64,
    within: std::time::Duration,
) -> bool {
    if *index.borrow() >= at_least {
        return true;
    }
    let mut index = index.clone();
    let reached = tokio::time::timeout(within, index.wait_for(|i| *i >= at_least)).await;
    matches!(reached, Ok(Ok(_)))
}

/// A node's stores, linked as [`open`] links them.
pub struct NodeStores {
    pub log: LogStore,
    pub state_machine: StateMachineStore,
    /// What the peer transport waits on (see `durability`).
    pub log_gate: LogGate,
}

/// Opens (or creates) the stores of node `id` under `dir`, linked for replication: the
/// log's purge waits for the state machine's durable `last_applied`, the leader's own
/// appends overlap their fsync, and the state machine and the returned [`LogGate`] hold
/// back what that fsync has not covered yet (see `durability`).
pub fn open(
    dir: &Path,
    id: kith_core::NodeId,
    config: StoreConfig,
) -> Result<NodeStores, StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
    identity::claim(dir, id)?;
    let (log, mut state_machine) = open_ungated(dir, config)?;
    let log_gate = LogGate::new(log.durable_index());
    state_machine.apply_after_log_durable(log_gate.clone());
    log.overlap_leader_fsync(id);
    Ok(NodeStores {
        log,
        state_machine,
        log_gate,
    })
}

/// Opens (or creates) the stores under `dir` with only the purge link: every append waits
/// for its fsync, so nothing needs a gate. For tests and tools that drive the log and the
/// state machine themselves.
pub fn open_ungated(
    dir: &Path,
    config: StoreConfig,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
    let sm = StateMachineStore::open(dir, config)?;
    // Linked: the log is never purged past what the state machine holds durably.
    let log = LogStore::open_linked(dir, Some(sm.durable_applied()))?;
    Ok((log, sm))
}
