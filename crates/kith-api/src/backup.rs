//! `GET /v1/backup`: a consistent copy of all replicated state, streamed to the client
//! (`kith backup FILE` saves it; `kith restore` makes a new cluster from it).
//!
//! First a linearizable read barrier, so the copy holds every write acknowledged before the
//! request began; then `StateReader::write_backup` writes the copy from one read transaction
//! to a temporary file in the data directory (writes go on meanwhile), and the answer streams
//! that file. The file is unlinked as soon as it is open, so nothing is left behind however
//! the transfer ends. A copy on disk rather than straight from the transaction: a redb read
//! transaction held for as long as a slow client takes would keep every page it sees from
//! being reused.
//!
//! With `?with_files=true` the copy also carries the bytes of every chunk a file references:
//! this node's copy, or when it has none or a bad one, a member's (`Node::fetch_chunk`,
//! checked against the hash). A chunk no member can give fails the backup with a 500 naming
//! it, rather than leave a backup that cannot give a file back.
//!
//! Owns: the route and its bound of [`BACKUPS_AT_ONCE`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::params::Q;
use kith_node::{Consistency, Node};

/// Backups one node writes at once: each is a full copy of the state on its disk.
pub const BACKUPS_AT_ONCE: usize = 1;
/// Bytes read from the copy per piece of the answer.
const PIECE_BYTES: usize = 256 * 1024;

static RUNNING: Semaphore = Semaphore::const_new(BACKUPS_AT_ONCE);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The headers that say where the backup stands.
pub const INDEX_HEADER: &str = "kith-backup-index";
pub const TERM_HEADER: &str = "kith-backup-term";
pub const REVISION_HEADER: &str = "kith-backup-revision";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupQuery {
    /// Also carry the bytes of every chunk a file references.
    #[serde(default)]
    with_files: bool,
}

/// `GET /v1/backup[?with_files=true]`.
pub async fn backup(
    State(node): State<Arc<Node>>,
    Q(query): Q<BackupQuery>,
) -> Result<Response, ApiError> {
    let permit = RUNNING.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("this node is already writing {BACKUPS_AT_ONCE} backup(s); try again soon"),
        )
    })?;
    let fresh = node.read(Consistency::Linearizable).await?;
    let state = (*fresh).clone();
    let path = node.config.data_dir.join(format!(
        "backup-{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = path.clone();
    let runtime = tokio::runtime::Handle::current();
    let chunks_from = node.clone();
    let point = tokio::task::spawn_blocking(move || {
        if !query.with_files {
            return state.write_backup(&written);
        }
        // This node's copy of each chunk, or a member's (verified against its hash).
        state.write_backup_with_chunks(&written, &mut |hash| {
            runtime
                .block_on(chunks_from.fetch_chunk(hash))
                .map(|bytes| bytes.to_vec())
                .map_err(|e| {
                    kith_storage::StoreError::Io(std::io::Error::other(format!(
                        "chunk {}: {e}",
                        kith_core::ledger::to_hex(&hash)
                    )))
                })
        })
    })
    .await
    .map_err(|e| internal(e.to_string()))?;
    let opened = match point {
        Ok(_) => tokio::fs::File::open(&path).await,
        Err(ref e) => Err(std::io::Error::other(e.to_string())),
    };
    // Unlinked at once: the open file stays readable, and nothing outlives the answer.
    let _ = tokio::fs::remove_file(&path).await;
    let point = point.map_err(|e| internal(format!("writing the backup: {e}")))?;
    let file = opened.map_err(|e| internal(format!("reading the backup: {e}")))?;
    let bytes = file
        .metadata()
        .await
        .map_err(|e| internal(e.to_string()))?
        .len();
    let pieces = futures::stream::unfold(
        (file, vec![0u8; PIECE_BYTES], Some(permit)),
        |(mut file, mut buf, permit)| async move {
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    let piece = Bytes::copy_from_slice(&buf[..n]);
                    Some((Ok::<_, std::io::Error>(piece), (file, buf, permit)))
                }
                Err(e) => Some((Err(e), (file, buf, None))),
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, bytes)
        .header(INDEX_HEADER, point.index)
        .header(TERM_HEADER, point.term)
        .header(REVISION_HEADER, point.revision)
        .body(Body::from_stream(pieces))
        .map_err(|e| internal(e.to_string()))
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}
