//! The key-value state machine: revisions, compare-and-set, TTL expiry and the change
//! events that watches stream — independent of storage.
//!
//! Revisions work as in etcd: the store has one revision counter that grows by one for every
//! change. Each key remembers the revision that created it, the revision that last modified
//! it, and how many times it was written since creation. A compare-and-set that does not
//! match changes nothing and does not advance the counter.
//!
//! Time: the store's clock (`KvMeta::now_ms`) is the largest `now_ms` any applied proposal
//! carried, so it never goes backwards, even when a new leader's clock is behind the old
//! one's. Before a proposal's command is applied, every key whose expiry is at or before
//! that clock is deleted, oldest expiry first, each at a revision of its own.

use serde::{Deserialize, Serialize};

use crate::lease::{self, Lease};
use crate::limits::Limits;
use crate::txn::{KeyEntry, KeyRange};
use crate::{Command, Proposal, Response};

/// Most keys one applied proposal expires; the rest expire with the next one. Bounds the
/// work (and the transaction size) of a single apply.
pub const EXPIRE_PER_APPLY_MAX: usize = 1000;

/// One stored key's value and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Store revision at which this key was (last) created.
    pub create_revision: u64,
    /// Store revision of the last write to this key.
    pub mod_revision: u64,
    /// Writes since creation; 1 after the first put.
    pub version: u64,
    /// When the key expires, on the store's clock (ms since the Unix epoch).
    pub expires_at_ms: Option<u64>,
}

/// What happened to a key at one revision — the unit a watch delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    pub revision: u64,
    pub key: String,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key now holds `value`.
    Put {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        create_revision: u64,
        version: u64,
    },
    /// The key was deleted by a client.
    Delete,
    /// The key's TTL ran out.
    Expire,
}

/// The state machine's counters, persisted with the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMeta {
    /// The store revision: the number of changes so far.
    pub revision: u64,
    /// The store's clock: the largest `now_ms` applied so far.
    pub now_ms: u64,
}

/// The storage [`apply`] reads and writes: the keys, an index of expiry times, and the
/// event history. Implemented by the durable store, and by [`MemTable`] for tests.
pub trait KvTable {
    type Error;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, Self::Error>;
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), Self::Error>;
    fn remove(&mut self, key: &str) -> Result<(), Self::Error>;
    fn expiry_add(&mut self, at_ms: u64, key: &str) -> Result<(), Self::Error>;
    fn expiry_remove(&mut self, at_ms: u64, key: &str) -> Result<(), Self::Error>;
    /// Up to `limit` (expiry, key) pairs with expiry ≤ `now_ms`, earliest first, ties by key.
    fn expiry_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, String)>, Self::Error>;
    /// Records `event`; several events may share a revision (one transaction's changes).
    fn record(&mut self, event: &KvEvent) -> Result<(), Self::Error>;
    /// Up to `limit` keys of `range` with their entries, in key order, and how many keys the
    /// range holds, counted up to `count_max`.
    fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
        count_max: u64,
    ) -> Result<(Vec<KeyEntry>, u64), Self::Error>;
    /// Lease `id`, if granted and not yet ended.
    fn lease(&mut self, id: i64) -> Result<Option<Lease>, Self::Error>;
    /// Stores `lease` (its timer is the caller's).
    fn lease_set(&mut self, lease: &Lease) -> Result<(), Self::Error>;
    /// Forgets lease `id` (its keys were detached first).
    fn lease_remove(&mut self, id: i64) -> Result<(), Self::Error>;
    fn lease_count(&mut self) -> Result<usize, Self::Error>;
    /// The keys attached to lease `id`.
    fn lease_keys(&mut self, id: i64) -> Result<Vec<String>, Self::Error>;
    /// The lease `key` is attached to (0: none).
    fn key_lease(&mut self, key: &str) -> Result<i64, Self::Error>;
    /// Attaches `key` to lease `lease` (0: to none), detaching it from any other.
    fn key_lease_set(&mut self, key: &str, lease: i64) -> Result<(), Self::Error>;
}

/// Takes `key` off any lease, as any change but a put on a lease does.
pub(crate) fn detach<T: KvTable>(table: &mut T, key: &str) -> Result<(), T::Error> {
    if table.key_lease(key)? != 0 {
        table.key_lease_set(key, 0)?;
    }
    Ok(())
}

