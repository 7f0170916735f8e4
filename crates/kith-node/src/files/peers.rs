//! Chunk traffic between members, both halves: the requests this node sends (store a chunk
//! on a peer, get one from it, ask which chunks it holds) and the answers it gives to the
//! same requests from its peers (`local_chunk`, `accept_chunk`, `have_chunks`). Every
//! outgoing request notes whether the peer answered, which is how a node learns that a peer
//! is down (see [`super::placement`]).
//!
//! Refuses: HTTP routing (the routes are served by `crate::peer::chunks`) and choosing which
//! member to ask (placement and the callers decide).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::blocking;
use crate::peer::links::MessageKind;
use crate::peer::route;
use crate::{Node, NodeError};
use kith_core::files::{hex, Hash};
use kith_core::NodeId;
use kith_storage::ChunkRead;

/// Timeout for moving one chunk to or from a peer.
const CHUNK_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for a placement query or liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Node {
    pub(super) async fn put_chunk_on(
        &self,
        id: NodeId,
        members: &[(NodeId, String)],
        hash: Hash,
        chunk: Bytes,
    ) -> Result<(), NodeError> {
        if id == self.config.id {
            self.quota.check().map_err(NodeError::QuotaExceeded)?;
            let store = self.files.store.clone();
            return blocking(move || store.put(&hash, &chunk)).await.map(drop);
        }
        let addr = member_addr(members, id)?;
        let result = self
            .chunk_request(
                addr,
                self.transport()
                    .http()
                    .put(format!(
                        "{}://{addr}{}/{}",
                        self.transport().scheme(),
                        route::CHUNKS,
                        hex(&hash)
                    ))
                    .timeout(CHUNK_TRANSFER_TIMEOUT)
                    .body(chunk),
            )
            .await;
        self.files.note(id, result.is_ok());
        match result {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) if response.status() == reqwest::StatusCode::INSUFFICIENT_STORAGE => Err(
                NodeError::QuotaExceeded(response.json().await.unwrap_or_default()),
            ),
            Ok(response) => Err(NodeError::Internal(format!(
                "node {id} refused a chunk: HTTP {}",
                response.status()
            ))),
            Err(e) => Err(e),
        }
    }

    /// Sends a chunk-path request unless the dev playground has cut this node off.
    /// Sends one chunk request to the peer at `addr`, counted on this node's link to it.
    async fn chunk_request(
        &self,
        addr: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, NodeError> {
        if self.is_isolated() {
            return Err(NodeError::Internal(
                "this node is cut off from its peers (dev playground)".into(),
            ));
        }
        let answer = request.send().await;
        self.transport().links().note(
            addr,
            MessageKind::Chunk,
            answer.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        );
        answer.map_err(|e| NodeError::Internal(format!("chunk transfer: {e}")))
    }

    pub(super) async fn get_chunk_from(
        &self,
        id: NodeId,
        members: &[(NodeId, String)],
        hash: Hash,
    ) -> Result<Bytes, NodeError> {
        let addr = member_addr(members, id)?;
        let result = self
            .chunk_request(
                addr,
                self.transport()
                    .http()
                    .get(format!(
                        "{}://{addr}{}/{}",
                        self.transport().scheme(),
                        route::CHUNKS,
                        hex(&hash)
                    ))
                    .timeout(CHUNK_TRANSFER_TIMEOUT),
            )
            .await;
        self.files.note(id, result.is_ok());
        let response = result?;
        if !response.status().is_success() {
            return Err(NodeError::Internal(format!(
                "node {id} has no copy: HTTP {}",
                response.status()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| NodeError::Internal(format!("chunk from node {id}: {e}")))?;
        // Verify here too: the copy crossed a network.
        if blake3::hash(&bytes).as_bytes() != &hash {
            return Err(NodeError::Internal(format!(
                "node {id} sent a corrupt chunk"
            )));
        }
        Ok(bytes)
    }

    /// Serves a peer's request for a chunk: the verified local copy, if there is one. A
    /// corrupt copy is deleted (by the store) and repaired in the background.
    pub async fn local_chunk(self: &Arc<Self>, hash: Hash) -> Result<Option<Vec<u8>>, NodeError> {
        let store = self.files.store.clone();
        match blocking(move || store.get(&hash)).await? {
            ChunkRead::Found(bytes) => Ok(Some(bytes)),
            ChunkRead::Missing => Ok(None),
            ChunkRead::Corrupt => {
                self.files
                    .counters
                    .corrupt_found
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "chunk {} was corrupt on this node; repairing it",
                    hex(&hash)
                );
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.fetch_chunk(hash).await {
                        tracing::warn!("repairing chunk {}: {e}", hex(&hash));
                    }
                });
                Ok(None)
            }
        }
    }

    /// Stores a chunk a peer sent (after checking it against its name).
    pub async fn accept_chunk(&self, hash: Hash, bytes: Bytes) -> Result<(), NodeError> {
        if blake3::hash(&bytes).as_bytes() != &hash {
            return Err(NodeError::InvalidInput(
                kith_core::limits::InvalidInput::BadPath {
                    reason: "chunk bytes do not match their hash",
                },
            ));
        }
        // A node past its storage quota takes no more chunks; the uploader moves on.
        self.quota.check().map_err(NodeError::QuotaExceeded)?;
        let store = self.files.store.clone();
        blocking(move || store.put(&hash, &bytes)).await.map(drop)
    }

    /// Which of `hashes` this node holds (file present; not re-verified).
    pub async fn have_chunks(&self, hashes: Vec<Hash>) -> Result<Vec<bool>, NodeError> {
        let store = self.files.store.clone();
        blocking(move || Ok(hashes.iter().map(|h| store.has(h)).collect())).await
    }

    /// Asks member `id` which of `hashes` it holds.
    pub(super) async fn ask_have(
        &self,
        id: NodeId,
        members: &[(NodeId, String)],
        hashes: &[Hash],
    ) -> Result<Vec<bool>, NodeError> {
        if id == self.config.id {
            return self.have_chunks(hashes.to_vec()).await;
        }
        let addr = member_addr(members, id)?;
        let body = postcard::to_allocvec(hashes)
            .map_err(|e| NodeError::Internal(format!("encode: {e}")))?;
        let result = self
            .chunk_request(
                addr,
                self.transport()
                    .http()
                    .post(format!(
                        "{}://{addr}{}",
                        self.transport().scheme(),
                        route::HAVE
                    ))
                    .timeout(PROBE_TIMEOUT)
                    .body(body),
            )
            .await;
        self.files.note(id, result.is_ok());
        let response = result?;
        if !response.status().is_success() {
            return Err(NodeError::Internal(format!(
                "node {id}: HTTP {}",
                response.status()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| NodeError::Internal(format!("node {id}: {e}")))?;
        postcard::from_bytes(&bytes).map_err(|e| NodeError::Internal(format!("node {id}: {e}")))
    }
}

fn member_addr(members: &[(NodeId, String)], id: NodeId) -> Result<&str, NodeError> {
    members
        .iter()
        .find(|(m, _)| *m == id)
        .map(|(_, addr)| addr.as_str())
        .ok_or_else(|| NodeError::Internal(format!("node {id} is not a member")))
}
