//! The Raft log's files: segments of checksummed records, and a small meta file.
//!
//! Layout of `raft-log/`:
//! - `<first index, 20 digits>.seg`: the records of consecutive log indexes, starting at the
//!   one in the name. A record is `len: u32 LE | check: u64 LE | payload`; the payload is the
//!   postcard-encoded `Entry`, `check` the first 8 bytes of its BLAKE3 hash.
//! - `meta`: the vote and the last purged log id (postcard, with the same check), replaced
//!   atomically: written to `meta.tmp`, fsynced, renamed, directory fsynced.
//!
//! Why not redb: every log append on every node is one commit, and a redb commit rewrites
//! B-tree pages, the table tree and its free-page bookkeeping before its fsync, a large
//! share of a node's CPU under writes in profiles. An append here is one `pwrite` of the
//! records and one `fdatasync`, the format etcd's WAL and TiKV's raft-engine also use. The
//! state machine, which needs lookups and ranges, stays on redb.
//!
//! Owns: the format, recovery, and the in-memory index of where each entry lies. Refuses:
//! threads, openraft's callbacks and grouping writes (`log_store.rs` does those); deciding
//! when appended records are made durable (the caller calls [`Wal::sync`]).
//!
//! Invariants:
//! - Only the last segment is ever written. A group of appends goes to one segment, which
//!   is fsynced before a new one starts, so a torn record can only be at the end of the last
//!   segment. Recovery cuts the last segment at its first record that is short, fails its
//!   check, does not decode, or does not continue the index sequence. Anything found
//!   damaged anywhere else is corruption, and opening fails rather than guessing.
//! - `truncate` is durable before it returns (file cut, later segments removed, directory
//!   fsynced), so records appended after it can never be followed, after a crash, by ones
//!   it removed.
//! - `purge` records the new `last_purged` durably *before* it deletes any segment. A crash
//!   in between leaves segments that recovery recognises as purged and deletes.
//! - Entries at or below `last_purged` are never returned, even while their segment exists.
//! - The last segment's file runs ahead of its records with zeros (`PREALLOC_BYTES` at a
//!   time, written, not just reserved): an append then overwrites blocks the file already
//!   has, and its `fdatasync` flushes the data alone, where growing the file also rewrote
//!   the inode each time (a large share of each fsync; docs/history/benchmarks.md has the
//!   measurement). A zero header is no record, so recovery stops there; a tail
//!   of zeros is kept as it is, anything else after the last whole record is cut. Only the
//!   last segment has such a tail: a full segment is cut to its records (durably) before
//!   the next one starts, and `truncate` cuts the file itself, so no stale record can
//!   follow the ones written after it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::{StoreError, TypeConfig};
use kith_core::NodeId;

/// A new segment starts once the last one holds this many bytes.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Zeros written ahead of the last segment's records at a time (see the module docs).
const PREALLOC_BYTES: u64 = 1024 * 1024;
/// Bytes of a record's header: `len: u32`, `check: u64`.
const HEADER: usize = 12;
/// The largest payload recovery accepts; anything larger is a torn or damaged length. An
/// entry is at most one write batch (2 MiB of proposals) plus its framing.
const RECORD_MAX: usize = 64 * 1024 * 1024;
/// Bytes one read of a range takes from a segment at most (unless one record is larger).
const READ_CHUNK: u64 = 1024 * 1024;
const META: &str = "meta";
const META_TMP: &str = "meta.tmp";

/// The vote and the purge point, as stored in `meta`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// `offsets[i]` is where the record of index `first + i` starts.
    offsets: Vec<u64>,
    /// Where the next record goes: the end of the last whole record.
    end: u64,
    /// The file's length: `end`, or more while zeros run ahead of the records.
    allocated: u64,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// The byte range of index `index`'s record, if this segment holds it.
    fn span(&self, index: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(index.checked_sub(self.first)?).ok()?;
        let start = *self.offsets.get(i)?;
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.end);
        Some((start, end))
    }
}

/// What readers see: the segments, the purge point and the vote. Written only by [`Wal`].
pub(crate) struct Index {
    segments: Vec<Segment>,
    meta: Meta,
    last: Option<LogId<NodeId>>,
}

