//! The chunks this node holds: one file per chunk under `chunks/`, named by its BLAKE3 hash.
//!
//! Layout: `chunks/ab/abcdef…` (the first two hex digits fan the files out over 256
//! directories so no directory grows huge). Temporary files are `*.tmp` beside them.
//!
//! Invariants:
//! - A chunk file's contents hash to its name. [`ChunkStore::put`] refuses bytes that do not,
//!   and [`ChunkStore::get`] re-hashes on every read and deletes a copy that no longer
//!   matches (bit rot, a torn disk write, someone editing the file), so a corrupt copy is
//!   never served and repair sees it as missing.
//! - `put` returns only once the chunk is durable: written to a temporary file, fsynced,
//!   renamed into place, and the directory fsynced. A crash leaves either no file or the
//!   whole file, plus perhaps a `*.tmp` that [`ChunkStore::open`] removes.
//! - Storing a chunk that is already here refreshes its modification time. Garbage
//!   collection never deletes a chunk modified within its grace period, so an upload that
//!   re-uses an old unreferenced chunk keeps it alive until its manifest commits.
//!
//! Refuses: deciding which chunks to keep (that is the node's garbage collector, which asks
//! the replicated state) and anything asynchronous: every call blocks on the file system,
//! so async callers run it on tokio's blocking pool.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use kith_core::files::{hex, parse_hex, Hash};

use crate::wal::sync_dir;
use crate::StoreError;

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkRead {
    Found(Vec<u8>),
    Missing,
    /// The file did not match its hash and has been deleted.
    Corrupt,
}

/// A stored chunk, as a listing reports it.
#[derive(Clone, Copy, Debug)]
pub struct ChunkInfo {
    pub hash: Hash,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// This node's chunk files. Shared by the upload, read, repair, scrub and GC paths; every
/// method takes `&self` and the file system arbitrates.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    /// Chunk files and their bytes, counted at open and kept up to date by `put`/`remove`
    /// (approximate under concurrent puts of the same chunk; only for display).
    count: AtomicU64,
    bytes: AtomicU64,
    /// Makes temporary file names unique within this process.
    tmp_seq: AtomicU64,
    /// Serialises "refresh the age of an existing chunk" (in `put`) against "delete it if
    /// old" (in `remove_if_older`), so garbage collection cannot delete a chunk an upload
    /// has just been told is stored.
    age_lock: Mutex<()>,
}

