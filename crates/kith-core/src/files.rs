//! The files state machine: manifests, chunk reference counts and share links.
//!
//! A file's bytes never pass through Raft. The node that receives an upload stores each
//! chunk on several nodes first (kith-node's blob store), then proposes a [`NewFile`]: the
//! path, the size, the ordered chunk list and the whole-file hash. Applying it replaces any
//! previous manifest at that path in one step, which is what makes an overwrite atomic.
//!
//! Every chunk a manifest lists is counted in a reference table, so garbage collection can
//! tell a chunk nothing refers to (safe to reclaim after a grace period) from a live one, and
//! repair can walk every live chunk. Counts are per occurrence: a file that repeats a chunk
//! holds it twice and releases it twice.
//!
//! Share tokens are chosen by the API node (randomness stays out of this crate) and expire
//! by the leader's clock in the proposal, like every other time decision here.
//!
//! Placement is not part of the state: [`rendezvous`] derives a chunk's preferred holders
//! from its hash and the current members, so a membership change moves the desired
//! placement without rewriting any manifest.
//!
//! The public API's file bodies are defined here once, for the server that writes them and
//! the client that reads them: [`FileInfo`], [`FileExplain`], [`ChunkPlacement`], [`Share`]
//! (whose `url` is [`Share::url`]), and the path rule [`validate_path`], which the client
//! checks early.

use serde::{Deserialize, Serialize};

use crate::limits::{validate_range, InvalidInput, Limits};
use crate::{NodeId, Response};

/// A BLAKE3 hash (the ledger's type): names a chunk, and (over the whole content) a file.
/// `hex` is the ledger's lower-case hex encoding.
pub use crate::ledger::{to_hex as hex, Hash};

/// Default chunk size: big enough that per-chunk overhead (one request per replica, one
/// manifest entry) is small, small enough that range reads and repair move little extra.
pub const CHUNK_BYTES_DEFAULT: u32 = 1024 * 1024;
/// Largest chunk size a manifest may declare (and so largest chunk a node accepts).
pub const CHUNK_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Default largest file, in bytes (10 GiB); a node may configure another bound.
pub const FILE_BYTES_MAX_DEFAULT: u64 = 10 * 1024 * 1024 * 1024;
/// Most chunks one manifest may list: 64 GiB at the default chunk size. Bounds the size of
/// one Raft entry (about 36 bytes per chunk).
pub const FILE_CHUNKS_MAX: usize = 65_536;
/// Longest path, in bytes of UTF-8.
pub const PATH_BYTES_MAX: usize = 1024;
/// Longest path segment, in bytes (what common file systems allow for a name).
pub const SEGMENT_BYTES_MAX: usize = 255;
/// Longest content type, in bytes.
pub const CONTENT_TYPE_BYTES_MAX: usize = 255;
/// Most files the cluster holds.
pub const FILES_MAX: u64 = 1_000_000;
/// Most live share links the cluster holds.
pub const SHARES_MAX: u64 = 100_000;
/// Longest a share link may live, in seconds (30 days).
pub const SHARE_TTL_S_MAX: u64 = 30 * 24 * 3600;
/// A share link's life when the request names none, in seconds (one day).
pub const SHARE_TTL_S_DEFAULT: u64 = 24 * 3600;
/// Longest share token a command may carry. Nodes make tokens of 16 random bytes in hex
/// (32 characters); the bound only keeps a forged one small.
pub const SHARE_TOKEN_CHARS_MAX: usize = 64;
/// Files one page of `GET /v1/files` returns by default, and at most.
pub const LIST_FILES_DEFAULT: usize = 100;
pub const LIST_FILES_MAX: usize = 1000;
/// Expired share links dropped per file command (the rest go with later commands).
const SHARES_PRUNED_PER_APPLY_MAX: usize = 100;

/// One chunk of a file, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub size: u32,
}