impl Index {
    /// The entries in `[start, end)` that are on disk and not purged, into `out` (entries
    /// already in `out` are kept: they are newer).
    pub(crate) fn read_into(
        &self,
        start: u64,
        end: u64,
        out: &mut BTreeMap<u64, Entry<TypeConfig>>,
    ) -> Result<(), StoreError> {
        let start = match self.meta.last_purged {
            Some(p) => start.max(p.index + 1),
            None => start,
        };
        for seg in &self.segments {
            let from = start.max(seg.first);
            let to = end.min(seg.next_index());
            if from >= to {
                continue;
            }
            // One read per run of records up to READ_CHUNK bytes (or one record, if larger),
            // through one buffer: a whole range at once would hold its bytes twice (raw and
            // decoded) and leave that much with the allocator.
            let mut buf = Vec::new();
            let mut index = from;
            while index < to {
                let lo = seg.span(index).expect("index within the segment").0;
                let mut last = index;
                while last + 1 < to
                    && seg.span(last + 1).expect("index within the segment").1 - lo <= READ_CHUNK
                {
                    last += 1;
                }
                let hi = seg.span(last).expect("index within the segment").1;
                buf.resize((hi - lo) as usize, 0);
                seg.file
                    .read_exact_at(&mut buf, lo)
                    .map_err(StoreError::Io)?;
                for i in index..=last {
                    let (a, b) = seg.span(i).expect("index within the segment");
                    let record = &buf[(a - lo) as usize..(b - lo) as usize];
                    let entry = parse(record).ok_or_else(|| {
                        corrupt(format!("log record {i} in {}", seg.path.display()))
                    })?;
                    out.entry(i).or_insert(entry);
                }
                index = last + 1;
            }
        }
        Ok(())
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.end).sum()
    }

    pub(crate) fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.last
    }

    pub(crate) fn last_purged(&self) -> Option<LogId<NodeId>> {
        self.meta.last_purged
    }

    pub(crate) fn vote(&self) -> Option<Vote<NodeId>> {
        self.meta.vote
    }
}

/// The writer's handle. One per log, owned by the log's storage thread.
pub(crate) struct Wal {
    dir: PathBuf,
    index: Arc<RwLock<Index>>,
    /// The last segment has records not yet fsynced.
    unsynced: bool,
    /// A new segment starts once the last one holds this many bytes.
    segment_bytes: u64,
}

