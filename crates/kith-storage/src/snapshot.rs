//! Snapshots: their file format, building a copy of the state into `snapshot.bin`, checking a
//! file that arrived from a peer, and installing one into `state.redb`.
//!
//! Owns the format and every pass over it. Refuses to hold a snapshot in memory: a copy is
//! written record by record from one redb read transaction, and read back record by record,
//! so memory stays at one record (at most [`RECORD_BYTES_MAX`]) whatever the state's size.
//!
//! ```text
//! header   "KITHSNAP" | format version u32 LE
//! records  len u32 LE | postcard Record        (len ≤ RECORD_BYTES_MAX)
//!          Meta, Head, then Kv / Room / Message / Job / JobStats / File / Share / Token / Event /
//!          Ledger / Lease / LeaseKey in any number and order, then (version 2 only) Chunk
//!          records, then End
//! trailer  BLAKE3 of every byte before it (32 bytes), then nothing
//! ```
//!
//! Version 2 differs only in carrying `Chunk` records: a file chunk's bytes under its hash.
//! Only a backup taken with its files is written in it (`backup`); a snapshot a node builds
//! or sends its peers is version 1, and an install from a peer refuses a chunk record. A
//! restore moves the chunks into the new member's chunk store and installs the rest.
//!
//! A file is whole only if every record decodes, the order above holds, and the trailer
//! matches; [`verify_snapshot`] checks all of that without writing anything, and install
//! checks it again before its transaction commits, so a bad file changes nothing.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{BasicNode, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{decode, encode};
use crate::durability::advance;
use crate::state::files::RedbFiles;
use crate::state::jobs::index_job;
use crate::state::kv::{decode_events, encode_events};
use crate::state::ledger::LedgerHead;
use crate::state::tables::{
    applied_index, meta_get, meta_put, Membership, SResult, CHUNK_REFS, EVENTS, EXPIRY, FILES,
    JOBS, JOB_KEYS, JOB_READY, JOB_STATS, JOB_TIMERS, KEY_EVENTS_BYTES, KEY_EVENTS_COMPACTED,
    KEY_FILES_VERSION, KEY_JOB_NEXT_ID, KEY_KV_META, KEY_LAST_APPLIED, KEY_LEASES, KEY_LEDGER_HEAD,
    KEY_MEMBERSHIP, KEY_SNAPSHOT, KV, LEASES, LEASE_KEYS, LEDGER, MESSAGES, MESSAGE_IDS, META,
    ROOMS, SHARES, TOKENS,
};
use crate::{StoreError, TypeConfig};
use kith_core::auth::TokenRecord;
use kith_core::files::{Manifest, Share};
use kith_core::jobs::{Job, QueueStats};
use kith_core::lease::{timer_key, Lease};
use kith_core::ledger::Hash;
use kith_core::rooms::{Message, RoomMeta};
use kith_core::{KvEntry, KvEvent, KvMeta, NodeId};

/// Largest snapshot a node accepts from a peer (64 GiB). Far above what kith's stores hold
/// (a snapshot is about the size of the live state), and below it a hostile or broken
/// peer can fill at most this much of the data disk with one partial receive.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;
/// Largest single record (64 MiB): a key with its value, a job, a manifest. Every one of
/// these is far smaller under kith's limits; a length above it means a corrupt file.
pub const RECORD_BYTES_MAX: u64 = 64 << 20;

const MAGIC: [u8; 8] = *b"KITHSNAP";
/// The version of every snapshot a node builds and sends.
const FORMAT_VERSION: u32 = 1;
/// The version of a backup that carries its files' chunks.
const FORMAT_VERSION_CHUNKS: u32 = 2;
const TRAILER_BYTES: u64 = 32;
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP_FILE: &str = "snapshot.bin.tmp";

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The counters and heads a snapshot carries besides its tables.
#[derive(Serialize, Deserialize)]
struct Head {
    kv_meta: KvMeta,
    ledger_head: LedgerHead,
    job_next_id: u64,
    files_version: u64,
    /// Every change event at or below this revision is gone.
    events_compacted: u64,
}

