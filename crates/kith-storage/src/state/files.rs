//! The files domain on redb: [`RedbFiles`], which backs `kith_core`'s [`FilesTable`] (file
//! manifests, chunk reference counts, share links) inside an apply's write transaction, and
//! the files queries of [`StateReader`].
//!
//! Written only inside the state machine's apply transaction and when a snapshot is
//! installed. A snapshot carries the manifests and shares; reference counts are recomputed
//! from the manifests on install, so they can never disagree with them.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};

use crate::codec::{decode, encode};
use crate::state::reader::StateReader;
use crate::state::tables::{CHUNK_REFS, FILES, SHARES, SHARE_EXPIRY};
use crate::StoreError;
use kith_core::files::{FilesTable, Hash, Manifest, Share};

/// Backs [`FilesTable`] with open redb tables inside one write transaction.
pub(crate) struct RedbFiles<'t> {
    pub files: Table<'t, &'static str, &'static [u8]>,
    pub refs: Table<'t, &'static [u8], u64>,
    pub shares: Table<'t, &'static str, &'static [u8]>,
    pub share_expiry: Table<'t, (u64, &'static str), ()>,
    /// The last manifest version handed out; the caller persists it with the batch.
    pub version: u64,
}

impl<'t> RedbFiles<'t> {
    pub fn open(txn: &'t redb::WriteTransaction, version: u64) -> Result<Self, StoreError> {
        Ok(RedbFiles {
            version,
            files: txn.open_table(FILES)?,
            refs: txn.open_table(CHUNK_REFS)?,
            shares: txn.open_table(SHARES)?,
            share_expiry: txn.open_table(SHARE_EXPIRY)?,
        })
    }

    /// Empties every files table (a snapshot install replaces them).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.files.retain(|_, _| false)?;
        self.refs.retain(|_, _| false)?;
        self.shares.retain(|_, _| false)?;
        self.share_expiry.retain(|_, _| false)?;
        Ok(())
    }

    /// Adds a snapshot's manifest and counts its chunk references.
    pub fn install_file(&mut self, manifest: &Manifest) -> Result<(), StoreError> {
        self.put_file(manifest)?;
        for chunk in &manifest.chunks {
            let refs = self.chunk_refs(&chunk.hash)?;
            self.set_chunk_refs(&chunk.hash, refs.saturating_add(1))?;
        }
        Ok(())
    }

    /// Adds a snapshot's share link.
    pub fn install_share(&mut self, share: &Share) -> Result<(), StoreError> {
        self.put_share(share)
    }
}

impl FilesTable for RedbFiles<'_> {
    type Error = StoreError;
    fn file(&mut self, path: &str) -> Result<Option<Manifest>, StoreError> {
        match self.files.get(path)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put_file(&mut self, manifest: &Manifest) -> Result<(), StoreError> {
        self.files
            .insert(manifest.path.as_str(), encode(manifest)?.as_slice())?;
        Ok(())
    }
    fn remove_file(&mut self, path: &str) -> Result<(), StoreError> {
        self.files.remove(path)?;
        Ok(())
    }
    fn file_count(&mut self) -> Result<u64, StoreError> {
        Ok(self.files.len()?)
    }
    fn next_version(&mut self) -> Result<u64, StoreError> {
        self.version += 1;
        Ok(self.version)
    }
    fn chunk_refs(&mut self, hash: &Hash) -> Result<u64, StoreError> {
        Ok(self.refs.get(hash.as_slice())?.map_or(0, |v| v.value()))
    }
    fn set_chunk_refs(&mut self, hash: &Hash, refs: u64) -> Result<(), StoreError> {
        if refs == 0 {
            self.refs.remove(hash.as_slice())?;
        } else {
            self.refs.insert(hash.as_slice(), refs)?;
        }
        Ok(())
    }
    fn share(&mut self, token: &str) -> Result<Option<Share>, StoreError> {
        match self.shares.get(token)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put_share(&mut self, share: &Share) -> Result<(), StoreError> {
        self.shares
            .insert(share.token.as_str(), encode(share)?.as_slice())?;
        self.share_expiry
            .insert((share.expires_at_ms, share.token.as_str()), ())?;
        Ok(())
    }
    fn remove_share(&mut self, share: &Share) -> Result<(), StoreError> {
        self.shares.remove(share.token.as_str())?;
        self.share_expiry
            .remove((share.expires_at_ms, share.token.as_str()))?;
        Ok(())
    }
    fn share_count(&mut self) -> Result<u64, StoreError> {
        Ok(self.shares.len()?)
    }
    fn shares_expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<Share>, StoreError> {
        let mut due = Vec::new();
        for item in self.share_expiry.range((0, "")..=(now_ms, "\u{10FFFF}"))? {
            if due.len() == limit {
                break;
            }
            let (k, _) = item?;
            let (at, token) = k.value();
            due.push(Share {
                token: token.to_owned(),
                // The path is not needed to remove a share; the index only knows the token.
                path: String::new(),
                expires_at_ms: at,
            });
        }
        Ok(due)
    }
}

impl StateReader {
    /// The file at `path`, as of the latest applied state.
    pub fn file(&self, path: &str) -> Result<Option<Manifest>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FILES)?;
        let found = match table.get(path)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` files whose path starts with `prefix`, in path order, after `after`.
    pub fn files(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Manifest>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FILES)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut out = Vec::new();
        for item in table.range::<&str>(start..)? {
            let (k, v) = item?;
            let path = k.value();
            if after == Some(path) {
                continue;
            }
            if !path.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// How many files the cluster holds, and how many distinct chunks they reference.
    pub fn file_counts(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        Ok((
            txn.open_table(FILES)?.len()?,
            txn.open_table(CHUNK_REFS)?.len()?,
        ))
    }

    /// Whether a committed manifest references the chunk.
    pub fn chunk_referenced(&self, hash: &Hash) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(CHUNK_REFS)?.get(hash.as_slice())?.is_some())
    }

    /// Up to `limit` referenced chunk hashes in hash order, after `after` (for paging through
    /// all of them).
    pub fn referenced_chunks(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> Result<Vec<Hash>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHUNK_REFS)?;
        let start: &[u8] = after.map_or(&[], |h| h.as_slice());
        let mut out = Vec::new();
        for item in table.range::<&[u8]>(start..)? {
            let (k, _) = item?;
            let Ok(hash) = Hash::try_from(k.value()) else {
                continue;
            };
            if Some(&hash) == after {
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push(hash);
        }
        Ok(out)
    }

    /// The share link `token`, if it exists (it may have expired but not yet been pruned).
    pub fn share(&self, token: &str) -> Result<Option<Share>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SHARES)?;
        let found = match table.get(token)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` share links for `path` (all paths when `None`).
    pub fn shares(&self, path: Option<&str>, limit: usize) -> Result<Vec<Share>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(SHARES)?.iter()? {
            if out.len() == limit {
                break;
            }
            let share: Share = decode(item?.1.value())?;
            if path.is_none_or(|p| p == share.path) {
                out.push(share);
            }
        }
        Ok(out)
    }
}