impl ChunkStore {
    /// Opens (or creates) `dir`, removing temporary files a crash left behind.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::Io)?;
        let store = ChunkStore {
            dir: dir.to_path_buf(),
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            age_lock: Mutex::new(()),
        };
        let (mut count, mut bytes) = (0, 0);
        for shard in sorted_entries(dir)? {
            for entry in sorted_entries(&shard)? {
                if entry.extension().is_some_and(|e| e == "tmp") {
                    fs::remove_file(&entry).map_err(StoreError::Io)?;
                } else if let Ok(meta) = fs::metadata(&entry) {
                    count += 1;
                    bytes += meta.len();
                }
            }
        }
        store.count.store(count, Ordering::Relaxed);
        store.bytes.store(bytes, Ordering::Relaxed);
        Ok(store)
    }

    fn path(&self, hash: &Hash) -> PathBuf {
        let name = hex(hash);
        self.dir.join(&name[..2]).join(name)
    }

    /// Stores `bytes` under `hash` durably. Returns whether the chunk was new here.
    pub fn put(&self, hash: &Hash, bytes: &[u8]) -> Result<bool, StoreError> {
        if blake3::hash(bytes).as_bytes() != hash {
            return Err(StoreError::Io(std::io::Error::new(
                ErrorKind::InvalidData,
                "chunk bytes do not match their hash",
            )));
        }
        let path = self.path(hash);
        let age_guard = self.age_lock.lock().expect("age lock");
        if let Ok(file) = File::options().append(true).open(&path) {
            // Already here: only refresh its age, so garbage collection leaves it alone
            // while the upload that brought it again is in flight.
            file.set_modified(SystemTime::now())
                .map_err(StoreError::Io)?;
            return Ok(false);
        }
        drop(age_guard);
        let shard = path.parent().expect("a chunk path has a shard directory");
        let new_shard = !shard.exists();
        fs::create_dir_all(shard).map_err(StoreError::Io)?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = shard.join(format!("{}.{seq}.tmp", hex(hash)));
        let mut file = File::create(&tmp).map_err(StoreError::Io)?;
        file.write_all(bytes).map_err(StoreError::Io)?;
        file.sync_all().map_err(StoreError::Io)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(StoreError::Io)?;
        sync_dir(shard)?;
        if new_shard {
            sync_dir(&self.dir)?;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Reads and verifies a chunk. A copy that fails verification is deleted.
    pub fn get(&self, hash: &Hash) -> Result<ChunkRead, StoreError> {
        let path = self.path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ChunkRead::Missing),
            Err(e) => return Err(StoreError::Io(e)),
        };
        if blake3::hash(&bytes).as_bytes() != hash {
            self.remove(hash)?;
            return Ok(ChunkRead::Corrupt);
        }
        Ok(ChunkRead::Found(bytes))
    }

    /// Whether a file for the chunk exists (not verified).
    pub fn has(&self, hash: &Hash) -> bool {
        self.path(hash).exists()
    }

    /// Deletes the chunk's file, if any.
    pub fn remove(&self, hash: &Hash) -> Result<(), StoreError> {
        let path = self.path(hash);
        let bytes = fs::metadata(&path).map(|m| m.len()).ok();
        match fs::remove_file(&path) {
            Ok(()) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(bytes.unwrap_or(0), Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io(e)),
        }
    }

    /// Deletes the chunk if its file was last modified at least `age` ago; returns whether
    /// it did. Garbage collection's only way to delete.
    pub fn remove_if_older(&self, hash: &Hash, age: Duration) -> Result<bool, StoreError> {
        let _guard = self.age_lock.lock().expect("age lock");
        let modified = match fs::metadata(self.path(hash)) {
            Ok(meta) => meta.modified().map_err(StoreError::Io)?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::Io(e)),
        };
        if modified.elapsed().unwrap_or_default() < age {
            return Ok(false);
        }
        self.remove(hash)?;
        Ok(true)
    }

    /// Up to `limit` stored chunks in hash order, after `after` (for paging through all).
    pub fn list(&self, after: Option<&Hash>, limit: usize) -> Result<Vec<ChunkInfo>, StoreError> {
        let mut out = Vec::new();
        let after_hex = after.map(hex);
        for shard in sorted_entries(&self.dir)? {
            let shard_name = shard.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(a) = &after_hex {
                if shard_name < &a[..2] {
                    continue;
                }
            }
            for entry in sorted_entries(&shard)? {
                let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(hash) = parse_hex(name) else {
                    continue; // a temporary file
                };
                if after_hex.as_deref().is_some_and(|a| name <= a) {
                    continue;
                }
                let Ok(meta) = fs::metadata(&entry) else {
                    continue; // deleted meanwhile
                };
                out.push(ChunkInfo {
                    hash,
                    bytes: meta.len(),
                    modified: meta.modified().map_err(StoreError::Io)?,
                });
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Chunk files held and their total bytes.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Where a chunk's file lives (for tests that inspect or damage the disk).
    pub fn file_path(&self, hash: &Hash) -> PathBuf {
        self.path(hash)
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut entries = Vec::new();
    match fs::read_dir(dir) {
        Ok(read) => {
            for entry in read {
                entries.push(entry.map_err(StoreError::Io)?.path());
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Io(e)),
    }
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_verified_durable_and_listed_in_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let mut hashes = Vec::new();
        for c in &chunks {
            let h = *blake3::hash(c).as_bytes();
            assert!(store.put(&h, c).unwrap());
            assert!(!store.put(&h, c).unwrap(), "second put is a no-op");
            hashes.push(h);
        }
        assert!(store.put(&[0; 32], b"not it").is_err());
        assert_eq!(store.usage().0, 20);
        hashes.sort();
        let first = store.list(None, 7).unwrap();
        let rest = store.list(Some(&first[6].hash), 100).unwrap();
        let listed: Vec<Hash> = first.iter().chain(&rest).map(|c| c.hash).collect();
        assert_eq!(listed, hashes);

        // Flip a byte on disk: the read notices, deletes the copy and reports it.
        let victim = hashes[3];
        let path = store.file_path(&victim);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(store.get(&victim).unwrap(), ChunkRead::Corrupt);
        assert_eq!(store.get(&victim).unwrap(), ChunkRead::Missing);
        assert!(matches!(
            store.get(&hashes[4]).unwrap(),
            ChunkRead::Found(_)
        ));

        // Leftover temporary files vanish on open; counts survive a reopen.
        fs::write(path.with_extension("1.tmp"), b"partial").unwrap();
        drop(store);
        let store = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(store.usage().0, 19);
        assert_eq!(store.list(None, 100).unwrap().len(), 19);
    }
}