/// One record of the file. Variants are only ever added at the end (postcard encodes the
/// variant's position); a change to one is a new [`FORMAT_VERSION`].
#[derive(Serialize, Deserialize)]
enum Record {
    Meta(Meta),
    Head(Head),
    Kv(String, KvEntry),
    Room(String, RoomMeta),
    Message(String, Message),
    Job(Job),
    JobStats(String, QueueStats),
    File(Manifest),
    Share(Share),
    Event(KvEvent),
    Ledger(u64, Hash),
    End,
    Token(TokenRecord),
    /// A file chunk's bytes under their BLAKE3 hash (version 2: a backup with its files).
    Chunk(Hash, #[serde(with = "serde_bytes")] Vec<u8>),
    /// An etcd lease, and (one record each) a key attached to one.
    Lease(Lease),
    LeaseKey(i64, String),
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::InvalidSnapshot(message.into())
}

/// Writes the format to `out`, hashing as it goes.
struct Writer<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    fn new(out: W) -> Result<Self, StoreError> {
        Self::with_version(out, FORMAT_VERSION)
    }

    fn with_version(out: W, version: u32) -> Result<Self, StoreError> {
        let mut writer = Writer {
            out,
            hasher: blake3::Hasher::new(),
            buf: Vec::new(),
        };
        writer.raw(&MAGIC)?;
        writer.raw(&version.to_le_bytes())?;
        Ok(writer)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.out.write_all(bytes).map_err(StoreError::Io)?;
        self.hasher.update(bytes);
        Ok(())
    }

    fn record(&mut self, record: &Record) -> Result<(), StoreError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let buf = postcard::to_extend(record, buf)?;
        let len = u32::try_from(buf.len())
            .ok()
            .filter(|len| u64::from(*len) <= RECORD_BYTES_MAX)
            .ok_or_else(|| invalid(format!("a record of {} bytes", buf.len())))?;
        self.raw(&len.to_le_bytes())?;
        self.raw(&buf)?;
        self.buf = buf;
        Ok(())
    }

    fn finish(mut self) -> Result<W, StoreError> {
        self.record(&Record::End)?;
        let hash = self.hasher.finalize();
        self.out
            .write_all(hash.as_bytes())
            .map_err(StoreError::Io)?;
        Ok(self.out)
    }
}

/// Reads the format from `input` (of `len` bytes), hashing as it goes. Never allocates more
/// than the bytes that are really there, nor more than one record.
struct Reader<R: Read> {
    input: R,
    hasher: blake3::Hasher,
    remaining: u64,
    buf: Vec<u8>,
}

impl<R: Read> Reader<R> {
    fn open(input: R, len: u64) -> Result<Self, StoreError> {
        let mut reader = Reader {
            input,
            hasher: blake3::Hasher::new(),
            remaining: len,
            buf: Vec::new(),
        };
        if reader.take(MAGIC.len() as u64)? != MAGIC {
            return Err(invalid("not a kith snapshot (no KITHSNAP header)"));
        }
        let version = u32::from_le_bytes(reader.take(4)?.try_into().expect("4 bytes"));
        if version != FORMAT_VERSION && version != FORMAT_VERSION_CHUNKS {
            return Err(invalid(format!(
                "snapshot format version {version}; this node reads {FORMAT_VERSION} and \
                 {FORMAT_VERSION_CHUNKS}"
            )));
        }
        Ok(reader)
    }

    fn take(&mut self, n: u64) -> Result<&[u8], StoreError> {
        if n > self.remaining.saturating_sub(TRAILER_BYTES) {
            return Err(invalid("the snapshot ends before its trailer"));
        }
        self.buf.resize(n as usize, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(StoreError::Io)?;
        self.hasher.update(&self.buf);
        self.remaining -= n;
        Ok(&self.buf)
    }

    fn next(&mut self) -> Result<Record, StoreError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        if u64::from(len) > RECORD_BYTES_MAX {
            return Err(invalid(format!("a record of {len} bytes")));
        }
        let bytes = self.take(u64::from(len))?;
        postcard::from_bytes(bytes).map_err(|e| invalid(format!("undecodable record: {e}")))
    }

    /// Checks the trailer after `End`, and that nothing follows it.
    fn finish(mut self) -> Result<R, StoreError> {
        if self.remaining != TRAILER_BYTES {
            return Err(invalid(format!(
                "{} bytes after the end record",
                self.remaining - TRAILER_BYTES
            )));
        }
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        self.input
            .read_exact(&mut trailer)
            .map_err(StoreError::Io)?;
        if self.hasher.finalize() != blake3::Hash::from(trailer) {
            return Err(invalid("checksum mismatch"));
        }
        Ok(self.input)
    }
}