impl Wal {
    /// Opens `dir` (created if missing) and recovers it; see the module docs.
    pub(crate) fn open(dir: &Path) -> Result<Wal, StoreError> {
        Wal::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        let _ = std::fs::remove_file(dir.join(META_TMP));
        let meta: Meta = match std::fs::read(dir.join(META)) {
            Ok(bytes) => parse(&bytes).ok_or_else(|| corrupt(format!("{}/meta", dir.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(StoreError::Io(e)),
        };
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir).map_err(StoreError::Io)? {
            let name = item.map_err(StoreError::Io)?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                names.push(first);
            }
        }
        names.sort_unstable();
        let purged_to = meta.last_purged.map(|p| p.index);
        let mut segments: Vec<Segment> = Vec::new();
        let mut last = None;
        let count = names.len();
        for (n, first) in names.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let is_last = n + 1 == count;
            let (seg, seg_last) = recover_segment(&path, first, is_last)?;
            if seg.offsets.is_empty() || purged_to.is_some_and(|p| seg.next_index() <= p + 1) {
                // Empty (a segment cut before its first record), or left by a purge that
                // crashed before deleting it.
                drop(seg);
                std::fs::remove_file(&path).map_err(StoreError::Io)?;
                continue;
            }
            if let Some(prev) = segments.last() {
                if prev.next_index() != seg.first {
                    return Err(corrupt(format!(
                        "{}: the log has a gap before index {first}",
                        dir.display()
                    )));
                }
            }
            last = seg_last;
            segments.push(seg);
        }
        sync_dir(dir)?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            index: Arc::new(RwLock::new(Index {
                segments,
                meta,
                last,
            })),
            // A process killed between a write and its fsync leaves records in the page
            // cache that recovery reads back like any other. The log reports everything it
            // holds as durable from here on, so they are made durable before that.
            unsynced: true,
            segment_bytes,
        };
        wal.sync()?;
        Ok(wal)
    }

    /// The readers' view; shared with every clone of the log store.
    pub(crate) fn index(&self) -> Arc<RwLock<Index>> {
        self.index.clone()
    }

    /// Writes `entries` (index, log id, encoded entry) after the last one. Not durable until
    /// [`Wal::sync`].
    pub(crate) fn append(
        &mut self,
        entries: &[(u64, LogId<NodeId>, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let Some((first_index, _, _)) = entries.first() else {
            return Ok(());
        };
        let mut index = self.index.write().expect("wal index lock poisoned");
        let continues = index
            .segments
            .last()
            .is_some_and(|s| s.next_index() == *first_index);
        let full = index
            .segments
            .last()
            .is_some_and(|s| s.end >= self.segment_bytes);
        if let Some(seg) = index.segments.last() {
            // openraft truncates before it overwrites, and leaves a gap only after purging
            // every entry before it; anything else would leave a log recovery refuses.
            if *first_index != seg.next_index() {
                return Err(corrupt(format!(
                    "append at {first_index} where the log's next index is {}",
                    seg.next_index()
                )));
            }
        }
        if !continues || full {
            // A new segment: after a full one, or after a gap that a purge beyond the last
            // entry (a snapshot install) left. The old one was fsynced with its group.
            if self.unsynced {
                sync_file(&index.segments.last().expect("unsynced segment").file)?;
                self.unsynced = false;
            }
            if let Some(old) = index.segments.last_mut() {
                // Only the last segment may end in zeros (see the module docs).
                if old.allocated > old.end {
                    old.file.set_len(old.end).map_err(StoreError::Io)?;
                    old.file.sync_all().map_err(StoreError::Io)?;
                    old.allocated = old.end;
                }
            }
            let path = self.dir.join(segment_name(*first_index));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(StoreError::Io)?;
            sync_dir(&self.dir)?;
            index.segments.push(Segment {
                first: *first_index,
                path,
                file: Arc::new(file),
                offsets: Vec::new(),
                end: 0,
                allocated: 0,
            });
        }
        let seg = index.segments.last_mut().expect("a segment to append to");
        let mut buf = Vec::with_capacity(entries.iter().map(|e| HEADER + e.2.len()).sum());
        let mut offsets = Vec::with_capacity(entries.len());
        for (expected, (i, _, bytes)) in (seg.next_index()..).zip(entries) {
            if *i != expected {
                return Err(corrupt(format!("append of {i} where {expected} was next")));
            }
            offsets.push(seg.end + buf.len() as u64);
            frame(bytes, &mut buf);
        }
        let needed = seg.end + buf.len() as u64;
        if needed > seg.allocated {
            // Zeros ahead of the records, made durable by this group's fsync.
            let upto = needed + PREALLOC_BYTES;
            let zeros = vec![0u8; (upto - needed) as usize];
            seg.file
                .write_all_at(&zeros, needed)
                .map_err(StoreError::Io)?;
            seg.allocated = upto;
        }
        seg.file
            .write_all_at(&buf, seg.end)
            .map_err(StoreError::Io)?;
        seg.end += buf.len() as u64;
        seg.offsets.extend(offsets);
        index.last = entries.last().map(|e| e.1);
        self.unsynced = true;
        Ok(())
    }

    /// Makes every appended record durable (`fdatasync` of the last segment).
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if !self.unsynced {
            return Ok(());
        }
        let file = {
            let index = self.index.read().expect("wal index lock poisoned");
            index.segments.last().map(|s| s.file.clone())
        };
        if let Some(file) = file {
            sync_file(&file)?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Removes every entry at or after `since`, durably (Raft §5.3: a follower drops the
    /// conflicting suffix before it takes the leader's entries).
    pub(crate) fn truncate(&mut self, since: u64) -> Result<(), StoreError> {
        // Whatever was appended before the truncate is made durable first, so what follows
        // only ever removes records.
        self.sync()?;
        let mut index = self.index.write().expect("wal index lock poisoned");
        let mut removed = false;
        while index.segments.last().is_some_and(|s| s.first >= since) {
            let seg = index.segments.pop().expect("checked above");
            std::fs::remove_file(&seg.path).map_err(StoreError::Io)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(seg) = index.segments.last_mut() {
            if let Some((cut, _)) = seg.span(since) {
                // The file itself is cut, zeros and all: a record left past the cut could
                // otherwise continue the index sequence after a later crash.
                seg.file.set_len(cut).map_err(StoreError::Io)?;
                sync_file(&seg.file)?;
                seg.offsets.truncate((since - seg.first) as usize);
                seg.end = cut;
                seg.allocated = cut;
            }
        }
        let last = match index.segments.last() {
            Some(seg) => {
                let last = seg.next_index() - 1;
                let mut out = BTreeMap::new();
                index.read_into(last, last + 1, &mut out)?;
                out.remove(&last).map(|e| e.log_id)
            }
            None => None,
        };
        index.last = last;
        Ok(())
    }

    /// Records `upto` as purged (durably), then deletes the segments it covers entirely.
    pub(crate) fn purge(&mut self, upto: LogId<NodeId>) -> Result<(), StoreError> {
        self.update_meta(|meta| meta.last_purged = Some(upto))?;
        let mut index = self.index.write().expect("wal index lock poisoned");
        while index
            .segments
            .first()
            .is_some_and(|s| s.next_index() <= upto.index + 1)
        {
            let seg = index.segments.remove(0);
            if index.segments.is_empty() {
                // The last segment goes too, and with it anything that awaited an fsync.
                self.unsynced = false;
            }
            std::fs::remove_file(&seg.path).map_err(StoreError::Io)?;
        }
        if index.last.is_none_or(|l| l.index <= upto.index) {
            index.last = None;
        }
        Ok(())
    }

    /// Stores `vote` durably.
    pub(crate) fn save_vote(&mut self, vote: Vote<NodeId>) -> Result<(), StoreError> {
        self.update_meta(|meta| meta.vote = Some(vote))
    }

    /// Changes the meta file durably, then what readers see.
    fn update_meta(&self, change: impl FnOnce(&mut Meta)) -> Result<(), StoreError> {
        let mut meta = self
            .index
            .read()
            .expect("wal index lock poisoned")
            .meta
            .clone();
        change(&mut meta);
        let mut buf = Vec::new();
        frame(&encode(&meta)?, &mut buf);
        let tmp = self.dir.join(META_TMP);
        let mut file = File::create(&tmp).map_err(StoreError::Io)?;
        file.write_all(&buf).map_err(StoreError::Io)?;
        file.sync_all().map_err(StoreError::Io)?;
        std::fs::rename(&tmp, self.dir.join(META)).map_err(StoreError::Io)?;
        sync_dir(&self.dir)?;
        self.index.write().expect("wal index lock poisoned").meta = meta;
        Ok(())
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn check(payload: &[u8]) -> u64 {
    let hash = blake3::hash(payload);
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("a record is smaller than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&check(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload of the record at the start of `bytes`, if its header is whole and sane and
/// its payload is all there and passes its check.
fn whole_record(bytes: &[u8]) -> Option<&[u8]> {
    let (len, sum) = parse_header(bytes.get(..HEADER)?)?;
    let payload = bytes.get(HEADER..HEADER + len)?;
    (check(payload) == sum).then_some(payload)
}

/// A record header's payload length and check, if the length is possible.
fn parse_header(header: &[u8]) -> Option<(usize, u64)> {
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let sum = u64::from_le_bytes(header[4..HEADER].try_into().expect("8 bytes"));
    (len != 0 && len <= RECORD_MAX).then_some((len, sum))
}

/// Decodes one whole record (exactly `bytes`).
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let payload = whole_record(bytes)?;
    if HEADER + payload.len() != bytes.len() {
        return None;
    }
    decode(payload).ok()
}

/// Reads the next record's payload into `payload`, if the record is whole, sane and passes
/// its check.
fn read_record(reader: &mut impl std::io::Read, payload: &mut Vec<u8>) -> Option<()> {
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header).ok()?;
    let (len, sum) = parse_header(&header)?;
    payload.resize(len, 0);
    reader.read_exact(payload).ok()?;
    (check(payload) == sum).then_some(())
}

/// Reads a segment and rebuilds its offsets; cuts a torn tail off the last segment.
fn recover_segment(
    path: &Path,
    first: u64,
    is_last: bool,
) -> Result<(Segment, Option<LogId<NodeId>>), StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(StoreError::Io)?;
    let file_len = file.metadata().map_err(StoreError::Io)?.len();
    // Record by record through one reused buffer: a segment can be 64 MiB, and reading it
    // whole would leave that much with the allocator after every restart.
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
    let mut payload = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    let mut last: Option<LogId<NodeId>> = None;
    while pos < file_len {
        let expected = first + offsets.len() as u64;
        let Some(entry) = read_record(&mut reader, &mut payload)
            .and_then(|()| decode::<Entry<TypeConfig>>(&payload).ok())
            .filter(|e| {
                e.log_id.index == expected
                    && last.is_none_or(|l| l.leader_id.term <= e.log_id.leader_id.term)
            })
        else {
            break;
        };
        offsets.push(pos);
        last = Some(entry.log_id);
        pos += (HEADER + payload.len()) as u64;
    }
    let mut allocated = file_len;
    if pos < file_len {
        let zeros = only_zeros_from(&file, pos, file_len)?;
        if !is_last && !zeros {
            return Err(corrupt(format!(
                "{} is damaged at byte {pos} and is not the last segment",
                path.display()
            )));
        }
        // The last segment's tail of zeros is its preallocation (see the module docs) and
        // stays for appends to go on over; anything else past the records is cut.
        if !(is_last && zeros) {
            if !zeros {
                tracing::warn!(
                    segment = %path.display(),
                    at = pos,
                    dropped_bytes = file_len - pos,
                    "cutting a torn tail off the Raft log (a write the crash interrupted)"
                );
            }
            file.set_len(pos).map_err(StoreError::Io)?;
            file.sync_all().map_err(StoreError::Io)?;
            allocated = pos;
        }
    }
    Ok((
        Segment {
            first,
            path: path.to_path_buf(),
            file: Arc::new(file),
            offsets,
            end: pos,
            allocated,
        },
        last,
    ))
}

/// Whether `file` holds only zero bytes in `[from, to)`.
fn only_zeros_from(file: &File, from: u64, to: u64) -> Result<bool, StoreError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)
            .map_err(StoreError::Io)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn sync_file(file: &File) -> Result<(), StoreError> {
    file.sync_data().map_err(StoreError::Io)
}

/// fsyncs a directory, so that a file created, renamed or removed in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Io)
}

fn corrupt(what: String) -> StoreError {
    StoreError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> (u64, LogId<NodeId>, Vec<u8>) {
        let log_id = LogId::new(CommittedLeaderId::new(term, 1), index);
        let e = Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Blank,
        };
        (index, log_id, encode(&e).unwrap())
    }

    /// (index, term) of every readable entry.
    fn contents(wal: &Wal) -> Vec<(u64, u64)> {
        let mut out = BTreeMap::new();
        wal.index
            .read()
            .unwrap()
            .read_into(0, u64::MAX, &mut out)
            .unwrap();
        out.values()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect()
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        names.sort();
        names
    }

    /// Tiny segments, so a handful of entries spans several files.
    fn open_small(dir: &Path) -> Wal {
        Wal::open_with(dir, 64).unwrap()
    }

    /// Entries 1..=10 of term 1, durable, across several tiny segments.
    fn ten_entries_in_small_segments(dir: &Path) -> Wal {
        let mut wal = open_small(dir);
        for i in 1..=10 {
            wal.append(&[entry(1, i)]).unwrap();
        }
        wal.sync().unwrap();
        wal
    }

    #[test]
    fn entries_vote_and_segments_survive_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let mut wal = ten_entries_in_small_segments(dir.path());
            wal.save_vote(Vote::new_committed(3, 2)).unwrap();
        }
        assert!(
            segment_files(dir.path()).len() > 2,
            "small segments roll over"
        );
        let wal = open_small(dir.path());
        let expected: Vec<(u64, u64)> = (1..=10).map(|i| (i, 1)).collect();
        assert_eq!(contents(&wal), expected);
        let index = wal.index.read().unwrap();
        assert_eq!(index.last_log_id().map(|l| l.index), Some(10));
        assert_eq!(index.vote(), Some(Vote::new_committed(3, 2)));
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_goes_on_after_it() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let mut wal = Wal::open(dir.path()).unwrap();
            wal.append(&[entry(1, 1), entry(1, 2), entry(1, 3)])
                .unwrap();
            wal.sync().unwrap();
        }
        let seg = dir.path().join(segment_name(1));
        let whole: u64 = (1..=3).map(|i| (HEADER + entry(1, i).2.len()) as u64).sum();
        // A crash in the middle of the next record: its header and half its payload, written
        // where it goes, over the zeros that run ahead of the records.
        let mut torn = Vec::new();
        frame(&entry(1, 4).2, &mut torn);
        torn.truncate(torn.len() / 2);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&torn, whole).unwrap();
        drop(f);
        {
            let mut wal = Wal::open(dir.path()).unwrap();
            assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1)]);
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole);
            wal.append(&[entry(2, 4)]).unwrap();
            wal.sync().unwrap();
        }
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
    }

    #[test]
    fn zeros_run_ahead_of_the_last_segment_and_survive_a_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let seg = dir.path().join(segment_name(1));
        let records: u64 = (1..=3).map(|i| (HEADER + entry(1, i).2.len()) as u64).sum();
        {
            let mut wal = Wal::open(dir.path()).unwrap();
            wal.append(&[entry(1, 1), entry(1, 2), entry(1, 3)])
                .unwrap();
            wal.sync().unwrap();
        }
        let len = std::fs::metadata(&seg).unwrap().len();
        assert_eq!(len, records + PREALLOC_BYTES);
        {
            let mut wal = Wal::open(dir.path()).unwrap();
            assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1)]);
            // Kept as it was: the next appends overwrite blocks the file already has.
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
            wal.append(&[entry(2, 4)]).unwrap();
            wal.sync().unwrap();
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        }
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
    }

    #[test]
    fn only_the_last_segment_ends_in_zeros() {
        let dir = tempfile::TempDir::new().unwrap();
        drop(ten_entries_in_small_segments(dir.path()));
        let names = segment_files(dir.path());
        assert!(names.len() > 2, "small segments roll over");
        for name in &names[..names.len() - 1] {
            let bytes = std::fs::read(dir.path().join(name)).unwrap();
            let mut at = 0;
            while at < bytes.len() {
                let payload = whole_record(&bytes[at..]).expect("only whole records");
                at += HEADER + payload.len();
            }
        }
        let last = std::fs::read(dir.path().join(names.last().unwrap())).unwrap();
        assert!(last.ends_with(&[0u8; 64]), "the last one runs ahead");
    }

    #[test]
    fn a_truncated_suffix_never_comes_back_after_same_sized_appends() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            // One segment; every record has the same size, so the new records end exactly
            // where old ones began. The removed entries are of a later term than the ones
            // that replace them (an uncommitted leader's), so only the cut keeps them out.
            let mut wal = Wal::open(dir.path()).unwrap();
            let all: Vec<_> = (1..=10)
                .map(|i| entry(if i < 4 { 1 } else { 3 }, i))
                .collect();
            wal.append(&all).unwrap();
            wal.sync().unwrap();
            wal.truncate(4).unwrap();
            wal.append(&[entry(2, 4), entry(2, 5)]).unwrap();
            wal.sync().unwrap();
        }
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]);
    }

    #[test]
    fn a_flipped_byte_before_the_last_segment_refuses_to_open() {
        let dir = tempfile::TempDir::new().unwrap();
        drop(ten_entries_in_small_segments(dir.path()));
        let first = dir.path().join(&segment_files(dir.path())[0]);
        let mut bytes = std::fs::read(&first).unwrap();
        let at = bytes.len() - 1;
        bytes[at] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let err = Wal::open_with(dir.path(), 64)
            .err()
            .expect("corruption is refused");
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn truncate_is_durable_and_later_appends_replace_the_suffix() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let mut wal = ten_entries_in_small_segments(dir.path());
            wal.truncate(4).unwrap();
            assert_eq!(
                wal.index.read().unwrap().last_log_id().map(|l| l.index),
                Some(3)
            );
        }
        {
            let mut wal = open_small(dir.path());
            assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1)]);
            wal.append(&[entry(2, 4), entry(2, 5)]).unwrap();
            wal.sync().unwrap();
        }
        let wal = open_small(dir.path());
        assert_eq!(contents(&wal), vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]);
    }

    #[test]
    fn purge_hides_entries_deletes_whole_segments_and_allows_a_gap_after_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let purged = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
        {
            let mut wal = ten_entries_in_small_segments(dir.path());
            let before = segment_files(dir.path()).len();
            wal.purge(purged(1, 6)).unwrap();
            assert!(segment_files(dir.path()).len() < before);
            assert_eq!(contents(&wal), vec![(7, 1), (8, 1), (9, 1), (10, 1)]);
        }
        {
            // A snapshot install purges past the last entry; the log resumes after it.
            let mut wal = open_small(dir.path());
            assert_eq!(contents(&wal), vec![(7, 1), (8, 1), (9, 1), (10, 1)]);
            wal.purge(purged(2, 20)).unwrap();
            assert_eq!(contents(&wal), vec![]);
            assert_eq!(wal.index.read().unwrap().last_log_id(), None);
            wal.append(&[entry(2, 21)]).unwrap();
            wal.sync().unwrap();
        }
        let wal = open_small(dir.path());
        assert_eq!(contents(&wal), vec![(21, 2)]);
        assert_eq!(wal.index.read().unwrap().last_purged(), Some(purged(2, 20)));
    }

    #[test]
    fn appends_that_overlap_or_leave_a_gap_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.append(&[entry(1, 1), entry(1, 2)]).unwrap();
        assert!(wal.append(&[entry(2, 2)]).is_err());
        assert!(wal.append(&[entry(2, 4)]).is_err());
        assert_eq!(contents(&wal), vec![(1, 1), (2, 1)]);
    }
}
