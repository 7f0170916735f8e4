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
//!   (by [`ChunkStore::get`]) and then repaired like a missing one.
//! - **Garbage collection** deletes a local chunk once no manifest has referenced it for a
//!   grace period *and* its file is older than that grace period. Each pass first obtains a
//!   read index, so a manifest committed before the pass is always seen. An upload must
//!   commit within half the grace period of its first chunk, so its chunks can never be
//!   collected before its manifest is visible (see ARCHITECTURE.md, "Files").
//!
//! Refuses: HTTP (kith-api streams bodies in and out) and deciding what a manifest means
//! (kith-core).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use crate::node::Consistency;
use crate::{Node, NodeConfig, NodeError};
use kith_core::files::{
    self, hex, rendezvous, ChunkRef, FileCommand, FileOutcome, Hash, Manifest, NewFile, Share,
};
use kith_core::{Command, NodeId, Response};
use kith_storage::{ChunkRead, ChunkStore, StoreError};

/// Chunks of one upload stored concurrently; bounds an upload's memory to about this many
/// chunks plus the one being cut.
const UPLOAD_CHUNKS_IN_FLIGHT: usize = 4;
/// Chunks a download fetches ahead of the one being sent.
const DOWNLOAD_CHUNKS_AHEAD: usize = 2;
/// Timeout for moving one chunk to or from a peer.
const CHUNK_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for a placement query or liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Referenced chunks examined per page of a repair pass, and local chunks per page of a GC
/// pass (each GC page starts with its own read index).
const PASS_PAGE: usize = 1000;
/// Chunks one repair pass may fetch; the rest wait for the next pass.
const REPAIRS_PER_PASS_MAX: usize = 10_000;
/// Hashes one placement query may carry.
pub const HAVE_HASHES_MAX: usize = files::FILE_CHUNKS_MAX;

/// The peer routes this module serves and calls.
pub mod route {
    /// `PUT` stores a chunk (raw body), `GET` returns one; the hash is the last segment.
    pub const CHUNKS: &str = "/internal/chunks";
    /// `POST` postcard `Vec<Hash>` → postcard `Vec<bool>`: which of these chunks are here.
    pub const HAVE: &str = "/internal/chunk-have";
}

/// Where one chunk of a file lives (`?explain=1`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkPlacement {
    pub index: usize,
    pub offset: u64,
    pub size: u32,
    pub hash: String,
    /// Members that answered that they hold a copy.
    pub holders: Vec<NodeId>,
    /// Where the chunk should live: the first R live members in its rendezvous order.
    pub desired: Vec<NodeId>,
}

/// What a share token leads to.
#[derive(Debug)]
pub enum ShareLookup {
    Found(Share, Manifest),
    Unknown,
    Expired,
    /// The share exists but its file was deleted.
    FileGone(Share),
}

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
    uploads: Arc<Semaphore>,
    /// Since when each peer has failed every request (absent: it answered last time).
    /// Written by every chunk transfer and probe.
    down_since: Mutex<HashMap<NodeId, Instant>>,
    /// Local chunks seen unreferenced, and since when; written only by the GC pass.
    unreferenced_since: Mutex<HashMap<Hash, Instant>>,
    /// The background task; aborted on shutdown.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
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

    fn note(&self, peer: NodeId, ok: bool) {
        let mut down = self.down_since.lock().expect("down_since lock");
        if ok {
            down.remove(&peer);
        } else {
            down.entry(peer).or_insert_with(Instant::now);
        }
    }

    fn is_down(&self, peer: NodeId, after: Duration) -> bool {
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

/// A chunk-store call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("chunk store task: {e}")))?
        .map_err(NodeError::from)
}

async fn joined<T>(task: tokio::task::JoinHandle<Result<T, NodeError>>) -> Result<T, NodeError> {
    task.await
        .map_err(|e| NodeError::Internal(format!("chunk task: {e}")))?
}