/// Reads a whole file in order, handing each table record to `sink`; returns the meta, the
/// head and the reader (for its trailer check). `expected`: the meta the file must carry.
fn read_records<R: Read>(
    reader: &mut Reader<R>,
    expected: Option<&Meta>,
    mut sink: impl FnMut(Record) -> Result<(), StoreError>,
) -> Result<(Meta, Head), StoreError> {
    let Record::Meta(meta) = reader.next()? else {
        return Err(invalid("the first record is not the snapshot's metadata"));
    };
    if expected.is_some_and(|e| *e != meta) {
        return Err(invalid(format!(
            "the file is snapshot {}, not the one announced",
            meta.snapshot_id
        )));
    }
    let Record::Head(head) = reader.next()? else {
        return Err(invalid("the second record is not the snapshot's head"));
    };
    loop {
        match reader.next()? {
            Record::End => return Ok((meta, head)),
            Record::Meta(_) | Record::Head(_) => return Err(invalid("a second meta or head")),
            record => sink(record)?,
        }
    }
}

fn file_len(file: &File) -> Result<u64, StoreError> {
    Ok(file.metadata().map_err(StoreError::Io)?.len())
}

/// Checks that the file at `path` is a whole snapshot carrying `meta`: every record decodes,
/// in order, and the checksum matches. Writes nothing.
pub fn verify_snapshot(path: &Path, meta: &Meta) -> Result<(), StoreError> {
    let file = File::open(path).map_err(StoreError::Io)?;
    let len = file_len(&file)?;
    let mut reader = Reader::open(BufReader::new(file), len)?;
    read_records(&mut reader, Some(meta), |_| Ok(()))?;
    reader.finish()?;
    Ok(())
}

/// The meta `snapshot.bin` carries, if it exists and is in this format. (A file in another
/// format, from an older kith, reads as none, and a fresh copy replaces it.)
fn stored_meta(dir: &Path) -> Result<Option<Meta>, StoreError> {
    let file = match File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(e)),
    };
    let len = file_len(&file)?;
    let Ok(mut reader) = Reader::open(BufReader::new(file), len) else {
        return Ok(None);
    };
    match reader.next() {
        Ok(Record::Meta(meta)) => Ok(Some(meta)),
        _ => Ok(None),
    }
}

/// An empty file in `dir` that no name refers to (gone when closed): the data of a
/// snapshot whose data openraft does not use.
pub(crate) fn unlinked_file(dir: &Path) -> Result<tokio::fs::File, StoreError> {
    let path = dir.join("snapshot.empty.tmp");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(StoreError::Io)?;
    std::fs::remove_file(&path).map_err(StoreError::Io)?;
    Ok(tokio::fs::File::from_std(file))
}

/// Makes `tmp` durable under the name `snapshot.bin`: fsync, rename, fsync the directory.
fn publish(dir: &Path, tmp: File) -> Result<(), StoreError> {
    tmp.sync_all().map_err(StoreError::Io)?;
    drop(tmp);
    std::fs::rename(dir.join(SNAPSHOT_TMP_FILE), dir.join(SNAPSHOT_FILE))
        .map_err(StoreError::Io)?;
    crate::wal::sync_dir(dir)
}

/// Writes the state as `txn` sees it to `snapshot.bin` (crash-safely), carrying `meta`.
fn save_copy(dir: &Path, txn: &ReadTransaction, meta: &Meta) -> Result<(), StoreError> {
    let tmp = File::create(dir.join(SNAPSHOT_TMP_FILE)).map_err(StoreError::Io)?;
    let tmp = write_copy(BufWriter::new(tmp), txn, meta)?
        .into_inner()
        .map_err(|e| StoreError::Io(e.into_error()))?;
    let bytes = file_len(&tmp)?;
    if bytes > SNAPSHOT_BYTES_MAX {
        tracing::warn!(
            bytes,
            bytes_max = SNAPSHOT_BYTES_MAX,
            "the snapshot is larger than a peer accepts; a follower behind the log cannot catch up"
        );
    }
    publish(dir, tmp)
}

/// Where a backup with its files gets a chunk's bytes, by hash.
pub(crate) type ChunkSource<'a> = &'a mut dyn FnMut(Hash) -> Result<Vec<u8>, StoreError>;

/// Where a restore puts each chunk a backup carries.
pub(crate) type ChunkSink<'a> = &'a mut dyn FnMut(Hash, &[u8]) -> Result<(), StoreError>;

/// Writes the state as `txn` sees it to `out` in the snapshot format, carrying `meta`.
pub(crate) fn write_copy<W: Write>(
    out: W,
    txn: &ReadTransaction,
    meta: &Meta,
) -> Result<W, StoreError> {
    write_tables(Writer::new(out)?, txn, meta)?.finish()
}

