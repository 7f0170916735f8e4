//! The key-value domain on redb: [`RedbKv`], which backs `kith_core`'s [`KvTable`] inside an
//! apply's write transaction and bounds the kept watch events, and the kv queries of
//! [`StateReader`]. Refuses deciding what a put or delete means (`kith_core::kv`).
//!
//! The kept events have a byte bound besides their count: past `events_bytes_kept` plus a
//! sixteenth, the oldest go until they are back under it. Their size is kept in
//! `meta.events_bytes` (recounted after a snapshot install or when absent), in the apply's
//! own transaction, so every replica trims the same events at the same revision.

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, WriteTransaction,
};

use crate::codec::{decode, encode};
use crate::state::history::{history_cutoff, StoreConfig};
use crate::state::reader::StateReader;
use crate::state::tables::{
    meta_get, meta_put, EVENTS, EXPIRY, KEY_EVENTS_BYTES, KEY_EVENTS_COMPACTED, KEY_KV_META,
    KEY_LEASES, KV, LEASES, LEASE_KEYS, META,
};
use crate::StoreError;
use kith_core::lease::Lease;
use kith_core::txn::KeyRange;
use kith_core::{KvEntry, KvEvent, KvMeta, KvTable};

/// Backs [`KvTable`] with open redb tables inside one write transaction.
pub(crate) struct RedbKv<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    leases: Table<'t, u64, &'static [u8]>,
    lease_keys: Table<'t, (u64, &'static str), ()>,
    key_leases: Table<'t, &'static str, u64>,
    expiry: Table<'t, (u64, &'static str), ()>,
    events: Table<'t, u64, &'static [u8]>,
    /// What the kept events take (`meta.events_bytes`), updated as events are recorded.
    events_bytes: u64,
    /// Revisions at or below this are gone (`meta.events_compacted`).
    events_compacted: u64,
    events_kept: u64,
    events_bytes_kept: u64,
    /// `meta.events_bytes` and `meta.events_compacted` as the transaction found them, to
    /// write back only what changed.
    events_bytes_stored: Option<u64>,
    events_compacted_stored: u64,
}

impl<'t> RedbKv<'t> {
    /// Opens the kv tables in `txn`, with the event counts `meta` holds.
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        meta: &Table<'t, &'static str, &'static [u8]>,
        config: &StoreConfig,
    ) -> Result<Self, StoreError> {
        let events = txn.open_table(EVENTS)?;
        let events_bytes_stored: Option<u64> = meta_get(meta, KEY_EVENTS_BYTES)?;
        let events_bytes = match events_bytes_stored {
            Some(bytes) => bytes,
            None => count_events_bytes(&events)?,
        };
        let events_compacted_stored: u64 = meta_get(meta, KEY_EVENTS_COMPACTED)?.unwrap_or(0);
        Ok(RedbKv {
            kv: txn.open_table(KV)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            key_leases: txn.open_table(KEY_LEASES)?,
            expiry: txn.open_table(EXPIRY)?,
            events,
            events_bytes,
            events_compacted: events_compacted_stored,
            events_kept: config.events_kept,
            events_bytes_kept: config.events_bytes_kept,
            events_bytes_stored,
            events_compacted_stored,
        })
    }

    /// Writes the event counts back to `meta`, where they changed. The events themselves
    /// were trimmed as they were recorded (`trim_events`).
    pub(crate) fn store_counts(
        &self,
        meta: &mut Table<'_, &'static str, &'static [u8]>,
    ) -> Result<(), StoreError> {
        if self.events_compacted > self.events_compacted_stored {
            meta_put(meta, KEY_EVENTS_COMPACTED, &self.events_compacted)?;
        }
        if self.events_bytes_stored != Some(self.events_bytes) {
            meta_put(meta, KEY_EVENTS_BYTES, &self.events_bytes)?;
        }
        Ok(())
    }

    /// Drops the oldest events after the event at `revision` was recorded: every one at or
    /// below the count cutoff (`history_cutoff`), then, once the events take more than
    /// `events_bytes_kept` and a sixteenth, as many more as bring them under it. Run after
    /// every recorded event, so what is kept depends only on the sequence of events, never
    /// on how applies were batched: every replica drops the same events at the same revision.
    fn trim_events(&mut self, revision: u64) -> Result<(), StoreError> {
        let cutoff = history_cutoff(revision, self.events_kept);
        if cutoff > self.events_compacted {
            // One by one, for the byte count; a chunk (at most 256) at a time.
            while let Some((oldest, len)) = oldest_event(&self.events)? {
                if oldest > cutoff {
                    break;
                }
                self.events.remove(oldest)?;
                self.events_bytes = self.events_bytes.saturating_sub(event_bytes(len));
            }
            self.events_compacted = cutoff;
        }
        let bytes_kept = self.events_bytes_kept;
        if self.events_bytes > bytes_kept.saturating_add(bytes_kept / 16) {
            while self.events_bytes > bytes_kept {
                let Some((oldest, len)) = oldest_event(&self.events)? else {
                    break;
                };
                self.events.remove(oldest)?;
                self.events_bytes = self.events_bytes.saturating_sub(event_bytes(len));
                self.events_compacted = self.events_compacted.max(oldest);
            }
        }
        Ok(())
    }
}