/// Applies one proposal to `table`: first the expiries its clock makes due, then its command.
///
/// Deterministic: the result depends only on the proposal, the table and `meta`. A put or
/// delete that breaks an input rule (checked against [`Limits::CEILING`]) is answered
/// [`Response::Rejected`] and changes nothing; the proposal's clock still applies.
pub fn apply<T: KvTable>(
    table: &mut T,
    meta: &mut KvMeta,
    proposal: &Proposal,
) -> Result<Response, T::Error> {
    meta.now_ms = meta.now_ms.max(proposal.now_ms);
    expire_due(table, meta)?;
    if matches!(
        proposal.command,
        Command::Put { .. } | Command::Delete { .. } | Command::Txn(_) | Command::Lease(_)
    ) {
        if let Err(e) = proposal.command.validate(&Limits::CEILING) {
            return Ok(Response::Rejected {
                reason: e.to_string(),
            });
        }
    }
    match &proposal.command {
        Command::Put {
            key,
            value,
            if_revision,
            ttl_ms,
        } => {
            let current = table.get(key)?;
            let current_rev = current.as_ref().map_or(0, |e| e.mod_revision);
            if if_revision.is_some_and(|expected| expected != current_rev) {
                return Ok(Response::RevisionMismatch {
                    current: current_rev,
                });
            }
            if let Some(at) = current.as_ref().and_then(|e| e.expires_at_ms) {
                table.expiry_remove(at, key)?;
            }
            let Some(revision) = meta.revision.checked_add(1) else {
                return Ok(Response::Rejected {
                    reason: "the store has no revisions left".into(),
                });
            };
            let expires_at_ms = ttl_ms.map(|ttl| meta.now_ms.saturating_add(ttl));
            let (create_revision, version) = match &current {
                Some(prev) => (prev.create_revision, prev.version.saturating_add(1)),
                None => (revision, 1),
            };
            let entry = KvEntry {
                value: value.clone(),
                create_revision,
                mod_revision: revision,
                version,
                expires_at_ms,
            };
            table.put(key, &entry)?;
            detach(table, key)?;
            if let Some(at) = expires_at_ms {
                table.expiry_add(at, key)?;
            }
            table.record(&KvEvent {
                revision,
                key: key.clone(),
                kind: EventKind::Put {
                    value: value.clone(),
                    create_revision,
                    version,
                },
            })?;
            meta.revision = revision;
            Ok(Response::Put { revision })
        }
        Command::Delete { key, if_revision } => {
            let current = table.get(key)?;
            let current_rev = current.as_ref().map_or(0, |e| e.mod_revision);
            if if_revision.is_some_and(|expected| expected != current_rev) {
                return Ok(Response::RevisionMismatch {
                    current: current_rev,
                });
            }
            let Some(current) = current else {
                return Ok(Response::Delete {
                    revision: meta.revision,
                    deleted: false,
                });
            };
            delete(table, meta, key, current.expires_at_ms, EventKind::Delete)?;
            Ok(Response::Delete {
                revision: meta.revision,
                deleted: true,
            })
        }
        Command::Lease(command) => {
            let outcome = lease::apply(table, meta, command)?;
            Ok(Response::Lease {
                revision: meta.revision,
                outcome,
            })
        }
        Command::Txn(txn) => Ok(match crate::txn::apply(table, meta, txn)? {
            Ok(outcome) => Response::Txn {
                revision: meta.revision,
                outcome,
            },
            Err(reason) => Response::Rejected { reason },
        }),
        // Not a key-value command: only the clock (and so expiry) applied here.
        Command::Expire
        | Command::Post(_)
        | Command::Job(_)
        | Command::File(_)
        | Command::DeleteRoom { .. }
        | Command::Token(_) => Ok(Response::None),
    }
}

fn expire_due<T: KvTable>(table: &mut T, meta: &mut KvMeta) -> Result<(), T::Error> {
    for (at, key) in table.expiry_due(meta.now_ms, EXPIRE_PER_APPLY_MAX)? {
        match lease::lease_of_timer(&key) {
            // A lease ran out: its keys go, at one revision.
            Some(id) => match table.lease(id)? {
                Some(lease) => {
                    lease::revoke(table, meta, &lease, EventKind::Expire)?;
                }
                None => table.expiry_remove(at, &key)?,
            },
            None => delete(table, meta, &key, Some(at), EventKind::Expire)?,
        }
    }
    Ok(())
}