/// As [`write_copy`], in version 2, followed by the bytes of every chunk a file references
/// (each asked of `chunk` once, in hash order; one in memory at a time).
pub(crate) fn write_copy_with_chunks<W: Write>(
    out: W,
    txn: &ReadTransaction,
    meta: &Meta,
    chunk: ChunkSource<'_>,
) -> Result<W, StoreError> {
    let mut w = write_tables(Writer::with_version(out, FORMAT_VERSION_CHUNKS)?, txn, meta)?;
    for item in txn.open_table(CHUNK_REFS)?.iter()? {
        let (hash, _) = item?;
        let hash: Hash = hash
            .value()
            .try_into()
            .map_err(|_| StoreError::Io(std::io::Error::other("chunk hash is not 32 bytes")))?;
        w.record(&Record::Chunk(hash, chunk(hash)?))?;
    }
    w.finish()
}

fn write_tables<W: Write>(
    mut w: Writer<W>,
    txn: &ReadTransaction,
    meta: &Meta,
) -> Result<Writer<W>, StoreError> {
    w.record(&Record::Meta(meta.clone()))?;
    let m = txn.open_table(META)?;
    w.record(&Record::Head(Head {
        kv_meta: meta_get(&m, KEY_KV_META)?.unwrap_or_default(),
        ledger_head: meta_get(&m, KEY_LEDGER_HEAD)?.unwrap_or_default(),
        job_next_id: meta_get(&m, KEY_JOB_NEXT_ID)?.unwrap_or(0),
        files_version: meta_get(&m, KEY_FILES_VERSION)?.unwrap_or(0),
        events_compacted: meta_get(&m, KEY_EVENTS_COMPACTED)?.unwrap_or(0),
    }))?;
    for item in txn.open_table(KV)?.iter()? {
        let (k, v) = item?;
        w.record(&Record::Kv(k.value().to_owned(), decode(v.value())?))?;
    }
    for item in txn.open_table(ROOMS)?.iter()? {
        let (k, v) = item?;
        w.record(&Record::Room(k.value().to_owned(), decode(v.value())?))?;
    }
    for item in txn.open_table(MESSAGES)?.iter()? {
        let (k, v) = item?;
        w.record(&Record::Message(k.value().0.to_owned(), decode(v.value())?))?;
    }
    for item in txn.open_table(JOBS)?.iter()? {
        w.record(&Record::Job(decode(item?.1.value())?))?;
    }
    for item in txn.open_table(JOB_STATS)?.iter()? {
        let (k, v) = item?;
        w.record(&Record::JobStats(k.value().to_owned(), decode(v.value())?))?;
    }
    for item in txn.open_table(FILES)?.iter()? {
        w.record(&Record::File(decode(item?.1.value())?))?;
    }
    for item in txn.open_table(SHARES)?.iter()? {
        w.record(&Record::Share(decode(item?.1.value())?))?;
    }
    for item in txn.open_table(TOKENS)?.iter()? {
        w.record(&Record::Token(decode(item?.1.value())?))?;
    }
    for item in txn.open_table(EVENTS)?.iter()? {
        for event in decode_events(item?.1.value())? {
            w.record(&Record::Event(event))?;
        }
    }
    for item in txn.open_table(LEDGER)?.iter()? {
        let (index, hash) = item?;
        let hash: Hash = hash
            .value()
            .try_into()
            .map_err(|_| StoreError::Io(std::io::Error::other("ledger hash is not 32 bytes")))?;
        w.record(&Record::Ledger(index.value(), hash))?;
    }
    for item in txn.open_table(LEASES)?.iter()? {
        w.record(&Record::Lease(decode(item?.1.value())?))?;
    }
    for item in txn.open_table(LEASE_KEYS)?.iter()? {
        let (k, _) = item?;
        let (id, key) = k.value();
        w.record(&Record::LeaseKey(id as i64, key.to_owned()))?;
    }
    Ok(w)
}

/// Checks that the file at `path` is a whole snapshot, whatever it carries; returns its
/// meta and its kv revision. Writes nothing.
pub(crate) fn verify_any(path: &Path) -> Result<(Meta, u64), StoreError> {
    let file = File::open(path).map_err(StoreError::Io)?;
    let len = file_len(&file)?;
    let mut reader = Reader::open(BufReader::new(file), len)?;
    let (meta, head) = read_records(&mut reader, None, |_| Ok(()))?;
    reader.finish()?;
    Ok((meta, head.kv_meta.revision))
}