/// The oldest kept event's revision and encoded size.
fn oldest_event(
    events: &Table<'_, u64, &'static [u8]>,
) -> Result<Option<(u64, usize)>, StoreError> {
    Ok(events.first()?.map(|(k, v)| (k.value(), v.value().len())))
}

/// The bytes one kept event takes in the count `meta.events_bytes` keeps.
fn event_bytes(encoded_len: usize) -> u64 {
    encoded_len as u64 + 8
}

/// Counts what the kept events take, for a store that has no count yet (made before the
/// byte bound, or just installed from a snapshot).
fn count_events_bytes(events: &Table<'_, u64, &'static [u8]>) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for item in events.iter()? {
        let (_, v) = item?;
        total = total.saturating_add(event_bytes(v.value().len()));
    }
    Ok(total)
}

impl KvTable for RedbKv<'_> {
    type Error = StoreError;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        match self.kv.get(key)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), StoreError> {
        self.kv.insert(key, encode(entry)?.as_slice())?;
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.kv.remove(key)?;
        Ok(())
    }
    fn expiry_add(&mut self, at_ms: u64, key: &str) -> Result<(), StoreError> {
        self.expiry.insert((at_ms, key), ())?;
        Ok(())
    }
    fn expiry_remove(&mut self, at_ms: u64, key: &str) -> Result<(), StoreError> {
        self.expiry.remove((at_ms, key))?;
        Ok(())
    }
    fn expiry_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut due = Vec::new();
        for item in self.expiry.iter()? {
            let (k, _) = item?;
            let (at, key) = k.value();
            if at > now_ms || due.len() == limit {
                break;
            }
            due.push((at, key.to_owned()));
        }
        Ok(due)
    }
    fn record(&mut self, event: &KvEvent) -> Result<(), StoreError> {
        // A transaction's later changes join the events already at its revision.
        let group = match self.events.get(event.revision)? {
            Some(old) => {
                let mut group = decode_events(old.value())?;
                group.push(event.clone());
                group
            }
            None => vec![event.clone()],
        };
        let bytes = encode_events(&group)?;
        self.events_bytes = self.events_bytes.saturating_add(event_bytes(bytes.len()));
        if let Some(old) = self.events.insert(event.revision, bytes.as_slice())? {
            self.events_bytes = self
                .events_bytes
                .saturating_sub(event_bytes(old.value().len()));
        }
        self.trim_events(event.revision)
    }

    fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
        count_max: u64,
    ) -> Result<(Vec<ListedKey>, u64), StoreError> {
        scan_range(&self.kv, range, limit, count_max)
    }
    fn lease(&mut self, id: i64) -> Result<Option<Lease>, StoreError> {
        match self.leases.get(id as u64)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn lease_set(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.leases
            .insert(lease.id as u64, encode(lease)?.as_slice())?;
        Ok(())
    }
    fn lease_remove(&mut self, id: i64) -> Result<(), StoreError> {
        self.leases.remove(id as u64)?;
        Ok(())
    }
    fn lease_count(&mut self) -> Result<usize, StoreError> {
        Ok(self.leases.len()? as usize)
    }
    fn lease_keys(&mut self, id: i64) -> Result<Vec<String>, StoreError> {
        lease_keys_of(&self.lease_keys, id)
    }
    fn key_lease(&mut self, key: &str) -> Result<i64, StoreError> {
        Ok(self.key_leases.get(key)?.map_or(0, |v| v.value() as i64))
    }
    fn key_lease_set(&mut self, key: &str, lease: i64) -> Result<(), StoreError> {
        if let Some(old) = self.key_leases.remove(key)? {
            let old = old.value();
            self.lease_keys.remove((old, key))?;
        }
        if lease != 0 {
            self.key_leases.insert(key, lease as u64)?;
            self.lease_keys.insert((lease as u64, key), ())?;
        }
        Ok(())
    }
}

