//! The key-value state machine: revisions and compare-and-set, independent of storage.
//!
//! Revisions work as in etcd: the store has one revision counter that grows by one for every
//! command that changes something. Each key remembers the revision that created it, the
//! revision that last modified it, and how many times it was written since creation.
//! A compare-and-set that does not match changes nothing and does not advance the counter.

use serde::{Deserialize, Serialize};

use crate::{Command, Response};

/// One stored key's value and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub value: Vec<u8>,
    /// Store revision at which this key was (last) created.
    pub create_revision: u64,
    /// Store revision of the last write to this key.
    pub mod_revision: u64,
    /// Writes since creation; 1 after the first put.
    pub version: u64,
}

/// The storage a [`apply`] call reads and writes. Implemented by the durable store on the
/// storage engine, and by `BTreeMap` for tests.
pub trait KvTable {
    type Error;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, Self::Error>;
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), Self::Error>;
    fn remove(&mut self, key: &str) -> Result<(), Self::Error>;
}

impl KvTable for std::collections::BTreeMap<String, KvEntry> {
    type Error = std::convert::Infallible;
    fn get(&mut self, key: &str) -> Result<Option<KvEntry>, Self::Error> {
        Ok(std::collections::BTreeMap::get(self, key).cloned())
    }
    fn put(&mut self, key: &str, entry: &KvEntry) -> Result<(), Self::Error> {
        self.insert(key.to_owned(), entry.clone());
        Ok(())
    }
    fn remove(&mut self, key: &str) -> Result<(), Self::Error> {
        std::collections::BTreeMap::remove(self, key);
        Ok(())
    }
}

/// Applies one command to `table`, advancing `revision` when the command changes state.
///
/// Deterministic: the result depends only on the command, the table and the revision.
pub fn apply<T: KvTable>(
    table: &mut T,
    revision: &mut u64,
    command: &Command,
) -> Result<Response, T::Error> {
    match command {
        Command::Put {
            key,
            value,
            if_revision,
        } => {
            let current = table.get(key)?;
            let current_rev = current.as_ref().map_or(0, |e| e.mod_revision);
            if let Some(expected) = if_revision {
                if *expected != current_rev {
                    return Ok(Response::RevisionMismatch {
                        current: current_rev,
                    });
                }
            }
            let next = *revision + 1;
            let entry = match current {
                Some(prev) => KvEntry {
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: next,
                    version: prev.version + 1,
                },
                None => KvEntry {
                    value: value.clone(),
                    create_revision: next,
                    mod_revision: next,
                    version: 1,
                },
            };
            table.put(key, &entry)?;
            *revision = next;
            Ok(Response::Put { revision: next })
        }
        Command::Delete { key, if_revision } => {
            let current = table.get(key)?;
            let current_rev = current.as_ref().map_or(0, |e| e.mod_revision);
            if let Some(expected) = if_revision {
                if *expected != current_rev {
                    return Ok(Response::RevisionMismatch {
                        current: current_rev,
                    });
                }
            }
            if current.is_none() {
                return Ok(Response::Delete {
                    revision: *revision,
                    deleted: false,
                });
            }
            table.remove(key)?;
            *revision += 1;
            Ok(Response::Delete {
                revision: *revision,
                deleted: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn put(key: &str, value: &str, if_revision: Option<u64>) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            if_revision,
        }
    }

    #[test]
    fn revisions_advance_only_on_change() {
        let mut t = BTreeMap::new();
        let mut rev = 0;
        assert_eq!(
            apply(&mut t, &mut rev, &put("a", "1", None)),
            Ok(Response::Put { revision: 1 })
        );
        assert_eq!(
            apply(&mut t, &mut rev, &put("a", "2", None)),
            Ok(Response::Put { revision: 2 })
        );
        let a = t.get("a").expect("a was written");
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
        let del_missing = Command::Delete {
            key: "zzz".into(),
            if_revision: None,
        };
        assert_eq!(
            apply(&mut t, &mut rev, &del_missing),
            Ok(Response::Delete {
                revision: 2,
                deleted: false
            })
        );
        assert_eq!(rev, 2);
    }

    #[test]
    fn compare_and_set_refuses_stale_revision_and_changes_nothing() {
        let mut t = BTreeMap::new();
        let mut rev = 0;
        apply(&mut t, &mut rev, &put("k", "v1", Some(0))).unwrap();
        assert_eq!(
            apply(&mut t, &mut rev, &put("k", "v2", Some(0))),
            Ok(Response::RevisionMismatch { current: 1 })
        );
        assert_eq!(t["k"].value, b"v1");
        assert_eq!(rev, 1);
        assert_eq!(
            apply(&mut t, &mut rev, &put("k", "v2", Some(1))),
            Ok(Response::Put { revision: 2 })
        );
        let stale_delete = Command::Delete {
            key: "k".into(),
            if_revision: Some(1),
        };
        assert_eq!(
            apply(&mut t, &mut rev, &stale_delete),
            Ok(Response::RevisionMismatch { current: 2 })
        );
        assert!(t.contains_key("k"));
    }

    #[test]
    fn delete_then_recreate_resets_version() {
        let mut t = BTreeMap::new();
        let mut rev = 0;
        apply(&mut t, &mut rev, &put("k", "a", None)).unwrap();
        let del = Command::Delete {
            key: "k".into(),
            if_revision: None,
        };
        assert_eq!(
            apply(&mut t, &mut rev, &del),
            Ok(Response::Delete {
                revision: 2,
                deleted: true
            })
        );
        apply(&mut t, &mut rev, &put("k", "b", None)).unwrap();
        assert_eq!(t["k"].create_revision, 3);
        assert_eq!(t["k"].version, 1);
    }

    #[test]
    fn commands_round_trip_through_postcard() {
        let cmd = put("key", "value", Some(7));
        let bytes = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), cmd);
    }
}