/// Copies the snapshot file at `from` to `to` with `meta` in place of its own, checking
/// the source's checksum on the way; every other record is copied as it is, except chunks,
/// which go to `chunk` (so `to` is always a version 1 file, as a node installs).
pub(crate) fn copy_with_meta(
    from: &Path,
    to: &Path,
    meta: &Meta,
    chunk: ChunkSink<'_>,
) -> Result<(), StoreError> {
    let file = File::open(from).map_err(StoreError::Io)?;
    let len = file_len(&file)?;
    let mut reader = Reader::open(BufReader::new(file), len)?;
    let out = File::create(to).map_err(StoreError::Io)?;
    let mut w = Writer::new(BufWriter::new(out))?;
    w.record(&Record::Meta(meta.clone()))?;
    let Record::Meta(_) = reader.next()? else {
        return Err(invalid("the first record is not the snapshot's metadata"));
    };
    let head = reader.next()?;
    if !matches!(head, Record::Head(_)) {
        return Err(invalid("the second record is not the snapshot's head"));
    }
    w.record(&head)?;
    loop {
        match reader.next()? {
            Record::End => break,
            Record::Meta(_) | Record::Head(_) => return Err(invalid("a second meta or head")),
            Record::Chunk(hash, bytes) => chunk(hash, &bytes)?,
            record => w.record(&record)?,
        }
    }
    reader.finish()?;
    let out = w
        .finish()?
        .into_inner()
        .map_err(|e| StoreError::Io(e.into_error()))?;
    out.sync_all().map_err(StoreError::Io)
}

/// Opens `snapshot.bin` as openraft's snapshot data.
fn open_copy(dir: &Path, meta: Meta) -> Result<Snapshot<TypeConfig>, StoreError> {
    let file = File::open(dir.join(SNAPSHOT_FILE)).map_err(StoreError::Io)?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    })
}

/// `TERM-INDEX-SEQ`: unique per snapshot of this process, and readable in logs.
fn snapshot_id(last_applied: Option<LogId<NodeId>>, seq: u64) -> String {
    match last_applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
        None => format!("0-0-{seq}"),
    }
}

/// The current snapshot: `snapshot.bin` while it is at least as new as the recorded one,
/// otherwise a fresh copy of the state, which then replaces `snapshot.bin`.
pub(crate) fn current_snapshot(
    db: &Database,
    durable: &watch::Sender<u64>,
    dir: &Path,
    seq: u64,
) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
    let recorded: Option<Meta> = meta_get(&db.begin_read()?.open_table(META)?, KEY_SNAPSHOT)?;
    let stored = stored_meta(dir)?;
    let file_exists = dir.join(SNAPSHOT_FILE).exists();
    match (&recorded, stored) {
        // Nothing was ever built or installed here.
        (None, None) if !file_exists => return Ok(None),
        (None, Some(stored)) => return open_copy(dir, stored).map(Some),
        (Some(r), Some(stored)) if stored.last_log_id >= r.last_log_id => {
            return open_copy(dir, stored).map(Some)
        }
        _ => {}
    }
    // The copy must never be ahead of what survives a crash: openraft takes the current
    // snapshot's index as a point the log may be purged up to, and after a crash the
    // entries past the durable state must still be in the log to be re-applied. So make the
    // state durable first (the caller is openraft's state-machine task, so no apply runs
    // meanwhile), then read.
    db.begin_write()?.commit()?;
    let txn = db.begin_read()?;
    let meta_table = txn.open_table(META)?;
    advance(durable, applied_index(&meta_table)?);
    // The state only moves forward from the recorded snapshot (an install records its own),
    // so this copy is at or past it: a follower that installs it needs no purged entry.
    let last_applied: Option<LogId<NodeId>> = meta_get(&meta_table, KEY_LAST_APPLIED)?.flatten();
    let meta = match recorded {
        Some(r) if r.last_log_id == last_applied => r,
        _ => Meta {
            last_log_id: last_applied,
            last_membership: meta_get(&meta_table, KEY_MEMBERSHIP)?.unwrap_or_default(),
            snapshot_id: snapshot_id(last_applied, seq),
        },
    };
    save_copy(dir, &txn, &meta)?;
    open_copy(dir, meta).map(Some)
}