/// What an upload proposes once every chunk is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFile {
    pub path: String,
    pub size: u64,
    /// BLAKE3 of the whole content.
    pub blake3: Hash,
    pub content_type: String,
    /// Every chunk but the last is exactly this long, so byte offsets map to chunks by
    /// division.
    pub chunk_bytes: u32,
    pub chunks: Vec<ChunkRef>,
}

/// A committed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub path: String,
    pub size: u64,
    pub blake3: Hash,
    pub content_type: String,
    pub chunk_bytes: u32,
    pub chunks: Vec<ChunkRef>,
    /// The leader's clock when the manifest was applied.
    pub created_ms: u64,
    /// The cluster's count of committed uploads when this one committed: grows with every
    /// upload and overwrite.
    pub version: u64,
}

impl Manifest {
    /// The chunks overlapping bytes `start..end`, with each chunk's index and byte offset.
    pub fn chunks_in(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (usize, u64, ChunkRef)> + '_ {
        let chunk_bytes = u64::from(self.chunk_bytes.max(1));
        let first = usize::try_from(start / chunk_bytes).unwrap_or(usize::MAX);
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .map(move |(i, c)| (i, i as u64 * chunk_bytes, *c))
            .take_while(move |(_, offset, _)| *offset < end)
    }
}

/// A share link: `token` downloads `path` until `expires_at_ms` (leader's clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub token: String,
    pub path: String,
    pub expires_at_ms: u64,
}

impl Share {
    /// The link's URL, relative (`/s/{token}`): valid on every node. The API returns it as
    /// `url`; it is never stored.
    pub fn url(&self) -> String {
        format!("/s/{}", self.token)
    }
}

/// A file as the API returns it from an upload, an explain and the listing: its manifest
/// without the chunk list. A response body, never stored; the defaults let a client read a
/// body that leaves the later fields out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    /// Whole-file BLAKE3 hash, hex.
    pub blake3: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub created_ms: u64,
    /// Uploads the cluster had committed when this one was, itself included; grows with every
    /// upload and overwrite.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub chunk_bytes: u64,
    #[serde(default)]
    pub chunk_count: u64,
    /// Copies each chunk gets in the current membership.
    #[serde(default)]
    pub replicas: u64,
}

impl FileInfo {
    /// `manifest` as clients see it, with `replicas` copies per chunk.
    pub fn new(manifest: &Manifest, replicas: usize) -> Self {
        FileInfo {
            path: manifest.path.clone(),
            size: manifest.size,
            blake3: hex(&manifest.blake3),
            content_type: manifest.content_type.clone(),
            created_ms: manifest.created_ms,
            version: manifest.version,
            chunk_bytes: u64::from(manifest.chunk_bytes),
            chunk_count: manifest.chunks.len() as u64,
            replicas: replicas as u64,
        }
    }
}

/// `GET /v1/files/{path}?explain=1`: a file and where each of its chunks lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileExplain {
    #[serde(flatten)]
    pub file: FileInfo,
    pub chunks: Vec<ChunkPlacement>,
}

