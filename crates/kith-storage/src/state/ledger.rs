//! The ledger on redb: the hash chain over applied entries (`kith_core::ledger::chain`), its
//! newest link in `meta.ledger_head`, the recent hashes in the `ledger` table, and the ledger
//! queries of [`StateReader`].
//!
//! Invariant: each applied entry's hash is computed from the hash of the entry applied
//! before it (or the snapshot's head), in the same transaction. History is bounded: at most
//! `ledger_kept` + 255 hashes are kept, trimmed at cutoffs that depend only on the newest
//! index (`history`).

use openraft::LogId;
use redb::{ReadableDatabase, ReadableTable, Table};
use serde::{Deserialize, Serialize};

use crate::state::history::history_cutoff;
use crate::state::reader::StateReader;
use crate::state::tables::{meta_get, KEY_LEDGER_HEAD, LEDGER, META};
use crate::StoreError;
use kith_core::ledger::{self, Hash};
use kith_core::NodeId;

/// The newest link of the ledger: the hash after applying the entry at `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerHead {
    pub index: u64,
    pub hash: Hash,
}

impl LedgerHead {
    /// The link after the entry `log_id`, whose encoded bytes are `entry_bytes`.
    pub(crate) fn next(&self, log_id: LogId<NodeId>, entry_bytes: &[u8]) -> LedgerHead {
        LedgerHead {
            index: log_id.index,
            hash: ledger::chain(&self.hash, log_id.index, log_id.leader_id.term, entry_bytes),
        }
    }
}

/// Drops the oldest hashes, a chunk at a time, once the newest is `newest` and `kept` are
/// kept.
pub(crate) fn trim(
    ledger: &mut Table<'_, u64, &'static [u8]>,
    newest: u64,
    kept: u64,
) -> Result<(), StoreError> {
    let cutoff = history_cutoff(newest, kept);
    let oldest = ledger.first()?.map(|(k, _)| k.value());
    if oldest.is_some_and(|oldest| oldest <= cutoff) {
        ledger.retain_in(..=cutoff, |_, _| false)?;
    }
    Ok(())
}

impl StateReader {
    /// The ledger's newest link.
    pub fn ledger_head(&self) -> Result<LedgerHead, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta_get(&meta, KEY_LEDGER_HEAD)?.unwrap_or_default())
    }

    /// The ledger hash at `index`, while it is retained; also the oldest retained index.
    pub fn ledger_at(&self, index: u64) -> Result<(Option<Hash>, Option<u64>), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEDGER)?;
        let hash = match table.get(index)? {
            Some(v) => Some(v.value().try_into().map_err(|_| {
                StoreError::Io(std::io::Error::other("ledger hash is not 32 bytes"))
            })?),
            None => None,
        };
        let oldest = table.first()?.map(|(k, _)| k.value());
        Ok((hash, oldest))
    }
}