/// Copies what it reads to `copy`: install keeps the file it installs as `snapshot.bin`.
struct Tee<R, W> {
    input: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// What an install changed that the state machine caches.
pub(crate) struct Installed {
    pub revision: u64,
    pub job_timer_first_ms: Option<u64>,
}

/// The tables an install replaces, open in its one write transaction.
struct InstallTables<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    expiry: Table<'t, (u64, &'static str), ()>,
    rooms: Table<'t, &'static str, &'static [u8]>,
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    ids: Table<'t, (&'static str, &'static str), u64>,
    jobs: Table<'t, u64, &'static [u8]>,
    ready: Table<'t, (&'static str, u8, u64), ()>,
    timers: Table<'t, (u64, u64), ()>,
    keys: Table<'t, (&'static str, &'static str), u64>,
    stats: Table<'t, &'static str, &'static [u8]>,
    files: RedbFiles<'t>,
    tokens: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, u64, &'static [u8]>,
    ledger: Table<'t, u64, &'static [u8]>,
    leases: Table<'t, u64, &'static [u8]>,
    lease_keys: Table<'t, (u64, &'static str), ()>,
    key_leases: Table<'t, &'static str, u64>,
}

impl<'t> InstallTables<'t> {
    /// Opens every table and empties it.
    fn cleared(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let mut t = InstallTables {
            kv: txn.open_table(KV)?,
            expiry: txn.open_table(EXPIRY)?,
            rooms: txn.open_table(ROOMS)?,
            messages: txn.open_table(MESSAGES)?,
            ids: txn.open_table(MESSAGE_IDS)?,
            jobs: txn.open_table(JOBS)?,
            ready: txn.open_table(JOB_READY)?,
            timers: txn.open_table(JOB_TIMERS)?,
            keys: txn.open_table(JOB_KEYS)?,
            stats: txn.open_table(JOB_STATS)?,
            files: RedbFiles::open(txn, 0)?,
            tokens: txn.open_table(TOKENS)?,
            events: txn.open_table(EVENTS)?,
            ledger: txn.open_table(LEDGER)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            key_leases: txn.open_table(KEY_LEASES)?,
        };
        t.kv.retain(|_, _| false)?;
        t.leases.retain(|_, _| false)?;
        t.lease_keys.retain(|_, _| false)?;
        t.key_leases.retain(|_, _| false)?;
        t.expiry.retain(|_, _| false)?;
        t.rooms.retain(|_, _| false)?;
        t.messages.retain(|_, _| false)?;
        t.ids.retain(|_, _| false)?;
        t.jobs.retain(|_, _| false)?;
        t.ready.retain(|_, _| false)?;
        t.timers.retain(|_, _| false)?;
        t.keys.retain(|_, _| false)?;
        t.stats.retain(|_, _| false)?;
        t.files.clear()?;
        t.tokens.retain(|_, _| false)?;
        t.events.retain(|_, _| false)?;
        t.ledger.retain(|_, _| false)?;
        Ok(t)
    }

    fn insert(&mut self, record: Record) -> Result<(), StoreError> {
        match record {
            Record::Kv(key, entry) => {
                self.kv.insert(key.as_str(), encode(&entry)?.as_slice())?;
                if let Some(at) = entry.expires_at_ms {
                    self.expiry.insert((at, key.as_str()), ())?;
                }
            }
            Record::Room(room, meta) => {
                self.rooms
                    .insert(room.as_str(), encode(&meta)?.as_slice())?;
            }
            Record::Message(room, message) => {
                let (room, seq) = (room.as_str(), message.seq);
                self.messages
                    .insert((room, seq), encode(&message)?.as_slice())?;
                self.ids.insert((room, message.id.as_str()), seq)?;
            }
            Record::Job(job) => {
                self.jobs.insert(job.id, encode(&job)?.as_slice())?;
                index_job(&job, &mut self.ready, &mut self.timers, &mut self.keys)?;
            }
            Record::JobStats(queue, stats) => {
                self.stats
                    .insert(queue.as_str(), encode(&stats)?.as_slice())?;
            }
            Record::File(manifest) => self.files.install_file(&manifest)?,
            Record::Share(share) => self.files.install_share(&share)?,
            Record::Token(token) => {
                self.tokens
                    .insert(token.id.as_str(), encode(&token)?.as_slice())?;
            }
            Record::Event(event) => {
                // One transaction's events follow each other in the file: they join.
                let mut group = match self.events.get(event.revision)? {
                    Some(old) => decode_events(old.value())?,
                    None => Vec::new(),
                };
                group.push(event);
                self.events
                    .insert(group[0].revision, encode_events(&group)?.as_slice())?;
            }
            Record::Ledger(index, hash) => {
                self.ledger.insert(index, hash.as_slice())?;
            }
            Record::Lease(lease) => {
                self.leases
                    .insert(lease.id as u64, encode(&lease)?.as_slice())?;
                self.expiry
                    .insert((lease.expires_at_ms, timer_key(lease.id).as_str()), ())?;
            }
            Record::LeaseKey(id, key) => {
                self.lease_keys.insert((id as u64, key.as_str()), ())?;
                self.key_leases.insert(key.as_str(), id as u64)?;
            }
            // Chunks belong in a chunk store, never in the state: only a restore's copy
            // takes them out (`copy_with_meta`), and a peer's snapshot has none.
            Record::Chunk(..) => return Err(invalid("a snapshot to install carries file chunks")),
            Record::Meta(_) | Record::Head(_) | Record::End => {
                unreachable!("read_records hands on table records only")
            }
        }
        Ok(())
    }
}

