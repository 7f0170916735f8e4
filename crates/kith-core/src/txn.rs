//! Transactions on the key-value store, with the meaning etcd's v3 API gives them: compares
//! on keys decide which of two lists of operations runs (puts, deletes of a key range, range
//! reads, nested transactions), and every change the transaction makes shares one revision.
//! A lone etcd put or delete-range is a transaction with no compares.
//!
//! Owns what a transaction means and its bounds ([`TXN_OPS_MAX`], [`TXN_DEPTH_MAX`],
//! [`RANGE_KEYS_MAX`]), checked by [`Txn::validate`] before proposing and again when
//! applied, and what leases mean to a put (`lease`). Refuses the wire format (`kith-etcd`
//! maps etcd's messages onto these types).

use serde::{Deserialize, Serialize};

use crate::kv::{EventKind, KvEntry, KvEvent, KvMeta, KvTable};
use crate::limits::{self, InvalidInput};

/// Operations one transaction may hold, over all its branches and nested transactions
/// (etcd's default `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;
/// Compares one transaction may hold, nested ones included.
pub const TXN_COMPARES_MAX: usize = 128;
/// How deep transactions may nest.
pub const TXN_DEPTH_MAX: usize = 4;
/// Keys one range may delete, or one compare may check, in a transaction: a bigger change
/// would be one huge log entry and one huge group of watch events. The request is refused
/// whole, before anything changes.
pub const RANGE_KEYS_MAX: u64 = 10_000;
/// Bytes of keys and values a range read inside a transaction returns; past it the read
/// stops and says `more` (it travels in the entry's response, which is held in memory).
pub const TXN_RANGE_BYTES_MAX: usize = 16 << 20;

/// Where a key range ends, as etcd's `range_end` says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeEnd {
    /// Just the key (an empty `range_end`).
    One,
    /// Every key at or after the key (`range_end` = `\0`).
    Unbounded,
    /// Keys from the key up to, not including, these bytes (compared byte by byte).
    Before(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A key, or a range of keys from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub key: String,
    pub end: RangeEnd,
}

impl KeyRange {
    pub fn one(key: impl Into<String>) -> Self {
        KeyRange {
            key: key.into(),
            end: RangeEnd::One,
        }
    }

    /// Whether `k` falls in the range.
    pub fn contains(&self, k: &str) -> bool {
        match &self.end {
            RangeEnd::One => k == self.key,
            RangeEnd::Unbounded => k >= self.key.as_str(),
            RangeEnd::Before(end) => k >= self.key.as_str() && k.as_bytes() < end.as_slice(),
        }
    }

    /// Whether a key at or after `k` can still fall in the range (a scan in key order stops
    /// when it cannot).
    pub fn continues_at(&self, k: &str) -> bool {
        match &self.end {
            RangeEnd::One => k <= self.key.as_str(),
            RangeEnd::Unbounded => true,
            RangeEnd::Before(end) => k.as_bytes() < end.as_slice(),
        }
    }

    /// Whether the range can hold no key at all (an end at or before its start).
    pub fn is_empty(&self) -> bool {
        matches!(&self.end, RangeEnd::Before(end) if end.as_slice() <= self.key.as_bytes())
    }

    fn validate(&self) -> Result<(), InvalidInput> {
        // The empty key starts a range over every key (etcd's `--from-key ""`), and is
        // never a key itself.
        if !(self.key.is_empty() && self.end != RangeEnd::One) {
            limits::validate_key(&self.key)?;
        }
        if let RangeEnd::Before(end) = &self.end {
            if end.len() > limits::KEY_BYTES_MAX + 1 {
                return Err(refused("a range end is longer than a key may be"));
            }
        }
        Ok(())
    }
}

/// What a compare looks at, and the value it compares with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The key's lease (0: none).
    Lease(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// Holds when every key in `range` satisfies it; a missing key counts as version, revisions
/// and lease 0, and fails every compare on its value (etcd's rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Sets the key, attached to `lease` (0: none). `ignore_value` keeps its current value,
    /// `ignore_lease` its current lease.
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        prev_kv: bool,
        ignore_value: bool,
        lease: i64,
        ignore_lease: bool,
    },
    /// Deletes every key in the range.
    Delete {
        range: KeyRange,
        prev_kv: bool,
    },
    /// Reads the range as the transaction has left it so far; `limit` 0 is no limit.
    Range {
        range: KeyRange,
        limit: u64,
        keys_only: bool,
        count_only: bool,
    },
    Txn(Txn),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// A key with its entry, as a result carries it.
