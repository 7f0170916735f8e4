//! Reading the key-value store as it was at an earlier revision, from the kept change
//! events: etcd's `Range` with a `revision`.
//!
//! A key's state at revision R is its current entry if that was last changed at or before
//! R; otherwise the last event at or before R decides it (a put gives the entry, a delete or
//! expiry says it was gone), and with no such event kept, a key whose first later change
//! created it was absent at R. Anything else was decided in history that is no longer kept,
//! and the read answers etcd's "required revision has been compacted".
//!
//! Owns nothing but the reconstruction; refuses revisions past the current one (etcd's
//! "future revision") and at or below the kept history's start.

use std::collections::{BTreeMap, BTreeSet};

use tonic::Status;

use kith_core::txn::KeyRange;
use kith_core::{EventKind, KvEntry, KvEvent};
use kith_storage::StateReader;

/// Events read per page while scanning history.
const SCAN_PAGE: usize = 4096;

pub fn compacted() -> Status {
    Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
}

pub fn future() -> Status {
    Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
}

fn storage(e: kith_storage::StoreError) -> Status {
    Status::internal(format!("etcdserver: {e}"))
}

/// Every key of `range` with its entry as of revision `at`, in key order; `bytes_max`
/// bounds the keys and values held.
pub fn range_at(
    state: &StateReader,
    range: &KeyRange,
    at: u64,
    current: u64,
    bytes_max: usize,
) -> Result<Vec<(String, KvEntry)>, Status> {
    if at > current {
        return Err(future());
    }
    let kept_from = state.events_compacted().map_err(storage)?;
    if at < kept_from {
        return Err(compacted());
    }
    let (now, _, _) = state.range(range, usize::MAX, u64::MAX).map_err(storage)?;
    let mut result: BTreeMap<String, KvEntry> = BTreeMap::new();
    let mut changed_later: BTreeSet<String> = BTreeSet::new();
    let mut bytes = 0usize;
    for (key, entry) in now {
        if entry.mod_revision <= at {
            bytes += key.len() + entry.value.len();
            if bytes > bytes_max {
                return Err(too_large(bytes_max));
            }
            result.insert(key, entry);
        } else {
            changed_later.insert(key);
        }
    }
    // The first change after `at` of every key in the range (deleted keys are only here).
    let mut first_after: BTreeMap<String, KvEvent> = BTreeMap::new();
    scan(state, at + 1, current, range, |e| {
        first_after.entry(e.key.clone()).or_insert(e);
    })?;
    // The last change at or before `at` of each of those keys.
    let mut last_before: BTreeMap<String, KvEvent> = BTreeMap::new();
    if !first_after.is_empty() {
        scan(state, kept_from + 1, at, range, |e| {
            if first_after.contains_key(&e.key) {
                last_before.insert(e.key.clone(), e);
            }
        })?;
    }
    for (key, later) in first_after {
        changed_later.remove(&key);
        let entry = match last_before.remove(&key) {
            Some(event) => entry_of(&event),
            None => match &later.kind {
                EventKind::Put {
                    create_revision, ..
                } if *create_revision > at => None,
                _ => return Err(compacted()),
            },
        };
        if let Some(entry) = entry {
            bytes += key.len() + entry.value.len();
            if bytes > bytes_max {
                return Err(too_large(bytes_max));
            }
            result.insert(key, entry);
        }
    }
    // A key changed after `at` but with no event kept after it: its history is gone.
    if !changed_later.is_empty() {
        return Err(compacted());
    }
    Ok(result.into_iter().collect())
}

fn entry_of(event: &KvEvent) -> Option<KvEntry> {
    match &event.kind {
        EventKind::Put {
            value,
            create_revision,
            version,
        } => Some(KvEntry {
            value: value.clone(),
            create_revision: *create_revision,
            mod_revision: event.revision,
            version: *version,
            expires_at_ms: None,
        }),
        EventKind::Delete | EventKind::Expire => None,
    }
}

/// Hands every kept event in `from..=to` whose key is in `range` to `each`, in order.
fn scan(
    state: &StateReader,
    from: u64,
    to: u64,
    range: &KeyRange,
    mut each: impl FnMut(KvEvent),
) -> Result<(), Status> {
    let mut next = from;
    while next <= to {
        let page = state.events(next, "", SCAN_PAGE).map_err(storage)?;
        for event in page.events {
            if event.revision > to {
                return Ok(());
            }
            if range.contains(&event.key) {
                each(event);
            }
        }
        if page.next_revision <= next {
            break;
        }
        next = page.next_revision;
    }
    Ok(())
}

pub fn too_large(bytes_max: usize) -> Status {
    Status::resource_exhausted(format!(
        "etcdserver: the range holds more than {bytes_max} bytes; read it in pieces with a limit"
    ))
}