/// Where one chunk of a file lives now and where it should (`GET /v1/files/{path}?explain=1`,
/// one per chunk). A response body: computed on request, never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlacement {
    pub index: usize,
    pub offset: u64,
    pub size: u32,
    /// The chunk's BLAKE3 hash, hex.
    pub hash: String,
    /// Members that answered that they hold a copy.
    pub holders: Vec<NodeId>,
    /// Where the chunk should live: the first R live members in its rendezvous order.
    pub desired: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileCommand {
    /// Commit a manifest, replacing any file at its path.
    Put(NewFile),
    Delete {
        path: String,
    },
    /// Create a share link that lives `ttl_ms` from the proposal's clock.
    Share {
        token: String,
        path: String,
        ttl_ms: u64,
    },
    Unshare {
        token: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOutcome {
    /// The manifest was committed at `version`.
    Stored {
        version: u64,
        created_ms: u64,
    },
    Deleted {
        deleted: bool,
    },
    Shared {
        expires_at_ms: u64,
    },
    Unshared {
        revoked: bool,
    },
    /// A share named a path with no file.
    NoSuchFile,
    /// The manifest did not describe a well-formed file; nothing changed. The API validates
    /// before proposing, so this only answers a buggy or hostile peer.
    Invalid {
        reason: String,
    },
    /// The cluster already holds `max` files (or share links).
    Full {
        max: u64,
    },
}

/// Storage the files state machine runs against.
pub trait FilesTable {
    type Error;
    fn file(&mut self, path: &str) -> Result<Option<Manifest>, Self::Error>;
    fn put_file(&mut self, manifest: &Manifest) -> Result<(), Self::Error>;
    fn remove_file(&mut self, path: &str) -> Result<(), Self::Error>;
    fn file_count(&mut self) -> Result<u64, Self::Error>;
    /// The next manifest version (a counter of committed uploads, starting at 1).
    fn next_version(&mut self) -> Result<u64, Self::Error>;
    /// References to `hash` from committed manifests (0 when none).
    fn chunk_refs(&mut self, hash: &Hash) -> Result<u64, Self::Error>;
    /// Sets the count; 0 removes the chunk from the table.
    fn set_chunk_refs(&mut self, hash: &Hash, refs: u64) -> Result<(), Self::Error>;
    fn share(&mut self, token: &str) -> Result<Option<Share>, Self::Error>;
    fn put_share(&mut self, share: &Share) -> Result<(), Self::Error>;
    fn remove_share(&mut self, share: &Share) -> Result<(), Self::Error>;
    fn share_count(&mut self) -> Result<u64, Self::Error>;
    /// Up to `limit` shares with `expires_at_ms <= now_ms`, earliest first.
    fn shares_expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<Share>, Self::Error>;
}

/// Checks a file path: see docs/FILES.md ("Paths").
pub fn validate_path(path: &str) -> Result<(), InvalidInput> {
    let bad = |reason: &'static str| Err(InvalidInput::BadPath { reason });
    if path.is_empty() {
        return bad("path must not be empty");
    }
    if path.len() > PATH_BYTES_MAX {
        return bad("path is longer than 1024 bytes");
    }
    if path.starts_with('/') || path.ends_with('/') {
        return bad("path must not start or end with '/'");
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return bad("path must not contain empty segments ('//')");
        }
        if segment == "." || segment == ".." {
            return bad("path must not contain '.' or '..' segments");
        }
        if segment.len() > SEGMENT_BYTES_MAX {
            return bad("a path segment is longer than 255 bytes");
        }
        if segment.chars().any(|c| c.is_control() || c == '\\') {
            return bad("path must not contain control characters, NUL or '\\'");
        }
    }
    Ok(())
}

/// Checks that a manifest describes a well-formed file.
pub fn validate_new_file(file: &NewFile) -> Result<(), String> {
    validate_path(&file.path).map_err(|e| e.to_string())?;
    if file.content_type.len() > CONTENT_TYPE_BYTES_MAX
        || file.content_type.chars().any(char::is_control)
    {
        return Err("content type is too long or has control characters".into());
    }
    if file.chunk_bytes == 0 || file.chunk_bytes > CHUNK_BYTES_MAX {
        return Err(format!("chunk size must be 1..={CHUNK_BYTES_MAX} bytes"));
    }
    if file.chunks.len() > FILE_CHUNKS_MAX {
        return Err(format!("a file may have at most {FILE_CHUNKS_MAX} chunks"));
    }
    let expected = file.size.div_ceil(u64::from(file.chunk_bytes));
    if expected != file.chunks.len() as u64 {
        return Err(format!(
            "{} bytes in chunks of {} need {expected} chunks, not {}",
            file.size,
            file.chunk_bytes,
            file.chunks.len()
        ));
    }
    let mut total = 0u64;
    for (i, chunk) in file.chunks.iter().enumerate() {
        let last = i + 1 == file.chunks.len();
        let full = chunk.size == file.chunk_bytes;
        if chunk.size == 0 || (!last && !full) || chunk.size > file.chunk_bytes {
            return Err(format!("chunk {i} has the wrong size ({})", chunk.size));
        }
        total += u64::from(chunk.size);
    }
    if total != file.size {
        return Err(format!("chunks hold {total} bytes, not {}", file.size));
    }
    Ok(())
}

/// Checks a share token's form: 1 to [`SHARE_TOKEN_CHARS_MAX`] ASCII letters and digits.
pub fn validate_share_token(token: &str) -> Result<(), InvalidInput> {
    if token.is_empty()
        || token.len() > SHARE_TOKEN_CHARS_MAX
        || !token.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(InvalidInput::OutOfRange {
            what: "share token",
            expected: format!("1 to {SHARE_TOKEN_CHARS_MAX} letters and digits"),
        });
    }
    Ok(())
}

