//! Writing files: an upload cut into chunks, each stored on R nodes, then one manifest
//! committed through Raft; and deleting a file's manifest (its chunks are left to GC).
//!
//! Refuses: HTTP headers (kith-api reads `Content-Type` and `Content-Length`) and judging a
//! manifest (kith-core's `validate_new_file`, applied by every node).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::file_outcome_error;
use crate::{Node, NodeError};
use kith_core::files::{
    self, hex, rendezvous, ChunkRef, FileCommand, FileOutcome, Hash, Manifest, NewFile,
};
use kith_core::{Command, NodeId, Response};

/// Chunks of one upload stored concurrently; bounds an upload's memory to about this many
/// chunks plus the one being cut.
const UPLOAD_CHUNKS_IN_FLIGHT: usize = 4;

impl Node {
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
        let _permit = self.admit_upload(content_length)?;
        let started = Instant::now();
        let members = self.file_members();
        if members.is_empty() {
            return Err(NodeError::NoLeader);
        }
        let (size, blake3, chunks) = self.store_body(body, content_length, members).await?;
        self.check_commit_deadline(started)?;
        self.commit_manifest(NewFile {
            path: path.to_owned(),
            size,
            blake3,
            content_type: content_type.to_owned(),
            chunk_bytes: self.config.file_chunk_bytes,
            chunks,
        })
        .await
    }

    /// Refuses an upload that announces too many bytes, or that would exceed the concurrent
    /// uploads bound (`file_uploads_max`); the permit admits it until dropped.
    fn admit_upload(&self, content_length: Option<u64>) -> Result<OwnedSemaphorePermit, NodeError> {
        let max = self.config.file_bytes_max;
        if content_length.is_some_and(|len| len > max) {
            return Err(NodeError::FileTooLarge { max });
        }
        self.files
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| NodeError::Busy {
                what: "uploads",
                max: self.config.file_uploads_max,
            })
    }

    /// Receives `body`, cutting it into chunks and storing each on R of `members`; returns
    /// the file's size, its BLAKE3 hash and its chunks in order.
    async fn store_body<S, E>(
        self: &Arc<Self>,
        body: S,
        content_length: Option<u64>,
        members: Vec<(NodeId, String)>,
    ) -> Result<(u64, Hash, Vec<ChunkRef>), NodeError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut cutter = ChunkCutter::new(
            self.config.file_chunk_bytes as usize,
            self.config.file_bytes_max,
            content_length,
        );
        // Each chunk is stored by its own task, so storing overlaps receiving; the queue
        // bounds how many are stored at once. Tasks of an abandoned upload finish on their
        // own and leave orphans for garbage collection.
        let mut in_flight = VecDeque::new();
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut body = std::pin::pin!(body);
        loop {
            let frame = next_frame(&mut body, self.config.file_body_idle_timeout).await?;
            if let Some(frame) = &frame {
                cutter.push(frame)?;
            }
            let done = frame.is_none();
            while let Some(chunk) = cutter.next_chunk(done) {
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
        let (size, blake3) = cutter.finish()?;
        while let Some(task) = in_flight.pop_front() {
            chunks.push(joined(task).await?);
        }
        Ok((size, blake3, chunks))
    }

    /// Refuses to commit an upload that has taken longer than half the GC grace period: its
    /// first chunks could be collected before the manifest is visible (the rule is in the
    /// [module docs](super), "Garbage collection").
    fn check_commit_deadline(&self, started: Instant) -> Result<(), NodeError> {
        let limit = self.config.file_gc_grace / 2;
        if started.elapsed() > limit {
            return Err(NodeError::Timeout {
                what: "the upload (longer than half the GC grace period)",
                ms: limit.as_millis() as u64,
            });
        }
        Ok(())
    }

    /// Commits `file`'s manifest through Raft; the file becomes visible at its new version.
    async fn commit_manifest(&self, file: NewFile) -> Result<Manifest, NodeError> {
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
}

/// The next frame of an upload's body; `None` at its end. A body that sends nothing for
/// `idle` is abandoned.
async fn next_frame<S, E>(
    body: &mut std::pin::Pin<&mut S>,
    idle: Duration,
) -> Result<Option<Bytes>, NodeError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let next = tokio::time::timeout(idle, body.next())
        .await
        .map_err(|_| NodeError::BadBody(format!("no body bytes for {} s", idle.as_secs())))?;
    match next {
        Some(Ok(frame)) => Ok(Some(frame)),
        Some(Err(e)) => Err(NodeError::BadBody(e.to_string())),
        None => Ok(None),
    }
}

