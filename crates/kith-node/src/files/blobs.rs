//! A node's files state: its chunk store, which peers look down, the GC pass's memory of
//! unreferenced chunks, the upload bound and the counters. The operations on it are
//! [`Node`](crate::Node) methods in the sibling modules; this module knows nothing of the
//! node, so the node can hold it without depending on them.
//!
//! Refuses: moving chunks and deciding where they live (see [`super::peers`] and
//! [`super::placement`]).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::{NodeConfig, NodeError};
use kith_core::files::Hash;
use kith_core::NodeId;
use kith_storage::ChunkStore;

/// Counters for `/metrics` and the dashboard.
#[derive(Debug, Default)]
pub struct FileCounters {
    pub chunks_repaired: AtomicU64,
    pub chunks_collected: AtomicU64,
    pub corrupt_found: AtomicU64,
    pub bytes_scrubbed: AtomicU64,
}

/// A node's files machinery: its chunk store, its view of which peers are down, and the
/// bookkeeping of its background passes. Chunks travel on the peer transport's client.
pub struct Blobs {
    pub store: Arc<ChunkStore>,
    /// Bounds concurrent uploads through this node (`file_uploads_max`).
    pub(super) uploads: Arc<Semaphore>,
    /// Since when each peer has failed every request (absent: it answered last time).
    /// Written by every chunk transfer and probe.
    down_since: Mutex<HashMap<NodeId, Instant>>,
    /// Local chunks seen unreferenced, and since when; written only by the GC pass.
    pub(super) unreferenced_since: Mutex<HashMap<Hash, Instant>>,
    /// The background task; aborted on shutdown.
    pub(super) task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub counters: FileCounters,
}

impl Blobs {
    pub fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        let store = ChunkStore::open(&config.data_dir.join("chunks"))?;
        Ok(Blobs {
            store: Arc::new(store),
            uploads: Arc::new(Semaphore::new(config.file_uploads_max)),
            down_since: Mutex::new(HashMap::new()),
            unreferenced_since: Mutex::new(HashMap::new()),
            task: Mutex::new(None),
            counters: FileCounters::default(),
        })
    }

    pub(super) fn note(&self, peer: NodeId, ok: bool) {
        let mut down = self.down_since.lock().expect("down_since lock");
        if ok {
            down.remove(&peer);
        } else {
            down.entry(peer).or_insert_with(Instant::now);
        }
    }

    pub(super) fn is_down(&self, peer: NodeId, after: Duration) -> bool {
        let down = self.down_since.lock().expect("down_since lock");
        down.get(&peer)
            .is_some_and(|since| since.elapsed() >= after)
    }

    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.lock().expect("task lock").take() {
            task.abort();
        }
    }
}
