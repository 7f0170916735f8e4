//! The tables of `state.redb` and the keys of its `meta` table: the leaf every other
//! module of `state` and `snapshot` reads the layout from. Owns names and encodings only;
//! refuses any rule about what the tables hold (that is the domain modules and `kith-core`).
//!
//! Layout of `state.redb`:
//! - `kv`: key → postcard [`KvEntry`](kith_core::KvEntry);
//! - `expiry`: (expires_at_ms, key) → () — the TTL index, earliest first;
//! - `events`: revision → postcard [`KvEvent`](kith_core::KvEvent) — the recent change
//!   history watches read;
//! - `ledger`: log index → 32-byte hash — the recent part of the hash chain;
//! - `rooms`: room → postcard `RoomMeta`; `messages`: (room, seq) → postcard `Message`;
//!   `message_ids`: (room, id) → seq — the chat rooms and their idempotency keys;
//! - `jobs`: id → postcard `Job`; `job_ready`: (queue, rank, id); `job_timers`:
//!   (at_ms, id); `job_keys`: (queue, idempotency key) → id; `job_stats`: queue → counts —
//!   the job queue and its indexes;
//! - `files`: path → postcard `Manifest`; `chunk_refs`: 32-byte chunk hash → references
//!   from committed manifests (absent = 0); `shares`: token → postcard `Share`;
//!   `share_expiry`: (expires_at_ms, token) → ();
//! - `tokens`: token id → postcard [`TokenRecord`](kith_core::auth::TokenRecord) — client
//!   tokens (a hash of each secret), revoked ones kept;
//! - `meta`: `last_applied`, `membership`, `kv_meta` (revision and clock), `ledger_head`,
//!   `events_compacted` (every event at or below it is gone), `events_bytes`, `job_next_id`
//!   and `files_version` (the last ids handed out; absent means 0), `snapshot` (the newest
//!   snapshot's metadata).

use openraft::{BasicNode, LogId, StorageError, StoredMembership};
use redb::{ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::StoreError;
use kith_core::NodeId;

pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
pub(crate) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(crate) const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
pub(crate) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
pub(crate) const MESSAGE_IDS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("message_ids");
pub(crate) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
pub(crate) const JOB_READY: TableDefinition<(&str, u8, u64), ()> =
    TableDefinition::new("job_ready");
pub(crate) const JOB_TIMERS: TableDefinition<(u64, u64), ()> = TableDefinition::new("job_timers");
pub(crate) const JOB_KEYS: TableDefinition<(&str, &str), u64> = TableDefinition::new("job_keys");
pub(crate) const JOB_STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_stats");
pub(crate) const KEY_JOB_NEXT_ID: &str = "job_next_id";
pub(crate) const KEY_FILES_VERSION: &str = "files_version";

pub(crate) const KEY_LAST_APPLIED: &str = "last_applied";
pub(crate) const KEY_MEMBERSHIP: &str = "membership";
pub(crate) const KEY_KV_META: &str = "kv_meta";
pub(crate) const KEY_LEDGER_HEAD: &str = "ledger_head";
pub(crate) const KEY_EVENTS_COMPACTED: &str = "events_compacted";
/// Bytes the kept watch events take (keys and encoded events), for their byte bound.
pub(crate) const KEY_EVENTS_BYTES: &str = "events_bytes";
/// The metadata of the newest snapshot built or installed (see the module docs).
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";
pub(crate) const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
pub(crate) const CHUNK_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("chunk_refs");
pub(crate) const SHARES: TableDefinition<&str, &[u8]> = TableDefinition::new("shares");
pub(crate) const SHARE_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("share_expiry");
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Leases by id (a positive `i64`), each an encoded `kith_core::lease::Lease`.
pub(crate) const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// (lease, key) for every key attached to a lease; `KEY_LEASES` is the same, by key.
pub(crate) const LEASE_KEYS: TableDefinition<(u64, &str), ()> = TableDefinition::new("lease_keys");
pub(crate) const KEY_LEASES: TableDefinition<&str, u64> = TableDefinition::new("key_leases");

pub(crate) type SResult<T> = Result<T, StorageError<NodeId>>;
pub(crate) type Membership = StoredMembership<NodeId, BasicNode>;

/// Opens every table, creating the ones a new store lacks.
pub(crate) fn create_all(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KV)?;
    txn.open_table(EXPIRY)?;
    txn.open_table(EVENTS)?;
    txn.open_table(LEDGER)?;
    txn.open_table(META)?;
    txn.open_table(ROOMS)?;
    txn.open_table(MESSAGES)?;
    txn.open_table(MESSAGE_IDS)?;
    txn.open_table(JOBS)?;
    txn.open_table(JOB_READY)?;
    txn.open_table(JOB_TIMERS)?;
    txn.open_table(JOB_KEYS)?;
    txn.open_table(JOB_STATS)?;
    txn.open_table(FILES)?;
    txn.open_table(CHUNK_REFS)?;
    txn.open_table(SHARES)?;
    txn.open_table(SHARE_EXPIRY)?;
    txn.open_table(TOKENS)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_KEYS)?;
    txn.open_table(KEY_LEASES)?;
    Ok(())
}

pub(crate) fn meta_get<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn meta_put<T: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    table.insert(key, encode(value)?.as_slice())?;
    Ok(())
}

/// The `last_applied` index in `meta` (0 for none).
pub(crate) fn applied_index(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, StoreError> {
    let last_applied: Option<LogId<NodeId>> = meta_get(meta, KEY_LAST_APPLIED)?.flatten();
    Ok(last_applied.map_or(0, |l| l.index))
}