impl FileCommand {
    /// Checks everything the command carries, as the upload, delete and share routes do.
    pub fn validate(&self, limits: &Limits) -> Result<(), InvalidInput> {
        match self {
            FileCommand::Put(file) => {
                validate_new_file(file).map_err(InvalidInput::BadManifest)?;
                if file.size > limits.file_bytes_max {
                    return Err(InvalidInput::TooLarge {
                        what: "file",
                        len: usize::try_from(file.size).unwrap_or(usize::MAX),
                        max: usize::try_from(limits.file_bytes_max).unwrap_or(usize::MAX),
                    });
                }
                Ok(())
            }
            FileCommand::Delete { path } => validate_path(path),
            FileCommand::Share {
                token,
                path,
                ttl_ms,
            } => {
                validate_share_token(token)?;
                validate_path(path)?;
                validate_range("share ttl", *ttl_ms, 1, SHARE_TTL_S_MAX * 1000, "ms")
            }
            FileCommand::Unshare { token } => validate_share_token(token),
        }
    }
}

fn retain_chunks<T: FilesTable>(table: &mut T, chunks: &[ChunkRef]) -> Result<(), T::Error> {
    for chunk in chunks {
        let refs = table.chunk_refs(&chunk.hash)?;
        table.set_chunk_refs(&chunk.hash, refs.saturating_add(1))?;
    }
    Ok(())
}

fn release_chunks<T: FilesTable>(table: &mut T, chunks: &[ChunkRef]) -> Result<(), T::Error> {
    for chunk in chunks {
        let refs = table.chunk_refs(&chunk.hash)?;
        assert!(refs > 0, "a committed manifest's chunk must be referenced");
        table.set_chunk_refs(&chunk.hash, refs - 1)?;
    }
    Ok(())
}