pub type KeyEntry = (String, KvEntry);

/// What one operation produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put {
        prev: Option<KeyEntry>,
    },
    Delete {
        deleted: u64,
        prev: Vec<KeyEntry>,
    },
    Range {
        kvs: Vec<KeyEntry>,
        count: u64,
        more: bool,
    },
    Txn(TxnOutcome),
}

/// What a transaction did: which branch ran and each of its operations' results. The
/// store's revision after it is in [`crate::Response::Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub results: Vec<OpResult>,
}

fn refused(message: impl Into<String>) -> InvalidInput {
    InvalidInput::Refused {
        message: message.into(),
        too_large: false,
    }
}

impl Txn {
    /// A transaction of one operation and no compares.
    pub fn single(op: TxnOp) -> Self {
        Txn {
            compares: Vec::new(),
            success: vec![op],
            failure: Vec::new(),
        }
    }

    /// Checks every key, value and bound, and that no branch writes one key twice (etcd
    /// refuses that as "duplicate key given in txn request").
    pub fn validate(&self, value_bytes_max: usize) -> Result<(), InvalidInput> {
        let (mut ops, mut compares) = (0, 0);
        self.validate_at(1, value_bytes_max, &mut ops, &mut compares)
    }

    fn validate_at(
        &self,
        depth: usize,
        value_bytes_max: usize,
        ops: &mut usize,
        compares: &mut usize,
    ) -> Result<(), InvalidInput> {
        if depth > TXN_DEPTH_MAX {
            return Err(refused(format!(
                "transactions nest at most {TXN_DEPTH_MAX} deep"
            )));
        }
        *compares += self.compares.len();
        if *compares > TXN_COMPARES_MAX {
            return Err(refused(format!(
                "a transaction holds at most {TXN_COMPARES_MAX} compares"
            )));
        }
        for c in &self.compares {
            c.range.validate()?;
        }
        for branch in [&self.success, &self.failure] {
            *ops += branch.len();
            if *ops > TXN_OPS_MAX {
                return Err(refused(format!(
                    "a transaction holds at most {TXN_OPS_MAX} operations"
                )));
            }
            let mut written: Vec<&KeyRange> = Vec::new();
            let mut put_keys: Vec<KeyRange> = Vec::new();
            for op in branch {
                match op {
                    TxnOp::Put {
                        key, value, lease, ..
                    } => {
                        limits::validate_key(key)?;
                        limits::validate_value(value, value_bytes_max)?;
                        if *lease < 0 {
                            return Err(refused("a lease id is a positive integer"));
                        }
                        put_keys.push(KeyRange::one(key.clone()));
                    }
                    TxnOp::Delete { range, .. } => {
                        range.validate()?;
                        written.push(range);
                    }
                    TxnOp::Range { range, .. } => range.validate()?,
                    TxnOp::Txn(inner) => {
                        inner.validate_at(depth + 1, value_bytes_max, ops, compares)?
                    }
                }
            }
            for (i, put) in put_keys.iter().enumerate() {
                let twice = put_keys[..i].iter().any(|p| p.key == put.key)
                    || written.iter().any(|d| d.contains(&put.key));
                if twice {
                    return Err(refused(format!(
                        "duplicate key given in txn request: {}",
                        put.key
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The kv store's side of a transaction: how an apply reads, writes and records.
struct Apply<'a, T: KvTable> {
    table: &'a mut T,
    meta: &'a mut KvMeta,
    /// The revision every change of this transaction gets.
    revision: u64,
    changed: bool,
}

/// Applies `txn` to `table`: compares, then one branch, every change at revision
/// `meta.revision + 1` (the revision moves only if something changed). A transaction
/// whose deletes would remove more than [`RANGE_KEYS_MAX`] keys, or whose compares look at
/// more, is refused before anything changes.
pub(crate) fn apply<T: KvTable>(
    table: &mut T,
    meta: &mut KvMeta,
    txn: &Txn,
) -> Result<Result<TxnOutcome, String>, T::Error> {
    let Some(revision) = meta.revision.checked_add(1) else {
        return Ok(Err("the store has no revisions left".into()));
    };
    if let Some(refusal) = too_wide(table, txn)? {
        return Ok(Err(refusal));
    }
    if let Some(missing) = missing_lease(table, txn)? {
        return Ok(Err(format!("requested lease not found: {missing}")));
    }
    let mut apply = Apply {
        table,
        meta,
        revision,
        changed: false,
    };
    let outcome = apply.txn(txn)?;
    if apply.changed {
        apply.meta.revision = revision;
    }
    Ok(Ok(outcome))
}

/// Why `txn` is refused for its width, before it changes anything: a compare or a delete
/// over more than [`RANGE_KEYS_MAX`] keys (counting every branch, whichever runs).
fn too_wide<T: KvTable>(table: &mut T, txn: &Txn) -> Result<Option<String>, T::Error> {
    let mut delete_keys = 0u64;
    let mut ranges: Vec<(&KeyRange, bool)> = Vec::new();
    collect_ranges(txn, &mut ranges);
    for (range, is_delete) in ranges {
        let (_, count) = table.range(range, 0, RANGE_KEYS_MAX + 1)?;
        if count > RANGE_KEYS_MAX {
            let what = if is_delete { "delete" } else { "compare on" };
            return Ok(Some(format!(
                "a transaction may {what} at most {RANGE_KEYS_MAX} keys per range; {} starts \
                 one over more",
                range.key
            )));
        }
        if is_delete {
            delete_keys += count;
        }
    }
    if delete_keys > RANGE_KEYS_MAX {
        return Ok(Some(format!(
            "a transaction may delete at most {RANGE_KEYS_MAX} keys"
        )));
    }
    Ok(None)
}

/// A lease some put of `txn` (in either branch) names and the store does not hold.
fn missing_lease<T: KvTable>(table: &mut T, txn: &Txn) -> Result<Option<i64>, T::Error> {
    for op in txn.success.iter().chain(&txn.failure) {
        let missing = match op {
            TxnOp::Put {
                lease,
                ignore_lease: false,
                ..
            } if *lease != 0 => table.lease(*lease)?.is_none().then_some(*lease),
            TxnOp::Txn(inner) => missing_lease(table, inner)?,
            _ => None,
        };
        if missing.is_some() {
            return Ok(missing);
        }
    }
    Ok(None)
}

fn collect_ranges<'t>(txn: &'t Txn, out: &mut Vec<(&'t KeyRange, bool)>) {
    out.extend(
        txn.compares
            .iter()
            .filter(|c| c.range.end != RangeEnd::One)
            .map(|c| (&c.range, false)),
    );
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Delete { range, .. } if range.end != RangeEnd::One => out.push((range, true)),
            TxnOp::Txn(inner) => collect_ranges(inner, out),
            _ => {}
        }
    }
}

impl<T: KvTable> Apply<'_, T> {
    fn txn(&mut self, txn: &Txn) -> Result<TxnOutcome, T::Error> {
        let mut succeeded = true;
        for c in &txn.compares {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            results.push(self.op(op)?);
        }
        Ok(TxnOutcome { succeeded, results })
    }

    fn compare(&mut self, c: &Compare) -> Result<bool, T::Error> {
        let (kvs, _) = self
            .table
            .range(&c.range, RANGE_KEYS_MAX as usize, u64::MAX)?;
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_entry(c, None, 0));
        }
        for (k, e) in &kvs {
            let lease = self.table.key_lease(k)?;
            if !compare_entry(c, Some(e), lease) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn op(&mut self, op: &TxnOp) -> Result<OpResult, T::Error> {
        match op {
            TxnOp::Put {
                key,
                value,
                prev_kv,
                ignore_value,
                lease,
                ignore_lease,
            } => {
                let lease = (!ignore_lease).then_some(*lease);
                self.put(key, value, *prev_kv, *ignore_value, lease)
            }
            TxnOp::Delete { range, prev_kv } => self.delete(range, *prev_kv),
            TxnOp::Range {
                range,
                limit,
                keys_only,
                count_only,
            } => {
                let limit = if *limit == 0 {
                    usize::MAX
                } else {
                    *limit as usize
                };
                let (mut kvs, count) = self.table.range(range, limit, u64::MAX)?;
                let mut bytes = 0usize;
                let mut more = (kvs.len() as u64) < count;
                if let Some(cut) = kvs.iter().position(|(k, e)| {
                    bytes += k.len() + e.value.len();
                    bytes > TXN_RANGE_BYTES_MAX
                }) {
                    kvs.truncate(cut);
                    more = true;
                }
                if *count_only {
                    kvs.clear();
                } else if *keys_only {
                    for (_, e) in &mut kvs {
                        e.value.clear();
                    }
                }
                Ok(OpResult::Range { kvs, count, more })
            }
            TxnOp::Txn(inner) => self.txn(inner).map(OpResult::Txn),
        }
    }

    fn put(
        &mut self,
        key: &str,
        value: &[u8],
        prev_kv: bool,
        ignore_value: bool,
        lease: Option<i64>,
    ) -> Result<OpResult, T::Error> {
        let current = self.table.get(key)?;
        // `None`: the key keeps the lease it has.
        if let Some(lease) = lease {
            if self.table.key_lease(key)? != lease {
                self.table.key_lease_set(key, lease)?;
            }
        }
        let value = match (&current, ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            // etcd: "ignore_value" on a key that does not exist is an error; as a
            // deterministic apply, kith puts the empty value the request carried.
            _ => value.to_vec(),
        };
        if let Some(at) = current.as_ref().and_then(|e| e.expires_at_ms) {
            self.table.expiry_remove(at, key)?;
        }
        let (create_revision, version) = match &current {
            Some(prev) => (prev.create_revision, prev.version.saturating_add(1)),
            None => (self.revision, 1),
        };
        let entry = KvEntry {
            value: value.clone(),
            create_revision,
            mod_revision: self.revision,
            version,
            expires_at_ms: None,
        };
        self.table.put(key, &entry)?;
        self.table.record(&KvEvent {
            revision: self.revision,
            key: key.to_owned(),
            kind: EventKind::Put {
                value,
                create_revision,
                version,
            },
        })?;
        self.changed = true;
        let prev = if prev_kv {
            current.map(|e| (key.to_owned(), e))
        } else {
            None
        };
        Ok(OpResult::Put { prev })
    }

    fn delete(&mut self, range: &KeyRange, prev_kv: bool) -> Result<OpResult, T::Error> {
        // `too_wide` bounded the range before the transaction began (its puts add at most
        // `TXN_OPS_MAX` keys more).
        let (found, _) = self.table.range(range, usize::MAX, u64::MAX)?;
        let deleted = found.len() as u64;
        for (key, entry) in &found {
            if let Some(at) = entry.expires_at_ms {
                self.table.expiry_remove(at, key)?;
            }
            self.table.remove(key)?;
            crate::kv::detach(self.table, key)?;
            self.table.record(&KvEvent {
                revision: self.revision,
                key: key.clone(),
                kind: EventKind::Delete,
            })?;
            self.changed = true;
        }
        let prev = if prev_kv { found } else { Vec::new() };
        Ok(OpResult::Delete { deleted, prev })
    }
}

fn compare_entry(c: &Compare, entry: Option<&KvEntry>, lease: i64) -> bool {
    use std::cmp::Ordering;
    let ordering = match (&c.target, entry) {
        (CompareTarget::Version(v), e) => e.map_or(0, |e| e.version).cmp(v),
        (CompareTarget::CreateRevision(v), e) => e.map_or(0, |e| e.create_revision).cmp(v),
        (CompareTarget::ModRevision(v), e) => e.map_or(0, |e| e.mod_revision).cmp(v),
        (CompareTarget::Lease(v), _) => lease.cmp(v),
        (CompareTarget::Value(v), Some(e)) => e.value.as_slice().cmp(v.as_slice()),
        (CompareTarget::Value(_), None) => return false,
    };
    match c.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::NotEqual => ordering != Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemTable;

    fn put(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            ignore_value: false,
            lease: 0,
            ignore_lease: false,
        }
    }

    fn run(t: &mut MemTable, m: &mut KvMeta, txn: Txn) -> TxnOutcome {
        txn.validate(1 << 20).expect("valid");
        apply(t, m, &txn).unwrap().expect("applied")
    }

    fn prefix(p: &str) -> KeyRange {
        let mut end = p.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        KeyRange {
            key: p.into(),
            end: RangeEnd::Before(end),
        }
    }

    #[test]
    fn every_change_of_a_transaction_shares_one_revision() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        run(
            &mut t,
            &mut m,
            Txn {
                compares: vec![],
                success: vec![put("a/1", "x"), put("a/2", "y"), put("b", "z")],
                failure: vec![],
            },
        );
        assert_eq!(m.revision, 1);
        assert!(t.keys.values().all(|e| e.mod_revision == 1));
        assert_eq!(t.events.len(), 3);
        assert!(t.events.iter().all(|e| e.revision == 1));

        let out = run(
            &mut t,
            &mut m,
            Txn::single(TxnOp::Delete {
                range: prefix("a/"),
                prev_kv: true,
            }),
        );
        assert_eq!(m.revision, 2);
        let OpResult::Delete { deleted, prev } = &out.results[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*deleted, 2);
        assert_eq!(prev.len(), 2);
        assert_eq!(t.keys.len(), 1);

        // A delete that finds nothing changes no revision.
        run(
            &mut t,
            &mut m,
            Txn::single(TxnOp::Delete {
                range: prefix("a/"),
                prev_kv: false,
            }),
        );
        assert_eq!(m.revision, 2);
    }

    #[test]
    fn compares_choose_the_branch_with_etcds_rules_for_missing_keys() {
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        run(&mut t, &mut m, Txn::single(put("k", "v1")));
        let cas = |target, op| Txn {
            compares: vec![Compare {
                range: KeyRange::one("k"),
                op,
                target,
            }],
            success: vec![put("k", "won")],
            failure: vec![TxnOp::Range {
                range: KeyRange::one("k"),
                limit: 0,
                keys_only: false,
                count_only: false,
            }],
        };
        let lost = run(
            &mut t,
            &mut m,
            cas(CompareTarget::ModRevision(7), CompareOp::Equal),
        );
        assert!(!lost.succeeded);
        let OpResult::Range { kvs, count, .. } = &lost.results[0] else {
            panic!()
        };
        assert_eq!((kvs[0].1.value.as_slice(), *count), (&b"v1"[..], 1));
        let won = run(
            &mut t,
            &mut m,
            cas(CompareTarget::ModRevision(1), CompareOp::Equal),
        );
        assert!(won.succeeded);
        assert_eq!(t.keys["k"].value, b"won");
        assert_eq!(t.keys["k"].version, 2);
        // A missing key: version 0 compares, a value compare fails.
        let missing = |target| Txn {
            compares: vec![Compare {
                range: KeyRange::one("nope"),
                op: CompareOp::Equal,
                target,
            }],
            success: vec![],
            failure: vec![],
        };
        assert!(run(&mut t, &mut m, missing(CompareTarget::Version(0))).succeeded);
        assert!(!run(&mut t, &mut m, missing(CompareTarget::Value(vec![]))).succeeded);
    }

    #[test]
    fn bad_transactions_are_refused_before_anything_changes() {
        let dup = Txn {
            compares: vec![],
            success: vec![put("k", "1"), put("k", "2")],
            failure: vec![],
        };
        assert!(dup.validate(1 << 20).is_err());
        let overlap = Txn {
            compares: vec![],
            success: vec![
                TxnOp::Delete {
                    range: prefix("a/"),
                    prev_kv: false,
                },
                put("a/x", "1"),
            ],
            failure: vec![],
        };
        assert!(overlap.validate(1 << 20).is_err());
        let many = Txn {
            compares: vec![],
            success: (0..=TXN_OPS_MAX)
                .map(|i| put(&format!("k{i}"), "v"))
                .collect(),
            failure: vec![],
        };
        assert!(many.validate(1 << 20).is_err());
        let mut deep = Txn::single(put("k", "v"));
        for _ in 0..TXN_DEPTH_MAX {
            deep = Txn::single(TxnOp::Txn(deep));
        }
        assert!(deep.validate(1 << 20).is_err());

        // Too wide a delete: refused at apply, nothing changed.
        let (mut t, mut m) = (MemTable::default(), KvMeta::default());
        for i in 0..=RANGE_KEYS_MAX {
            t.keys.insert(
                format!("w/{i:06}"),
                KvEntry {
                    value: vec![],
                    create_revision: 1,
                    mod_revision: 1,
                    version: 1,
                    expires_at_ms: None,
                },
            );
        }
        let wide = Txn::single(TxnOp::Delete {
            range: prefix("w/"),
            prev_kv: false,
        });
        assert!(apply(&mut t, &mut m, &wide).unwrap().is_err());
        assert_eq!(t.keys.len() as u64, RANGE_KEYS_MAX + 1);
        assert_eq!(m.revision, 0);
    }
}