/// The keys attached to lease `id`, in key order.
fn lease_keys_of(
    table: &impl ReadableTable<(u64, &'static str), ()>,
    id: i64,
) -> Result<Vec<String>, StoreError> {
    let id = id as u64;
    let mut keys = Vec::new();
    for item in table.range((id, "")..)? {
        let (k, _) = item?;
        let (lease, key) = k.value();
        if lease != id {
            break;
        }
        keys.push(key.to_owned());
    }
    Ok(keys)
}

/// Up to `limit` keys of `range` in key order, and how many it holds (up to `count_max`).
fn scan_range(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    range: &KeyRange,
    limit: usize,
    count_max: u64,
) -> Result<(Vec<ListedKey>, u64), StoreError> {
    let mut out = Vec::new();
    let mut count = 0u64;
    for item in table.range::<&str>(range.key.as_str()..)? {
        let (k, v) = item?;
        let key = k.value();
        if !range.continues_at(key) || count >= count_max {
            break;
        }
        if range.contains(key) {
            count += 1;
            if out.len() < limit {
                out.push((key.to_owned(), decode(v.value())?));
            }
        }
    }
    Ok((out, count))
}

/// The events of one revision as stored: a lone event in its own encoding (postcard, whose
/// first byte, the revision's varint, is never 0 since revisions start at 1), or several
/// (one transaction's changes) as a 0 byte and the postcard list. Stores written before
/// transactions existed hold only the first form, and read on unchanged.
pub(crate) fn encode_events(events: &[KvEvent]) -> Result<Vec<u8>, StoreError> {
    match events {
        [one] => encode(one),
        many => {
            let mut bytes = vec![0u8];
            bytes.extend(encode(&many)?);
            Ok(bytes)
        }
    }
}

/// Reads what [`encode_events`] wrote.
pub(crate) fn decode_events(bytes: &[u8]) -> Result<Vec<KvEvent>, StoreError> {
    match bytes.split_first() {
        Some((0, group)) => decode(group),
        _ => Ok(vec![decode(bytes)?]),
    }
}

/// The store's revision and clock as `db` holds them.
pub(crate) fn read_kv_meta(db: &Database) -> Result<KvMeta, StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta_get(&meta, KEY_KV_META)?.unwrap_or_default())
}

/// One key as returned by a list.
pub type ListedKey = (String, KvEntry);

/// A page of watch history: matching events, and where the scan stopped.
pub struct EventPage {
    pub events: Vec<KvEvent>,
    /// The next revision to scan from.
    pub next_revision: u64,
}

impl StateReader {
    /// The key's entry, as of the latest applied state.
    pub fn get(&self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let found = match table.get(key)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` keys starting with `prefix`, in key order, from one consistent read;
    /// the flag says whether more keys matched. Also returns the store revision of that read.
    pub fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<ListedKey>, bool, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let kv_meta: KvMeta = meta_get(&meta, KEY_KV_META)?.unwrap_or_default();
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        let mut more = false;
        for item in table.range::<&str>(prefix..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((key.to_owned(), decode(v.value())?));
        }
        Ok((out, more, kv_meta.revision))
    }

    /// Up to `limit` keys of `range` in key order, the number of keys it holds (counted up
    /// to `count_max`), and the store revision, from one consistent read.
    pub fn range(
        &self,
        range: &KeyRange,
        limit: usize,
        count_max: u64,
    ) -> Result<(Vec<ListedKey>, u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let kv_meta: KvMeta = meta_get(&meta, KEY_KV_META)?.unwrap_or_default();
        let (kvs, count) = scan_range(&txn.open_table(KV)?, range, limit, count_max)?;
        Ok((kvs, count, kv_meta.revision))
    }

    /// Lease `id` and the keys attached to it, if it is live.
    pub fn lease(&self, id: i64) -> Result<Option<(Lease, Vec<String>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(lease) = txn.open_table(LEASES)?.get(id as u64)? else {
            return Ok(None);
        };
        let lease: Lease = decode(lease.value())?;
        let keys = lease_keys_of(&txn.open_table(LEASE_KEYS)?, id)?;
        Ok(Some((lease, keys)))
    }

    /// Every live lease's id, at most `limit`.
    pub fn lease_ids(&self, limit: usize) -> Result<Vec<i64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASES)?;
        let mut ids = Vec::new();
        for item in table.iter()?.take(limit) {
            ids.push(item?.0.value() as i64);
        }
        Ok(ids)
    }

    /// The lease each of `keys` is attached to (0: none).
    pub fn key_leases(&self, keys: &[&str]) -> Result<Vec<i64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KEY_LEASES)?;
        keys.iter()
            .map(|k| Ok(table.get(*k)?.map_or(0, |v| v.value() as i64)))
            .collect()
    }

    /// The store's revision and clock as of the latest applied state.
    pub fn kv_meta(&self) -> Result<KvMeta, StoreError> {
        read_kv_meta(&self.db)
    }

    /// Every event at or below this revision is gone from this node's history.
    pub fn events_compacted(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta_get(&meta, KEY_EVENTS_COMPACTED)?.unwrap_or(0))
    }

    /// Scans at most `scan_max` events from revision `from` on and returns those whose key
    /// starts with `prefix`, in revision order.
    pub fn events(
        &self,
        from: u64,
        prefix: &str,
        scan_max: usize,
    ) -> Result<EventPage, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut events = Vec::new();
        let mut next_revision = from;
        for item in table.range(from..)?.take(scan_max) {
            let (k, v) = item?;
            next_revision = k.value() + 1;
            for event in decode_events(v.value())? {
                if event.key.starts_with(prefix) {
                    events.push(event);
                }
            }
        }
        Ok(EventPage {
            events,
            next_revision,
        })
    }
}
