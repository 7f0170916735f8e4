//! Files: chunked, content-addressed, replicated uploads and downloads, and the background
//! work that keeps every chunk on enough nodes (repair, scrub, garbage collection).
//!
//! ```text
//!  PUT body ─▶ cut into chunks ─▶ BLAKE3 ─▶ rendezvous(hash, members)[..R]
//!                                          │  PUT /internal/chunks/{hash} to each (or local)
//!                                          ▼  every chunk on R nodes (≥ write quorum)
//!                          propose Command::File(Put(manifest)) ─▶ Raft ─▶ 201
//!
//!  GET ─▶ manifest (after a read index) ─▶ per chunk: local copy, else holders in
//!         rendezvous order ─▶ verify hash ─▶ stream (a corrupt/missing local copy is
//!         replaced from a good one on the way: read repair)
//! ```
//!
//! Placement is never stored: a chunk's desired holders are the first R live members in
//! its rendezvous order ([`kith_core::files::rendezvous`]), so every node computes them
//! alone, and membership changes move only the chunks whose top R changed.
//!
//! Background work, per node and without coordination (each node only ever *pulls*):
//! - **Repair** walks every referenced chunk; when this node is a desired holder and lacks
//!   it, it fetches a copy from any holder. Members that have failed every probe for longer
//!   than `file_down_after` are not counted as live, so their chunks gain a copy elsewhere.
//! - **Scrub** re-hashes stored chunks at `file_scrub_bytes_per_s`; a corrupt copy is deleted
//!   (by [`ChunkStore::get`](kith_storage::ChunkStore::get)) and then repaired like a
//!   missing one.
//! - **Garbage collection** deletes a local chunk once no manifest has referenced it for a
//!   grace period *and* its file is older than that grace period. Each pass first obtains a
//!   read index, so a manifest committed before the pass is always seen. An upload must
//!   commit within half the grace period of its first chunk, so its chunks can never be
//!   collected before its manifest is visible (see ARCHITECTURE.md, "Files").
//!
//! The operations are [`Node`](crate::Node) methods, one concern per module:
//! - `blobs`: [`Blobs`], the state the node holds (chunk store, down peers, upload bound,
//!   counters); it knows nothing of the node, so the node depends on it and not on the rest.
//! - `upload`: `upload` (cut, store each chunk on R nodes, commit the manifest) and
//!   `delete_file`.
//! - `download`: `file`, `files`, `read_file` and `fetch_chunk` (read repair).
//! - `shares`: share links (`share_file`, `unshare`, `lookup_share`).
//! - `placement`: members, R, desired holders, and `explain`.
//! - `peers`: chunk requests to other members and the answers to theirs.
//! - `repair`: the background loop — repair, scrub and GC passes.
//!
//! Refuses: HTTP (kith-api streams bodies in and out) and deciding what a manifest means
//! (kith-core).

mod blobs;
mod download;
mod peers;
mod placement;
mod repair;
mod shares;
mod upload;

use kith_core::files::{self, FileOutcome};
use kith_core::Response;
use kith_storage::StoreError;

use crate::NodeError;
pub use blobs::{Blobs, FileCounters};
pub use shares::ShareLookup;

/// Hashes one placement query may carry.
pub const HAVE_HASHES_MAX: usize = files::FILE_CHUNKS_MAX;

/// A chunk-store call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("chunk store task: {e}")))?
        .map_err(NodeError::from)
}

/// The error for a file command's outcome that its caller did not expect.
fn file_outcome_error(response: Response) -> NodeError {
    match response {
        Response::File(FileOutcome::Invalid { reason }) => {
            NodeError::Internal(format!("the cluster refused the manifest: {reason}"))
        }
        Response::File(FileOutcome::Full { max }) => NodeError::Busy {
            what: "files or share links in the cluster",
            max: max as usize,
        },
        other => NodeError::Internal(format!("unexpected outcome {other:?}")),
    }
}