/// Applies one file command with the leader's clock `now_ms`.
pub fn apply<T: FilesTable>(
    table: &mut T,
    now_ms: u64,
    command: &FileCommand,
) -> Result<Response, T::Error> {
    for share in table.shares_expired(now_ms, SHARES_PRUNED_PER_APPLY_MAX)? {
        table.remove_share(&share)?;
    }
    // A manifest keeps its own refusal (older entries answered it); the rest are rejected.
    if let FileCommand::Put(file) = command {
        if let Err(reason) = validate_new_file(file) {
            return Ok(Response::File(FileOutcome::Invalid { reason }));
        }
    }
    if let Err(e) = command.validate(&Limits::CEILING) {
        return Ok(Response::Rejected {
            reason: e.to_string(),
        });
    }
    let outcome = match command {
        FileCommand::Put(file) => {
            let previous = table.file(&file.path)?;
            if previous.is_none() && table.file_count()? >= FILES_MAX {
                return Ok(Response::File(FileOutcome::Full { max: FILES_MAX }));
            }
            let version = table.next_version()?;
            // Retain the new chunks before releasing the old ones, so a chunk both versions
            // share never drops to zero in between.
            retain_chunks(table, &file.chunks)?;
            if let Some(old) = &previous {
                release_chunks(table, &old.chunks)?;
            }
            let manifest = Manifest {
                path: file.path.clone(),
                size: file.size,
                blake3: file.blake3,
                content_type: file.content_type.clone(),
                chunk_bytes: file.chunk_bytes,
                chunks: file.chunks.clone(),
                created_ms: now_ms,
                version,
            };
            table.put_file(&manifest)?;
            FileOutcome::Stored {
                version,
                created_ms: now_ms,
            }
        }
        FileCommand::Delete { path } => match table.file(path)? {
            Some(old) => {
                release_chunks(table, &old.chunks)?;
                table.remove_file(path)?;
                FileOutcome::Deleted { deleted: true }
            }
            None => FileOutcome::Deleted { deleted: false },
        },
        FileCommand::Share {
            token,
            path,
            ttl_ms,
        } => {
            if table.file(path)?.is_none() {
                FileOutcome::NoSuchFile
            } else if table.share(token)?.is_none() && table.share_count()? >= SHARES_MAX {
                FileOutcome::Full { max: SHARES_MAX }
            } else {
                if let Some(old) = table.share(token)? {
                    table.remove_share(&old)?;
                }
                let share = Share {
                    token: token.clone(),
                    path: path.clone(),
                    expires_at_ms: now_ms.saturating_add(*ttl_ms),
                };
                table.put_share(&share)?;
                FileOutcome::Shared {
                    expires_at_ms: share.expires_at_ms,
                }
            }
        }
        FileCommand::Unshare { token } => match table.share(token)? {
            Some(share) => {
                table.remove_share(&share)?;
                FileOutcome::Unshared { revoked: true }
            }
            None => FileOutcome::Unshared { revoked: false },
        },
    };
    Ok(Response::File(outcome))
}

/// `nodes` ordered by preference for holding the chunk `hash`: highest-random-weight
/// (rendezvous) hashing. Adding or removing a node only moves the chunks whose top R it
/// enters or leaves, and every node computes the same order without coordination.
pub fn rendezvous(hash: &Hash, nodes: &[NodeId]) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = nodes
        .iter()
        .map(|&node| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(hash);
            hasher.update(&node.to_le_bytes());
            let digest = hasher.finalize();
            let mut score = [0u8; 8];
            score.copy_from_slice(&digest.as_bytes()[..8]);
            (u64::from_le_bytes(score), node)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, node)| node).collect()
}

/// Parses 64 hex digits into a hash.
pub fn parse_hex(text: &str) -> Option<Hash> {
    blake3::Hash::from_hex(text).ok().map(|h| *h.as_bytes())
}

/// An in-memory [`FilesTable`], for tests and for reasoning about the state machine.
#[derive(Debug, Default)]
pub struct MemFiles {
    pub files: std::collections::BTreeMap<String, Manifest>,
    pub refs: std::collections::BTreeMap<Hash, u64>,
    pub shares: std::collections::BTreeMap<String, Share>,
    pub versions: u64,
}