impl Node {
    /// The members chunks may live on: every node in the current membership, voters and
    /// learners alike, in id order.
    fn file_members(&self) -> Vec<(NodeId, String)> {
        // Read under the borrow: cloning all of openraft's metrics per chunk read is waste.
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// Copies each chunk gets in the current membership: the configured R, capped by the
    /// member count.
    pub fn file_replicas(&self) -> usize {
        self.replicas_for(self.file_members().len())
    }

    /// Replicas each chunk should have with `members` nodes: the configured R, capped.
    fn replicas_for(&self, members: usize) -> usize {
        self.config.file_replicas.clamp(1, members.max(1))
    }

    /// The first R live members in `hash`'s rendezvous order.
    fn desired_holders(&self, hash: &Hash, members: &[(NodeId, String)]) -> Vec<NodeId> {
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        let replicas = self.replicas_for(ids.len());
        rendezvous(hash, &ids)
            .into_iter()
            .filter(|id| {
                *id == self.config.id || !self.files.is_down(*id, self.config.file_down_after)
            })
            .take(replicas)
            .collect()
    }

    /// Stores an uploaded file: cuts `body` into chunks, stores each on R nodes, then commits
    /// the manifest. `content_length` (when the client sent one) is checked against the bytes
    /// that actually arrive. Nothing becomes visible unless every step succeeds.
    pub async fn upload<S, E>(
        self: &Arc<Self>,
        path: &str,
        content_type: &str,
        content_length: Option<u64>,
        body: S,
    ) -> Result<Manifest, NodeError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        files::validate_path(path)?;
        let max = self.config.file_bytes_max;
        if content_length.is_some_and(|len| len > max) {
            return Err(NodeError::FileTooLarge { max });
        }
        let _permit = self
            .files
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| NodeError::Busy {
                what: "uploads",
                max: self.config.file_uploads_max,
            })?;
        let started = Instant::now();
        let members = self.file_members();
        if members.is_empty() {
            return Err(NodeError::NoLeader);
        }
        let chunk_bytes = self.config.file_chunk_bytes as usize;
        let mut whole = blake3::Hasher::new();
        let mut buffer = BytesMut::with_capacity(chunk_bytes);
        let mut size: u64 = 0;
        // Each chunk is stored by its own task, so storing overlaps receiving; the queue
        // bounds how many are stored at once. Tasks of an abandoned upload finish on their
        // own and leave orphans for garbage collection.
        let mut in_flight = std::collections::VecDeque::new();
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut body = std::pin::pin!(body);
        let idle = self.config.file_body_idle_timeout;
        loop {
            let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
                NodeError::BadBody(format!("no body bytes for {} s", idle.as_secs()))
            })?;
            let frame = match next {
                Some(Ok(frame)) => Some(frame),
                Some(Err(e)) => return Err(NodeError::BadBody(e.to_string())),
                None => None,
            };
            if let Some(frame) = &frame {
                size += frame.len() as u64;
                if size > max || content_length.is_some_and(|len| size > len) {
                    return Err(NodeError::FileTooLarge {
                        max: max.min(content_length.unwrap_or(max)),
                    });
                }
                whole.update(frame);
                buffer.extend_from_slice(frame);
            }
            let done = frame.is_none();
            while buffer.len() >= chunk_bytes || (done && !buffer.is_empty()) {
                let take = buffer.len().min(chunk_bytes);
                let chunk = buffer.split_to(take).freeze();
                if in_flight.len() >= UPLOAD_CHUNKS_IN_FLIGHT {
                    chunks.push(joined(in_flight.pop_front().expect("in flight")).await?);
                }
                let node = self.clone();
                let members = members.clone();
                in_flight.push_back(tokio::spawn(async move {
                    node.store_chunk(chunk, &members).await
                }));
            }
            if done {
                break;
            }
        }
        if let Some(expected) = content_length {
            if size != expected {
                return Err(NodeError::BadBody(format!(
                    "the body has {size} bytes but Content-Length said {expected}"
                )));
            }
        }
        while let Some(task) = in_flight.pop_front() {
            chunks.push(joined(task).await?);
        }
        // Garbage collection spares an unreferenced chunk for the grace period after it was
        // written; committing later than half of that could race it (module docs).
        let limit = self.config.file_gc_grace / 2;
        if started.elapsed() > limit {
            return Err(NodeError::Timeout {
                what: "the upload (longer than half the GC grace period)",
                ms: limit.as_millis() as u64,
            });
        }
        let file = NewFile {
            path: path.to_owned(),
            size,
            blake3: *whole.finalize().as_bytes(),
            content_type: content_type.to_owned(),
            chunk_bytes: self.config.file_chunk_bytes,
            chunks,
        };
        match self
            .write(Command::File(FileCommand::Put(file.clone())))
            .await?
        {
            Response::File(FileOutcome::Stored {
                version,
                created_ms,
            }) => Ok(Manifest {
                path: file.path,
                size: file.size,
                blake3: file.blake3,
                content_type: file.content_type,
                chunk_bytes: file.chunk_bytes,
                chunks: file.chunks,
                created_ms,
                version,
            }),
            other => Err(file_outcome_error(other)),
        }
    }

    /// Stores one chunk on R nodes: the first R in its rendezvous order, moving on to the
    /// next member whenever one fails. Succeeds with R copies, or with a write quorum of R
    /// (a majority) when too few members are reachable; repair adds the rest later.
    async fn store_chunk(
        &self,
        chunk: Bytes,
        members: &[(NodeId, String)],
    ) -> Result<ChunkRef, NodeError> {
        let hash = *blake3::hash(&chunk).as_bytes();
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        let replicas = self.replicas_for(ids.len());
        let quorum = replicas / 2 + 1;
        // Members known to be down go last: tried only if the others are not enough.
        let mut order = rendezvous(&hash, &ids);
        order.sort_by_key(|id| *id != self.config.id && self.files.is_down(*id, Duration::ZERO));
        let mut candidates = order.into_iter();
        let mut pending = FuturesUnordered::new();
        for id in candidates.by_ref().take(replicas) {
            pending.push(self.put_chunk_on(id, members, hash, chunk.clone()));
        }
        let mut acks = 0;
        let mut last_error = None;
        while let Some(result) = pending.next().await {
            match result {
                Ok(()) => acks += 1,
                Err(e) => {
                    last_error = Some(e);
                    if let Some(id) = candidates.next() {
                        pending.push(self.put_chunk_on(id, members, hash, chunk.clone()));
                    }
                }
            }
        }
        if acks >= quorum {
            if acks < replicas {
                tracing::warn!(
                    "chunk {} stored on {acks} of {replicas} nodes; repair will add the rest",
                    hex(&hash)
                );
            }
            Ok(ChunkRef {
                hash,
                size: chunk.len() as u32,
            })
        } else if let Some(NodeError::QuotaExceeded(usage)) = last_error {
            // Every holder tried was full: say so, rather than that too few answered.
            Err(NodeError::QuotaExceeded(usage))
        } else {
            Err(NodeError::InsufficientReplicas {
                needed: quorum,
                stored: acks,
                last_error: last_error.map(|e| e.to_string()).unwrap_or_default(),
            })
        }
    }

    async fn put_chunk_on(
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
                self.transport()
                    .http()
                    .put(format!("http://{addr}{}/{}", route::CHUNKS, hex(&hash)))
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
    async fn chunk_request(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, NodeError> {
        if self.is_isolated() {
            return Err(NodeError::Internal(
                "this node is cut off from its peers (dev playground)".into(),
            ));
        }
        request
            .send()
            .await
            .map_err(|e| NodeError::Internal(format!("chunk transfer: {e}")))
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

    async fn get_chunk_from(
        &self,
        id: NodeId,
        members: &[(NodeId, String)],
        hash: Hash,
    ) -> Result<Bytes, NodeError> {
        let addr = member_addr(members, id)?;
        let result = self
            .chunk_request(
                self.transport()
                    .http()
                    .get(format!("http://{addr}{}/{}", route::CHUNKS, hex(&hash)))
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
    async fn ask_have(
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
                self.transport()
                    .http()
                    .post(format!("http://{addr}{}", route::HAVE))
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

    /// Deletes the file at `path`; returns whether there was one.
    pub async fn delete_file(&self, path: &str) -> Result<bool, NodeError> {
        files::validate_path(path)?;
        let command = Command::File(FileCommand::Delete {
            path: path.to_owned(),
        });
        match self.write(command).await? {
            Response::File(FileOutcome::Deleted { deleted }) => Ok(deleted),
            other => Err(file_outcome_error(other)),
        }
    }

    /// Creates a share link for `path` living `ttl_s` seconds. `None` when there is no such
    /// file.
    pub async fn share_file(&self, path: &str, ttl_s: u64) -> Result<Option<Share>, NodeError> {
        files::validate_path(path)?;
        if ttl_s == 0 || ttl_s > files::SHARE_TTL_S_MAX {
            return Err(kith_core::limits::InvalidInput::TtlOutOfRange {
                got: ttl_s,
                max: files::SHARE_TTL_S_MAX,
            }
            .into());
        }
        let mut token = [0u8; 16];
        getrandom::fill(&mut token)
            .map_err(|e| NodeError::Internal(format!("random token: {e}")))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let command = Command::File(FileCommand::Share {
            token: token.clone(),
            path: path.to_owned(),
            ttl_ms: ttl_s * 1000,
        });
        match self.write(command).await? {
            Response::File(FileOutcome::Shared { expires_at_ms }) => Ok(Some(Share {
                token,
                path: path.to_owned(),
                expires_at_ms,
            })),
            Response::File(FileOutcome::NoSuchFile) => Ok(None),
            other => Err(file_outcome_error(other)),
        }
    }

    /// Revokes a share link; returns whether it existed.
    pub async fn unshare(&self, token: &str) -> Result<bool, NodeError> {
        let command = Command::File(FileCommand::Unshare {
            token: token.to_owned(),
        });
        match self.write(command).await? {
            Response::File(FileOutcome::Unshared { revoked }) => Ok(revoked),
            other => Err(file_outcome_error(other)),
        }
    }

    /// Resolves a share token (linearizably: a revoked link stops working everywhere at
    /// once). Expiry is judged by this node's clock against the leader-stamped deadline.
    pub async fn lookup_share(&self, token: &str) -> Result<ShareLookup, NodeError> {
        if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(ShareLookup::Unknown);
        }
        let state = self.read(Consistency::Linearizable).await?;
        let Some(share) = state.share(token)? else {
            return Ok(ShareLookup::Unknown);
        };
        if share.expires_at_ms <= crate::node::wall_clock_ms() {
            return Ok(ShareLookup::Expired);
        }
        match state.file(&share.path)? {
            Some(manifest) => Ok(ShareLookup::Found(share, manifest)),
            None => Ok(ShareLookup::FileGone(share)),
        }
    }

    /// The bytes `start..end` of a file, as a stream of verified chunk slices. Chunks are
    /// fetched up to [`DOWNLOAD_CHUNKS_AHEAD`] ahead of the consumer, so memory stays
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

    /// Where each chunk of `manifest` lives now, and where it should.
    pub async fn explain(&self, manifest: &Manifest) -> Vec<ChunkPlacement> {
        let members = self.file_members();
        let hashes: Vec<Hash> = manifest.chunks.iter().map(|c| c.hash).collect();
        let answers = futures::future::join_all(
            members
                .iter()
                .map(|(id, _)| self.ask_have(*id, &members, &hashes)),
        )
        .await;
        let chunk_bytes = u64::from(manifest.chunk_bytes);
        manifest
            .chunks
            .iter()
            .enumerate()
            .map(|(index, chunk)| ChunkPlacement {
                index,
                offset: index as u64 * chunk_bytes,
                size: chunk.size,
                hash: hex(&chunk.hash),
                holders: members
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| a.as_ref().is_ok_and(|have| have.get(index) == Some(&true)))
                    .map(|((id, _), _)| *id)
                    .collect(),
                desired: self.desired_holders(&chunk.hash, &members),
            })
            .collect()
    }

    /// Starts the repair, scrub and garbage-collection loop.
    pub(crate) fn start_file_tasks(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        let task = tokio::spawn(file_tasks(node));
        *self.files.task.lock().expect("task lock") = Some(task);
    }

    /// One repair pass: fetch every referenced chunk this node should hold but lacks.
    /// Returns how many chunks it repaired.
    pub async fn repair_pass(&self) -> Result<u64, NodeError> {
        let members = self.file_members();
        // Probe every peer, so liveness reflects now rather than the last transfer.
        for (id, _) in &members {
            if *id != self.config.id {
                let _ = self.ask_have(*id, &members, &[]).await;
            }
        }
        let mut repaired = 0;
        let mut attempts = 0;
        let mut after: Option<Hash> = None;
        loop {
            let page = self.state().referenced_chunks(after.as_ref(), PASS_PAGE)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            for hash in page {
                if !self
                    .desired_holders(&hash, &members)
                    .contains(&self.config.id)
                    || self.files.store.has(&hash)
                {
                    continue;
                }
                attempts += 1;
                if attempts > REPAIRS_PER_PASS_MAX {
                    return Ok(repaired);
                }
                match self.fetch_chunk(hash).await {
                    Ok(_) if self.files.store.has(&hash) => repaired += 1,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("repair of chunk {}: {e}", hex(&hash)),
                }
            }
        }
        Ok(repaired)
    }

    /// One garbage-collection pass over the local chunks; returns how many it deleted.
    pub async fn gc_pass(&self) -> Result<u64, NodeError> {
        let grace = self.config.file_gc_grace;
        let mut collected = 0;
        let mut after: Option<Hash> = None;
        let mut seen_unreferenced = Vec::new();
        loop {
            // A read index first: every manifest committed before now is in the local state.
            self.read_barrier(Consistency::Linearizable).await?;
            let store = self.files.store.clone();
            let from = after;
            let page = blocking(move || store.list(from.as_ref(), PASS_PAGE)).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.hash);
            for info in page {
                if self.state().chunk_referenced(&info.hash)? {
                    continue;
                }
                seen_unreferenced.push(info.hash);
                let since = *self
                    .files
                    .unreferenced_since
                    .lock()
                    .expect("gc lock")
                    .entry(info.hash)
                    .or_insert_with(Instant::now);
                let old_file = info.modified.elapsed().unwrap_or_default() >= grace;
                if since.elapsed() >= grace && old_file {
                    let store = self.files.store.clone();
                    let hash = info.hash;
                    if blocking(move || store.remove_if_older(&hash, grace)).await? {
                        collected += 1;
                    }
                }
            }
        }
        // Forget chunks that became referenced again or are gone.
        let mut tracked = self.files.unreferenced_since.lock().expect("gc lock");
        let keep: std::collections::HashSet<Hash> = seen_unreferenced.into_iter().collect();
        tracked.retain(|hash, _| keep.contains(hash) && self.files.store.has(hash));
        self.files
            .counters
            .chunks_collected
            .fetch_add(collected, Ordering::Relaxed);
        Ok(collected)
    }

    /// Re-hashes up to `bytes_budget` bytes of local chunks starting after `after`; returns
    /// where it stopped (`None` after the last chunk) and the bytes it read.
    async fn scrub_step(
        self: &Arc<Self>,
        after: Option<Hash>,
        bytes_budget: u64,
    ) -> Result<(Option<Hash>, u64), NodeError> {
        let store = self.files.store.clone();
        let page = blocking(move || store.list(after.as_ref(), 64)).await?;
        let mut read = 0;
        let mut cursor = after;
        for info in page {
            if read >= bytes_budget {
                return Ok((cursor, read));
            }
            cursor = Some(info.hash);
            read += info.bytes;
            // `local_chunk` verifies, deletes a corrupt copy and starts its repair.
            self.local_chunk(info.hash).await?;
        }
        if cursor == after {
            return Ok((None, read));
        }
        Ok((cursor, read))
    }
}

/// The node's background files loop: scrub continuously at its byte rate; repair and GC
/// every `file_repair_interval`. Holds only a weak reference, so it ends with the node.
async fn file_tasks(node: Weak<Node>) {
    let mut scrub_cursor: Option<Hash> = None;
    let mut last_pass = Instant::now();
    let tick = Duration::from_millis(250);
    loop {
        tokio::time::sleep(tick).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let rate = node.config.file_scrub_bytes_per_s;
        if rate > 0 {
            let budget = (rate / 4).max(1);
            match node.scrub_step(scrub_cursor, budget).await {
                Ok((cursor, bytes)) => {
                    scrub_cursor = cursor;
                    node.files
                        .counters
                        .bytes_scrubbed
                        .fetch_add(bytes, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!("scrub: {e}"),
            }
        }
        if last_pass.elapsed() < node.config.file_repair_interval {
            continue;
        }
        last_pass = Instant::now();
        if !node.health().ready {
            continue;
        }
        match node.repair_pass().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("repair: fetched {n} chunks this node should hold"),
            Err(e) => tracing::debug!("repair: {e}"),
        }
        match node.gc_pass().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("gc: deleted {n} unreferenced chunks"),
            Err(e) => tracing::debug!("gc: {e}"),
        }
    }
}

fn member_addr(members: &[(NodeId, String)], id: NodeId) -> Result<&str, NodeError> {
    members
        .iter()
        .find(|(m, _)| *m == id)
        .map(|(_, addr)| addr.as_str())
        .ok_or_else(|| NodeError::Internal(format!("node {id} is not a member")))
}

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

/// A receiver as a stream (without pulling in tokio-stream for one adapter).
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
