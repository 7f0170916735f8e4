//! Leases, as etcd's v3 API means them: an object with a TTL that keys attach to; when it
//! runs out on the leader's clock, or is revoked, every key attached to it is deleted, all
//! at one revision. A keep-alive starts its TTL again.
//!
//! Owns what grant, revoke, keep-alive and expiry do to the key-value store. The lease's
//! timer is kept in the key expiry index under [`timer_key`], a name no key can have (it
//! holds control characters, which [`crate::limits::validate_key`] refuses), so one index
//! and one "next timer" drive both a key's TTL and a lease's.
//!
//! Refuses: choosing ids (the caller picks one, as etcd's leader does, so the apply stays
//! deterministic).

use serde::{Deserialize, Serialize};

use crate::kv::{EventKind, KvEvent, KvMeta, KvTable};
use crate::limits::{InvalidInput, TTL_S_MAX};

/// A lease: its id, the TTL it was granted, and when it runs out on the store's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: i64,
    pub ttl_s: i64,
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseCommand {
    Grant { id: i64, ttl_s: i64 },
    Revoke { id: i64 },
    KeepAlive { id: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOutcome {
    Granted {
        id: i64,
        ttl_s: i64,
    },
    Revoked {
        keys_deleted: u64,
    },
    KeptAlive {
        ttl_s: i64,
    },
    /// No lease has this id (never granted, revoked, or run out).
    NotFound,
    /// A grant named an id in use.
    Exists,
}

/// Leases the store holds at most: each is a timer and a row, and a client that grants
/// without revoking must not grow the state without a bound.
pub const LEASES_MAX: usize = 100_000;

/// The name of lease `id`'s timer in the key expiry index.
pub fn timer_key(id: i64) -> String {
    format!("\u{1}lease\u{1}{id}")
}

/// The lease whose timer `key` is, if it is one.
pub fn lease_of_timer(key: &str) -> Option<i64> {
    key.strip_prefix("\u{1}lease\u{1}")?.parse().ok()
}

impl LeaseCommand {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let refused = |message: String| InvalidInput::Refused {
            message,
            too_large: false,
        };
        let id = match self {
            LeaseCommand::Grant { id, ttl_s } => {
                if !(1..=TTL_S_MAX as i64).contains(ttl_s) {
                    return Err(refused(format!(
                        "a lease's TTL is 1 to {TTL_S_MAX} seconds"
                    )));
                }
                id
            }
            LeaseCommand::Revoke { id } | LeaseCommand::KeepAlive { id } => id,
        };
        if *id <= 0 {
            return Err(refused("a lease id is a positive integer".into()));
        }
        Ok(())
    }
}

/// Applies `command` at the store's clock `meta.now_ms`.
pub(crate) fn apply<T: KvTable>(
    table: &mut T,
    meta: &mut KvMeta,
    command: &LeaseCommand,
) -> Result<LeaseOutcome, T::Error> {
    match *command {
        LeaseCommand::Grant { id, ttl_s } => {
            if table.lease(id)?.is_some() {
                return Ok(LeaseOutcome::Exists);
            }
            if table.lease_count()? >= LEASES_MAX {
                // Refused like a duplicate: nothing changes; the API says why.
                return Ok(LeaseOutcome::Exists);
            }
            let lease = Lease {
                id,
                ttl_s,
                expires_at_ms: meta.now_ms.saturating_add(ttl_s as u64 * 1000),
            };
            table.lease_set(&lease)?;
            table.expiry_add(lease.expires_at_ms, &timer_key(id))?;
            Ok(LeaseOutcome::Granted { id, ttl_s })
        }
        LeaseCommand::Revoke { id } => match table.lease(id)? {
            None => Ok(LeaseOutcome::NotFound),
            Some(lease) => {
                let keys_deleted = revoke(table, meta, &lease, EventKind::Delete)?;
                Ok(LeaseOutcome::Revoked { keys_deleted })
            }
        },
        LeaseCommand::KeepAlive { id } => match table.lease(id)? {
            None => Ok(LeaseOutcome::NotFound),
            Some(mut lease) => {
                let timer = timer_key(id);
                table.expiry_remove(lease.expires_at_ms, &timer)?;
                lease.expires_at_ms = meta.now_ms.saturating_add(lease.ttl_s as u64 * 1000);
                table.lease_set(&lease)?;
                table.expiry_add(lease.expires_at_ms, &timer)?;
                Ok(LeaseOutcome::KeptAlive { ttl_s: lease.ttl_s })
            }
        },
    }
}

/// Ends `lease`: deletes every key attached to it at one new revision (recorded as `kind`),
/// removes its timer and itself; returns how many keys went.
pub(crate) fn revoke<T: KvTable>(
    table: &mut T,
    meta: &mut KvMeta,
    lease: &Lease,
    kind: EventKind,
) -> Result<u64, T::Error> {
    table.expiry_remove(lease.expires_at_ms, &timer_key(lease.id))?;
    let keys = table.lease_keys(lease.id)?;
    let revision = meta.revision.saturating_add(1);
    let mut deleted = 0;
    for key in &keys {
        table.key_lease_set(key, 0)?;
        let Some(entry) = table.get(key)? else {
            continue;
        };
        if let Some(at) = entry.expires_at_ms {
            table.expiry_remove(at, key)?;
        }
        table.remove(key)?;
        table.record(&KvEvent {
            revision,
            key: key.clone(),
            kind: kind.clone(),
        })?;
        deleted += 1;
    }
    if deleted > 0 {
        meta.revision = revision;
    }
    table.lease_remove(lease.id)?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemTable;
    use crate::txn::{self, Txn, TxnOp};

    fn put(key: &str, lease: i64) -> Txn {
        Txn::single(TxnOp::Put {
            key: key.into(),
            value: b"v".to_vec(),
            prev_kv: false,
            ignore_value: false,
            lease,
            ignore_lease: false,
        })
    }

    #[test]
    fn a_revoked_or_expired_lease_takes_its_keys_at_one_revision() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        let grant = LeaseCommand::Grant { id: 7, ttl_s: 10 };
        assert_eq!(
            apply(&mut t, &mut m, &grant).unwrap(),
            LeaseOutcome::Granted { id: 7, ttl_s: 10 }
        );
        assert_eq!(apply(&mut t, &mut m, &grant).unwrap(), LeaseOutcome::Exists);
        for key in ["a", "b"] {
            txn::apply(&mut t, &mut m, &put(key, 7)).unwrap().unwrap();
        }
        txn::apply(&mut t, &mut m, &put("c", 0)).unwrap().unwrap();
        assert_eq!(m.revision, 3);
        // A put without the lease takes the key off it.
        txn::apply(&mut t, &mut m, &put("b", 0)).unwrap().unwrap();
        let revoke = LeaseCommand::Revoke { id: 7 };
        assert_eq!(
            apply(&mut t, &mut m, &revoke).unwrap(),
            LeaseOutcome::Revoked { keys_deleted: 1 }
        );
        assert_eq!(m.revision, 5);
        assert!(t.keys.contains_key("b") && t.keys.contains_key("c"));
        assert!(!t.keys.contains_key("a"));
        assert_eq!(
            apply(&mut t, &mut m, &revoke).unwrap(),
            LeaseOutcome::NotFound
        );

        // Expiry by the clock: a keep-alive moves the deadline.
        let grant = LeaseCommand::Grant { id: 8, ttl_s: 2 };
        apply(&mut t, &mut m, &grant).unwrap();
        txn::apply(&mut t, &mut m, &put("x", 8)).unwrap().unwrap();
        txn::apply(&mut t, &mut m, &put("y", 8)).unwrap().unwrap();
        m.now_ms = 1_500;
        apply(&mut t, &mut m, &LeaseCommand::KeepAlive { id: 8 }).unwrap();
        let proposal = |now_ms| crate::Proposal {
            now_ms,
            command: crate::Command::Expire,
        };
        crate::kv::apply(&mut t, &mut m, &proposal(3_000)).unwrap();
        assert!(
            t.keys.contains_key("x"),
            "kept alive at 1.5 s, due at 3.5 s"
        );
        let before = m.revision;
        crate::kv::apply(&mut t, &mut m, &proposal(3_500)).unwrap();
        assert!(!t.keys.contains_key("x") && !t.keys.contains_key("y"));
        assert_eq!(m.revision, before + 1, "both keys went at one revision");
        assert!(t.leases.is_empty());
    }

    #[test]
    fn a_put_on_a_lease_that_does_not_exist_changes_nothing() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        let refused = txn::apply(&mut t, &mut m, &put("a", 99)).unwrap();
        assert!(refused.unwrap_err().contains("lease not found"));
        assert!(t.keys.is_empty());
        assert_eq!(m.revision, 0);
    }
}