/// Replaces the whole state with the snapshot in `file`, in one durable transaction that
/// commits only if the whole file checks out, then keeps the file as `snapshot.bin`.
pub(crate) fn install(
    db: &Database,
    dir: &Path,
    meta: &Meta,
    mut file: File,
) -> Result<Installed, StoreError> {
    let len = file_len(&file)?;
    file.seek(SeekFrom::Start(0)).map_err(StoreError::Io)?;
    let tmp_path = dir.join(SNAPSHOT_TMP_FILE);
    let copy = BufWriter::new(File::create(&tmp_path).map_err(StoreError::Io)?);
    let tee = Tee {
        input: BufReader::new(file),
        copy,
    };
    let result = install_from(db, meta, tee, len);
    let (installed, tee) = match result {
        Ok(done) => done,
        Err(e) => {
            // Best effort: the next copy or install truncates it anyway.
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    let copy = tee
        .copy
        .into_inner()
        .map_err(|e| StoreError::Io(e.into_error()))?;
    publish(dir, copy)?;
    Ok(installed)
}

fn install_from<R: Read>(
    db: &Database,
    meta: &Meta,
    input: R,
    len: u64,
) -> Result<(Installed, R), StoreError> {
    let mut reader = Reader::open(input, len)?;
    let txn = db.begin_write()?;
    let (head, job_timer_first_ms) = {
        let mut tables = InstallTables::cleared(&txn)?;
        let (_, head) = read_records(&mut reader, Some(meta), |r| tables.insert(r))?;
        // The head's hash is kept even if the history carried none.
        let ledger_head = head.ledger_head;
        tables
            .ledger
            .insert(ledger_head.index, ledger_head.hash.as_slice())?;
        tables.files.version = head.files_version;
        let first = tables.timers.first()?.map(|(k, _)| k.value().0);
        (head, first)
    };
    // Nothing commits unless the whole file is as it was written.
    let input = reader.finish()?;
    {
        let mut m = txn.open_table(META)?;
        meta_put(&mut m, KEY_LAST_APPLIED, &meta.last_log_id)?;
        meta_put(&mut m, KEY_MEMBERSHIP, &meta.last_membership)?;
        meta_put(&mut m, KEY_KV_META, &head.kv_meta)?;
        meta_put(&mut m, KEY_LEDGER_HEAD, &head.ledger_head)?;
        meta_put(&mut m, KEY_EVENTS_COMPACTED, &head.events_compacted)?;
        // Recounted from the installed events by the next apply.
        m.remove(KEY_EVENTS_BYTES)?;
        meta_put(&mut m, KEY_JOB_NEXT_ID, &head.job_next_id)?;
        meta_put(&mut m, KEY_FILES_VERSION, &head.files_version)?;
        meta_put(&mut m, KEY_SNAPSHOT, meta)?;
    }
    txn.commit()?;
    Ok((
        Installed {
            revision: head.kv_meta.revision,
            job_timer_first_ms,
        },
        input,
    ))
}

/// Builds a snapshot: records, durably, what the state holds now (see `state_machine`).
pub struct SnapshotBuilder {
    pub(crate) db: Arc<Database>,
    pub(crate) dir: PathBuf,
    pub(crate) durable: Arc<watch::Sender<u64>>,
    pub(crate) seq: u64,
}

impl SnapshotBuilder {
    /// Promises a snapshot of the state as it is now; see the `state_machine` module docs.
    fn build_inner(&mut self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let (last_applied, last_membership) = {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let last_applied: Option<LogId<NodeId>> = meta_get(&meta, KEY_LAST_APPLIED)?.flatten();
            let membership: Membership = meta_get(&meta, KEY_MEMBERSHIP)?.unwrap_or_default();
            (last_applied, membership)
        };
        let meta = Meta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id: snapshot_id(last_applied, self.seq),
        };
        // Once this snapshot exists openraft may purge the log up to it, so the state it
        // covers must survive a crash: this durable commit makes every apply before it
        // durable. An install that committed meanwhile holds a newer state: keep its record.
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(META)?;
            let recorded: Option<Meta> = meta_get(&table, KEY_SNAPSHOT)?;
            if recorded.is_none_or(|r| r.last_log_id < meta.last_log_id) {
                meta_put(&mut table, KEY_SNAPSHOT, &meta)?;
            }
        }
        txn.commit()?;
        advance(&self.durable, last_applied.map_or(0, |l| l.index));
        // openraft keeps only the metadata of a snapshot it had built; the data is made when
        // it asks for the current snapshot.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(unlinked_file(&self.dir)?),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        // The durable commit waits for an fsync and for the write lock an apply may hold.
        // openraft runs this future on a runtime worker, of which a node has two; a blocking
        // thread keeps both serving meanwhile.
        let mut builder = SnapshotBuilder {
            db: self.db.clone(),
            dir: self.dir.clone(),
            durable: self.durable.clone(),
            seq: self.seq,
        };
        tokio::task::spawn_blocking(move || builder.build_inner())
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))
            .and_then(|built| built)
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn meta() -> Meta {
        Meta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 0), 7)),
            last_membership: Default::default(),
            snapshot_id: "1-7-1".into(),
        }
    }

    fn written(records: &[Record]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        for r in records {
            w.record(r).unwrap();
        }
        w.finish().unwrap()
    }

    fn head() -> Record {
        Record::Head(Head {
            kv_meta: KvMeta::default(),
            ledger_head: LedgerHead::default(),
            job_next_id: 0,
            files_version: 0,
            events_compacted: 0,
        })
    }

    fn check(bytes: &[u8]) -> Result<usize, StoreError> {
        let mut reader = Reader::open(bytes, bytes.len() as u64)?;
        let mut n = 0;
        read_records(&mut reader, Some(&meta()), |_| {
            n += 1;
            Ok(())
        })?;
        reader.finish()?;
        Ok(n)
    }

    #[test]
    fn a_whole_file_reads_back_and_any_damage_is_refused() {
        let kv = Record::Ledger(3, [9; 32]);
        let bytes = written(&[Record::Meta(meta()), head(), kv]);
        assert_eq!(check(&bytes).unwrap(), 1);
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(check(&flipped).is_err(), "a flipped byte at {at} passes");
        }
        for cut in 0..bytes.len() {
            assert!(check(&bytes[..cut]).is_err(), "cut at {cut} passes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(check(&longer).is_err());
    }

    #[test]
    fn order_and_announced_meta_are_checked() {
        let other = Meta {
            snapshot_id: "other".into(),
            ..meta()
        };
        assert!(check(&written(&[Record::Meta(other), head()])).is_err());
        assert!(check(&written(&[head(), Record::Meta(meta())])).is_err());
        assert!(check(&written(&[Record::Meta(meta()), head(), head()])).is_err());
    }

    #[test]
    fn a_record_length_past_the_file_allocates_nothing() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(FORMAT_VERSION.to_le_bytes());
        bytes.extend(u32::MAX.to_le_bytes());
        bytes.extend([0u8; 40]);
        let err = check(&bytes).unwrap_err();
        assert!(matches!(err, StoreError::InvalidSnapshot(_)), "{err}");
    }

    #[test]
    fn a_snapshot_to_install_with_a_file_chunk_is_refused_and_changes_nothing() {
        let bytes = {
            let mut w = Writer::with_version(Vec::new(), FORMAT_VERSION_CHUNKS).unwrap();
            for r in [
                Record::Meta(meta()),
                head(),
                Record::Ledger(3, [9; 32]),
                Record::Chunk([1; 32], vec![0; 10]),
            ] {
                w.record(&r).unwrap();
            }
            w.finish().unwrap()
        };
        assert_eq!(check(&bytes).unwrap(), 2, "a whole version 2 file reads");
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        let len = bytes.len() as u64;
        let err = install_from(&db, &meta(), bytes.as_slice(), len)
            .err()
            .expect("installed a snapshot carrying a chunk");
        assert!(err.to_string().contains("chunks"), "{err}");
        let txn = db.begin_read().unwrap();
        assert!(
            txn.open_table(LEDGER).is_err(),
            "the refused install committed its tables"
        );
    }
}
