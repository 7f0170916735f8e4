//! Reading files: manifests (`file`, `files`), a file's bytes as a bounded stream of
//! verified chunk slices (`read_file`), and one verified chunk from wherever a good copy is
//! (`fetch_chunk`, which repairs a missing or corrupt local copy on the way).
//!
//! Refuses: HTTP ranges and headers (kith-api turns a range into `start..end`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::blocking;
use crate::node::Consistency;
use crate::{Node, NodeError};
use kith_core::files::{self, hex, rendezvous, Hash, Manifest};
use kith_core::NodeId;
use kith_storage::ChunkRead;

/// Chunks a download fetches ahead of the one being sent.
const DOWNLOAD_CHUNKS_AHEAD: usize = 2;

impl Node {
    /// The manifest at `path`, read with the requested consistency.
    pub async fn file(
        &self,
        path: &str,
        consistency: Consistency,
    ) -> Result<Option<Manifest>, NodeError> {
        files::validate_path(path)?;
        Ok(self.read(consistency).await?.file(path)?)
    }

    /// A page of files under `prefix`, after `after`.
    pub async fn files(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Vec<Manifest>, NodeError> {
        Ok(self.read(consistency).await?.files(prefix, after, limit)?)
    }

    /// The bytes `start..end` of a file, as a stream of verified chunk slices. Chunks are
    /// fetched up to `DOWNLOAD_CHUNKS_AHEAD` ahead of the consumer, so memory stays
    /// bounded whatever the file's size. If no copy of a chunk can be read the stream ends
    /// with an error (the HTTP layer then cuts the response short).
    pub fn read_file(
        self: &Arc<Self>,
        manifest: Manifest,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let node = self.clone();
        tokio::spawn(async move {
            let mut ahead = FuturesOrdered::new();
            let mut pieces = manifest
                .chunks_in(start, end)
                .collect::<Vec<_>>()
                .into_iter();
            loop {
                while ahead.len() < DOWNLOAD_CHUNKS_AHEAD {
                    let Some((_, offset, chunk)) = pieces.next() else {
                        break;
                    };
                    let node = node.clone();
                    ahead.push_back(async move {
                        node.fetch_chunk(chunk.hash)
                            .await
                            .map(|bytes| (offset, bytes))
                    });
                }
                let Some(result) = ahead.next().await else {
                    break;
                };
                let item = result
                    .map(|(offset, bytes)| {
                        let from = start.saturating_sub(offset) as usize;
                        let to = (end - offset).min(bytes.len() as u64) as usize;
                        bytes.slice(from..to)
                    })
                    .map_err(|e| std::io::Error::other(e.to_string()));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break; // the client went away, or the file cannot be read
                }
            }
        });
        tokio_stream_from(rx)
    }

    /// A verified copy of a chunk: the local one if it is good, else one from another
    /// member (tried in rendezvous order). When this node should hold the chunk but its copy
    /// was missing or corrupt, the good copy is stored here on the way (read repair).
    pub async fn fetch_chunk(&self, hash: Hash) -> Result<Bytes, NodeError> {
        let store = self.files.store.clone();
        let local = blocking(move || store.get(&hash)).await?;
        if let ChunkRead::Found(bytes) = local {
            return Ok(Bytes::from(bytes));
        }
        if local == ChunkRead::Corrupt {
            self.files
                .counters
                .corrupt_found
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "chunk {} was corrupt on this node; replacing it",
                hex(&hash)
            );
        }
        let members = self.file_members();
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        for id in rendezvous(&hash, &ids) {
            if id == self.config.id {
                continue;
            }
            let Ok(bytes) = self.get_chunk_from(id, &members, hash).await else {
                continue;
            };
            let should_hold = self
                .desired_holders(&hash, &members)
                .contains(&self.config.id);
            if local == ChunkRead::Corrupt || should_hold {
                let store = self.files.store.clone();
                let copy = bytes.clone();
                if blocking(move || store.put(&hash, &copy)).await.is_ok() {
                    self.files
                        .counters
                        .chunks_repaired
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            return Ok(bytes);
        }
        Err(NodeError::Internal(format!(
            "no member could supply a good copy of chunk {}",
            hex(&hash)
        )))
    }
}

/// A receiver as a stream (without pulling in tokio-stream for one adapter).
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