impl FilesTable for MemFiles {
    type Error = std::convert::Infallible;
    fn file(&mut self, path: &str) -> Result<Option<Manifest>, Self::Error> {
        Ok(self.files.get(path).cloned())
    }
    fn put_file(&mut self, manifest: &Manifest) -> Result<(), Self::Error> {
        self.files.insert(manifest.path.clone(), manifest.clone());
        Ok(())
    }
    fn remove_file(&mut self, path: &str) -> Result<(), Self::Error> {
        self.files.remove(path);
        Ok(())
    }
    fn file_count(&mut self) -> Result<u64, Self::Error> {
        Ok(self.files.len() as u64)
    }
    fn next_version(&mut self) -> Result<u64, Self::Error> {
        self.versions += 1;
        Ok(self.versions)
    }
    fn chunk_refs(&mut self, hash: &Hash) -> Result<u64, Self::Error> {
        Ok(self.refs.get(hash).copied().unwrap_or(0))
    }
    fn set_chunk_refs(&mut self, hash: &Hash, refs: u64) -> Result<(), Self::Error> {
        if refs == 0 {
            self.refs.remove(hash);
        } else {
            self.refs.insert(*hash, refs);
        }
        Ok(())
    }
    fn share(&mut self, token: &str) -> Result<Option<Share>, Self::Error> {
        Ok(self.shares.get(token).cloned())
    }
    fn put_share(&mut self, share: &Share) -> Result<(), Self::Error> {
        self.shares.insert(share.token.clone(), share.clone());
        Ok(())
    }
    fn remove_share(&mut self, share: &Share) -> Result<(), Self::Error> {
        self.shares.remove(&share.token);
        Ok(())
    }
    fn share_count(&mut self) -> Result<u64, Self::Error> {
        Ok(self.shares.len() as u64)
    }
    fn shares_expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<Share>, Self::Error> {
        let mut due: Vec<Share> = self
            .shares
            .values()
            .filter(|s| s.expires_at_ms <= now_ms)
            .cloned()
            .collect();
        due.sort_by_key(|s| s.expires_at_ms);
        due.truncate(limit);
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8, size: u32) -> ChunkRef {
        ChunkRef {
            hash: [byte; 32],
            size,
        }
    }

    fn file(path: &str, chunks: Vec<ChunkRef>) -> NewFile {
        NewFile {
            path: path.into(),
            size: chunks.iter().map(|c| u64::from(c.size)).sum(),
            blake3: [0; 32],
            content_type: "application/octet-stream".into(),
            chunk_bytes: 4,
            chunks,
        }
    }

    fn put(t: &mut MemFiles, f: NewFile) -> Response {
        apply(t, 1_000, &FileCommand::Put(f)).unwrap()
    }

