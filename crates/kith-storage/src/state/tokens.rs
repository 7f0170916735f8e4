//! The tokens domain on redb: [`RedbTokens`], which backs `kith_core`'s [`TokenTable`]
//! inside an apply's write transaction, and the token queries of [`StateReader`].
//!
//! Written only inside the state machine's apply transaction and when a snapshot is
//! installed (a snapshot carries every record, revoked ones included, so an id is never
//! reused on any replica).

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};

use crate::codec::{decode, encode};
use crate::state::reader::StateReader;
use crate::state::tables::TOKENS;
use crate::StoreError;
use kith_core::auth::{TokenRecord, TokenTable};

/// Backs [`TokenTable`] with the open `tokens` table inside one write transaction.
pub(crate) struct RedbTokens<'t> {
    pub table: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> RedbTokens<'t> {
    pub fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(RedbTokens {
            table: txn.open_table(TOKENS)?,
        })
    }
}

impl TokenTable for RedbTokens<'_> {
    type Error = StoreError;

    fn get(&mut self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.table.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, record: &TokenRecord) -> Result<(), StoreError> {
        self.table
            .insert(record.id.as_str(), encode(record)?.as_slice())?;
        Ok(())
    }

    fn count(&mut self) -> Result<u64, StoreError> {
        Ok(self.table.len()?)
    }
}

impl StateReader {
    /// The token record `id`, revoked or not.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        let found = match table.get(id)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` token records, by id.
    pub fn token_list(&self, limit: usize) -> Result<Vec<TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(TOKENS)?.iter()? {
            if out.len() == limit {
                break;
            }
            out.push(decode(item?.1.value())?);
        }
        Ok(out)
    }
}