/// A chunk-storing task's result.
async fn joined<T>(task: tokio::task::JoinHandle<Result<T, NodeError>>) -> Result<T, NodeError> {
    task.await
        .map_err(|e| NodeError::Internal(format!("chunk task: {e}")))?
}

/// Cuts an upload's body into chunks of `chunk_bytes` (the last one may be shorter), hashing
/// the whole file on the way and holding it to its size bounds. No I/O.
struct ChunkCutter {
    chunk_bytes: usize,
    /// `file_bytes_max`.
    bytes_max: u64,
    /// What the client announced, if it did.
    content_length: Option<u64>,
    /// Received bytes not yet cut off as a chunk; less than `chunk_bytes` between frames.
    buffer: BytesMut,
    whole: blake3::Hasher,
    size: u64,
}

impl ChunkCutter {
    fn new(chunk_bytes: usize, bytes_max: u64, content_length: Option<u64>) -> Self {
        ChunkCutter {
            chunk_bytes,
            bytes_max,
            content_length,
            buffer: BytesMut::with_capacity(chunk_bytes),
            whole: blake3::Hasher::new(),
            size: 0,
        }
    }

    /// Takes one frame of the body; refuses it when the file grows past `bytes_max` or past
    /// the announced length.
    fn push(&mut self, frame: &[u8]) -> Result<(), NodeError> {
        self.size += frame.len() as u64;
        let max = self.bytes_max;
        if self.size > max || self.content_length.is_some_and(|len| self.size > len) {
            return Err(NodeError::FileTooLarge {
                max: max.min(self.content_length.unwrap_or(max)),
            });
        }
        self.whole.update(frame);
        self.buffer.extend_from_slice(frame);
        Ok(())
    }

    /// The next full chunk; once the body has ended (`done`), also the shorter last one.
    fn next_chunk(&mut self, done: bool) -> Option<Bytes> {
        if self.buffer.len() >= self.chunk_bytes || (done && !self.buffer.is_empty()) {
            let take = self.buffer.len().min(self.chunk_bytes);
            return Some(self.buffer.split_to(take).freeze());
        }
        None
    }

    /// The file's size and BLAKE3 hash once the body has ended, refused when the body was
    /// shorter than its announced length.
    fn finish(self) -> Result<(u64, Hash), NodeError> {
        let size = self.size;
        if let Some(expected) = self.content_length {
            if size != expected {
                return Err(NodeError::BadBody(format!(
                    "the body has {size} bytes but Content-Length said {expected}"
                )));
            }
        }
        Ok((size, *self.whole.finalize().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `frames` through a cutter and returns the chunks it cut, in order.
    fn cut(cutter: &mut ChunkCutter, frames: &[&[u8]]) -> Result<Vec<Bytes>, NodeError> {
        let mut chunks = Vec::new();
        for frame in frames {
            cutter.push(frame)?;
            while let Some(chunk) = cutter.next_chunk(false) {
                chunks.push(chunk);
            }
        }
        while let Some(chunk) = cutter.next_chunk(true) {
            chunks.push(chunk);
        }
        Ok(chunks)
    }

    #[test]
    fn chunks_are_full_but_the_last_whatever_the_frames() {
        let mut cutter = ChunkCutter::new(4, 100, None);
        let chunks = cut(&mut cutter, &[b"ab", b"cdefg", b"", b"hij"]).unwrap();
        let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(chunks.concat(), b"abcdefghij");
        let (size, hash) = cutter.finish().unwrap();
        assert_eq!(size, 10);
        assert_eq!(&hash, blake3::hash(b"abcdefghij").as_bytes());
    }

    #[test]
    fn an_empty_body_has_no_chunks() {
        let mut cutter = ChunkCutter::new(4, 100, Some(0));
        assert!(cut(&mut cutter, &[]).unwrap().is_empty());
        assert_eq!(cutter.finish().unwrap().0, 0);
    }

    #[test]
    fn a_body_past_the_limit_or_its_length_is_refused() {
        let mut cutter = ChunkCutter::new(4, 5, None);
        let refused = cut(&mut cutter, &[b"abc", b"def"]).unwrap_err();
        assert!(matches!(refused, NodeError::FileTooLarge { max: 5 }));
        let mut cutter = ChunkCutter::new(4, 100, Some(3));
        let refused = cut(&mut cutter, &[b"abcd"]).unwrap_err();
        assert!(matches!(refused, NodeError::FileTooLarge { max: 3 }));
    }

    #[test]
    fn a_body_shorter_than_its_length_is_refused() {
        let mut cutter = ChunkCutter::new(4, 100, Some(6));
        cut(&mut cutter, &[b"abcd"]).unwrap();
        assert!(matches!(cutter.finish(), Err(NodeError::BadBody(_))));
    }
}