    #[test]
    fn paths_are_checked() {
        for good in ["a", "a/b.txt", "photos/2026/cat 1.jpg", "ünï/ cödé"] {
            assert!(validate_path(good).is_ok(), "{good}");
        }
        let long_segment = "s".repeat(256);
        let long_path = ["p"; 600].join("/");
        for bad in [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "..",
            "a/../b",
            "./a",
            "a\0b",
            "a\\b",
            "a\nb",
            long_segment.as_str(),
            long_path.as_str(),
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn manifests_must_be_well_formed() {
        assert!(validate_new_file(&file("f", vec![chunk(1, 4), chunk(2, 1)])).is_ok());
        assert!(validate_new_file(&file("f", vec![])).is_ok(), "empty file");
        // A short chunk before the last breaks offset arithmetic.
        assert!(validate_new_file(&file("f", vec![chunk(1, 3), chunk(2, 4)])).is_err());
        let mut wrong_size = file("f", vec![chunk(1, 4)]);
        wrong_size.size = 5;
        assert!(validate_new_file(&wrong_size).is_err());
        let mut t = MemFiles::default();
        let r = put(&mut t, file("../x", vec![chunk(1, 4)]));
        assert!(matches!(r, Response::File(FileOutcome::Invalid { .. })));
        assert!(t.files.is_empty() && t.refs.is_empty());
    }

    #[test]
    fn overwrite_and_delete_keep_reference_counts() {
        let mut t = MemFiles::default();
        put(
            &mut t,
            file("a", vec![chunk(1, 4), chunk(1, 4), chunk(2, 2)]),
        );
        put(&mut t, file("b", vec![chunk(2, 4)]));
        assert_eq!(t.refs.get(&[1; 32]), Some(&2));
        assert_eq!(t.refs.get(&[2; 32]), Some(&2));
        // Overwrite a: chunk 1 goes away, chunk 3 arrives, the shared chunk 2 stays.
        let r = put(&mut t, file("a", vec![chunk(2, 4), chunk(3, 1)]));
        assert_eq!(
            r,
            Response::File(FileOutcome::Stored {
                version: 3,
                created_ms: 1_000
            })
        );
        assert_eq!(t.files["a"].version, 3);
        assert_eq!(t.refs.get(&[1; 32]), None);
        assert_eq!(t.refs.get(&[2; 32]), Some(&2));
        assert_eq!(t.refs.get(&[3; 32]), Some(&1));
        let r = apply(&mut t, 1_000, &FileCommand::Delete { path: "a".into() }).unwrap();
        assert_eq!(r, Response::File(FileOutcome::Deleted { deleted: true }));
        let r = apply(&mut t, 1_000, &FileCommand::Delete { path: "a".into() }).unwrap();
        assert_eq!(r, Response::File(FileOutcome::Deleted { deleted: false }));
        assert_eq!(t.refs.get(&[2; 32]), Some(&1));
        assert_eq!(t.refs.get(&[3; 32]), None);
    }

    #[test]
    fn shares_expire_by_the_leaders_clock() {
        let mut t = MemFiles::default();
        let tok = |n: u8| format!("{n:032x}");
        put(&mut t, file("a", vec![chunk(1, 4)]));
        let share = |token: &str, path: &str| FileCommand::Share {
            token: token.into(),
            path: path.into(),
            ttl_ms: 500,
        };
        let r = apply(&mut t, 1_000, &share(&tok(1), "a")).unwrap();
        assert_eq!(
            r,
            Response::File(FileOutcome::Shared {
                expires_at_ms: 1_500
            })
        );
        let r = apply(&mut t, 1_000, &share(&tok(2), "missing")).unwrap();
        assert_eq!(r, Response::File(FileOutcome::NoSuchFile));
        assert!(t.shares.contains_key(&tok(1)));
        // Any later file command at or past the expiry drops it.
        apply(&mut t, 1_500, &FileCommand::Delete { path: "x".into() }).unwrap();
        assert!(!t.shares.contains_key(&tok(1)));
        apply(&mut t, 1_600, &share(&tok(3), "a")).unwrap();
        let r = apply(&mut t, 1_600, &FileCommand::Unshare { token: tok(3) }).unwrap();
        assert_eq!(r, Response::File(FileOutcome::Unshared { revoked: true }));
        let r = apply(&mut t, 1_600, &FileCommand::Unshare { token: tok(3) }).unwrap();
        assert_eq!(r, Response::File(FileOutcome::Unshared { revoked: false }));
    }

    #[test]
    fn ranges_map_to_chunks() {
        let mut t = MemFiles::default();
        put(
            &mut t,
            file("a", vec![chunk(1, 4), chunk(2, 4), chunk(3, 2)]),
        );
        let m = &t.files["a"];
        let idx = |s, e| {
            m.chunks_in(s, e)
                .map(|(i, o, _)| (i, o))
                .collect::<Vec<_>>()
        };
        assert_eq!(idx(0, 10), vec![(0, 0), (1, 4), (2, 8)]);
        assert_eq!(idx(3, 5), vec![(0, 0), (1, 4)]);
        assert_eq!(idx(4, 8), vec![(1, 4)]);
        assert_eq!(idx(9, 10), vec![(2, 8)]);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_little() {
        let nodes = [1, 2, 3, 4, 5];
        let mut moved = 0;
        for i in 0..1000u32 {
            let hash = *blake3::hash(&i.to_le_bytes()).as_bytes();
            let all = rendezvous(&hash, &nodes);
            assert_eq!(all, rendezvous(&hash, &nodes), "deterministic");
            assert_eq!(all.len(), 5);
            // Removing node 5 keeps the relative order of the others.
            let without: Vec<_> = all.iter().copied().filter(|&n| n != 5).collect();
            assert_eq!(rendezvous(&hash, &[1, 2, 3, 4]), without);
            if all[..3].contains(&5) {
                moved += 1;
            }
        }
        // Node 5 is in about 3/5 of the top-3 sets; only those chunks move.
        assert!((450..750).contains(&moved), "{moved}");
    }
}