fn delete<T: KvTable>(
    table: &mut T,
    meta: &mut KvMeta,
    key: &str,
    expires_at_ms: Option<u64>,
    kind: EventKind,
) -> Result<(), T::Error> {
    if let Some(at) = expires_at_ms {
        table.expiry_remove(at, key)?;
    }
    table.remove(key)?;
    detach(table, key)?;
    // Cannot saturate in practice (2^64 changes); saturating keeps apply panic-free.
    meta.revision = meta.revision.saturating_add(1);
    table.record(&KvEvent {
        revision: meta.revision,
        key: key.to_owned(),
        kind,
    })
}

/// An in-memory [`KvTable`], for tests and for checking storage implementations against.
#[derive(Debug, Default)]
pub struct MemTable {
    pub keys: std::collections::BTreeMap<String, KvEntry>,
    pub expiry: std::collections::BTreeSet<(u64, String)>,
    pub events: Vec<KvEvent>,
    pub leases: std::collections::BTreeMap<i64, Lease>,
    pub key_leases: std::collections::BTreeMap<String, i64>,
}

impl KvTable for MemTable {
    type Error = std::convert::Infallible;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, Self::Error> {
        Ok(self.keys.get(key).cloned())
    }
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), Self::Error> {
        self.keys.insert(key.to_owned(), entry.clone());
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), Self::Error> {
        self.keys.remove(key);
        Ok(())
    }
    fn expiry_add(&mut self, at_ms: u64, key: &str) -> Result<(), Self::Error> {
        self.expiry.insert((at_ms, key.to_owned()));
        Ok(())
    }
    fn expiry_remove(&mut self, at_ms: u64, key: &str) -> Result<(), Self::Error> {
        self.expiry.remove(&(at_ms, key.to_owned()));
        Ok(())
    }
    fn expiry_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, String)>, Self::Error> {
        Ok(self
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .cloned()
            .collect())
    }
    fn record(&mut self, event: &KvEvent) -> Result<(), Self::Error> {
        self.events.push(event.clone());
        Ok(())
    }
    fn range(
        &mut self,
        range: &KeyRange,
        limit: usize,
        count_max: u64,
    ) -> Result<(Vec<KeyEntry>, u64), Self::Error> {
        let mut out = Vec::new();
        let mut count = 0;
        for (k, e) in self.keys.range::<str, _>((
            std::ops::Bound::Included(range.key.as_str()),
            std::ops::Bound::Unbounded,
        )) {
            if !range.continues_at(k) || count >= count_max {
                break;
            }
            if range.contains(k) {
                count += 1;
                if out.len() < limit {
                    out.push((k.clone(), e.clone()));
                }
            }
        }
        Ok((out, count))
    }
    fn lease(&mut self, id: i64) -> Result<Option<Lease>, Self::Error> {
        Ok(self.leases.get(&id).copied())
    }
    fn lease_set(&mut self, lease: &Lease) -> Result<(), Self::Error> {
        self.leases.insert(lease.id, *lease);
        Ok(())
    }
    fn lease_remove(&mut self, id: i64) -> Result<(), Self::Error> {
        self.leases.remove(&id);
        Ok(())
    }
    fn lease_count(&mut self) -> Result<usize, Self::Error> {
        Ok(self.leases.len())
    }
    fn lease_keys(&mut self, id: i64) -> Result<Vec<String>, Self::Error> {
        Ok(self
            .key_leases
            .iter()
            .filter(|(_, l)| **l == id)
            .map(|(k, _)| k.clone())
            .collect())
    }
    fn key_lease(&mut self, key: &str) -> Result<i64, Self::Error> {
        Ok(self.key_leases.get(key).copied().unwrap_or(0))
    }
    fn key_lease_set(&mut self, key: &str, lease: i64) -> Result<(), Self::Error> {
        if lease == 0 {
            self.key_leases.remove(key);
        } else {
            self.key_leases.insert(key.to_owned(), lease);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now_ms: u64, command: Command) -> Proposal {
        Proposal { now_ms, command }
    }

    fn put(key: &str, value: &str, if_revision: Option<u64>) -> Proposal {
        put_ttl(0, key, value, if_revision, None)
    }

    fn put_ttl(
        now: u64,
        key: &str,
        value: &str,
        if_rev: Option<u64>,
        ttl: Option<u64>,
    ) -> Proposal {
        at(
            now,
            Command::Put {
                key: key.into(),
                value: value.into(),
                if_revision: if_rev,
                ttl_ms: ttl,
            },
        )
    }

    fn del(key: &str, if_revision: Option<u64>) -> Proposal {
        at(
            0,
            Command::Delete {
                key: key.into(),
                if_revision,
            },
        )
    }

    #[test]
    fn revisions_advance_only_on_change() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        assert_eq!(
            apply(&mut t, &mut m, &put("a", "1", None)),
            Ok(Response::Put { revision: 1 })
        );
        assert_eq!(
            apply(&mut t, &mut m, &put("a", "2", None)),
            Ok(Response::Put { revision: 2 })
        );
        let a = &t.keys["a"];
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
        assert_eq!(
            apply(&mut t, &mut m, &del("zzz", None)),
            Ok(Response::Delete {
                revision: 2,
                deleted: false
            })
        );
        assert_eq!(m.revision, 2);
        assert_eq!(t.events.len(), 2, "one event per change, none for a no-op");
    }

    #[test]
    fn compare_and_set_refuses_stale_revision_and_changes_nothing() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        apply(&mut t, &mut m, &put("k", "v1", Some(0))).unwrap();
        assert_eq!(
            apply(&mut t, &mut m, &put("k", "v2", Some(0))),
            Ok(Response::RevisionMismatch { current: 1 })
        );
        assert_eq!(t.keys["k"].value, b"v1");
        assert_eq!(m.revision, 1);
        assert_eq!(
            apply(&mut t, &mut m, &put("k", "v2", Some(1))),
            Ok(Response::Put { revision: 2 })
        );
        assert_eq!(
            apply(&mut t, &mut m, &del("k", Some(1))),
            Ok(Response::RevisionMismatch { current: 2 })
        );
        assert!(t.keys.contains_key("k"));
        assert_eq!(t.events.len(), 2);
    }

    #[test]
    fn delete_then_recreate_resets_version() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        apply(&mut t, &mut m, &put("k", "a", None)).unwrap();
        assert_eq!(
            apply(&mut t, &mut m, &del("k", None)),
            Ok(Response::Delete {
                revision: 2,
                deleted: true
            })
        );
        apply(&mut t, &mut m, &put("k", "b", None)).unwrap();
        assert_eq!(t.keys["k"].create_revision, 3);
        assert_eq!(t.keys["k"].version, 1);
        assert_eq!(t.events[1].kind, EventKind::Delete);
    }

    #[test]
    fn keys_expire_by_the_proposals_clock_each_at_its_own_revision() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        apply(&mut t, &mut m, &put_ttl(1_000, "b", "1", None, Some(500))).unwrap();
        apply(&mut t, &mut m, &put_ttl(1_000, "a", "1", None, Some(500))).unwrap();
        apply(&mut t, &mut m, &put_ttl(1_000, "forever", "1", None, None)).unwrap();
        // Not yet due.
        apply(&mut t, &mut m, &at(1_499, Command::Expire)).unwrap();
        assert_eq!(t.keys.len(), 3);
        // Due: both expire, ties broken by key, before the proposal's own command.
        let r = apply(&mut t, &mut m, &put_ttl(1_500, "c", "1", None, None)).unwrap();
        assert_eq!(r, Response::Put { revision: 6 });
        assert_eq!(t.keys.keys().collect::<Vec<_>>(), vec!["c", "forever"]);
        let expired: Vec<(u64, &str)> = t
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Expire)
            .map(|e| (e.revision, e.key.as_str()))
            .collect();
        assert_eq!(expired, vec![(4, "a"), (5, "b")]);
        assert!(t.expiry.is_empty());
    }

    #[test]
    fn the_store_clock_never_goes_backwards() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        apply(&mut t, &mut m, &at(5_000, Command::Expire)).unwrap();
        // A new leader whose clock is behind: the key's TTL counts from the store's clock.
        apply(&mut t, &mut m, &put_ttl(4_000, "k", "v", None, Some(100))).unwrap();
        assert_eq!(m.now_ms, 5_000);
        assert_eq!(t.keys["k"].expires_at_ms, Some(5_100));
    }

    #[test]
    fn overwriting_a_key_replaces_its_expiry() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        apply(&mut t, &mut m, &put_ttl(0, "k", "v", None, Some(100))).unwrap();
        apply(&mut t, &mut m, &put_ttl(50, "k", "v2", None, None)).unwrap();
        apply(&mut t, &mut m, &at(1_000, Command::Expire)).unwrap();
        assert_eq!(
            t.keys["k"].value, b"v2",
            "a put without ttl makes the key permanent"
        );
        assert!(t.expiry.is_empty());
    }

    #[test]
    fn proposals_round_trip_through_postcard() {
        let p = put_ttl(7, "key", "value", Some(7), Some(9));
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<Proposal>(&bytes).unwrap(), p);
    }
}
