//! The chat-room domain on redb: [`RedbRooms`], which backs `kith_core`'s [`RoomTable`]
//! inside an apply's write transaction, and the room queries of [`StateReader`].

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use crate::codec::{decode, encode};
use crate::state::reader::StateReader;
use crate::state::tables::{MESSAGES, MESSAGE_IDS, ROOMS};
use crate::StoreError;
use kith_core::rooms::{Message, RoomMeta, RoomTable};

/// Backs [`RoomTable`] with open redb tables inside one write transaction.
pub(crate) struct RedbRooms<'t> {
    rooms: Table<'t, &'static str, &'static [u8]>,
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    ids: Table<'t, (&'static str, &'static str), u64>,
}

impl<'t> RedbRooms<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(RedbRooms {
            rooms: txn.open_table(ROOMS)?,
            messages: txn.open_table(MESSAGES)?,
            ids: txn.open_table(MESSAGE_IDS)?,
        })
    }
}

impl RoomTable for RedbRooms<'_> {
    type Error = StoreError;
    fn room(&mut self, name: &str) -> Result<Option<RoomMeta>, StoreError> {
        match self.rooms.get(name)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put_room(&mut self, name: &str, meta: &RoomMeta) -> Result<(), StoreError> {
        self.rooms.insert(name, encode(meta)?.as_slice())?;
        Ok(())
    }
    fn room_count(&mut self) -> Result<u64, StoreError> {
        Ok(self.rooms.len()?)
    }
    fn put_message(&mut self, room: &str, message: &Message) -> Result<(), StoreError> {
        self.messages
            .insert((room, message.seq), encode(message)?.as_slice())?;
        Ok(())
    }
    fn take_message(&mut self, room: &str, seq: u64) -> Result<Option<Message>, StoreError> {
        let taken = match self.messages.remove((room, seq))? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(taken)
    }
    fn id_seq(&mut self, room: &str, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.ids.get((room, id))?.map(|v| v.value()))
    }
    fn put_id(&mut self, room: &str, id: &str, seq: u64) -> Result<(), StoreError> {
        self.ids.insert((room, id), seq)?;
        Ok(())
    }
    fn remove_id(&mut self, room: &str, id: &str) -> Result<(), StoreError> {
        self.ids.remove((room, id))?;
        Ok(())
    }
    fn remove_room(&mut self, name: &str) -> Result<(), StoreError> {
        self.rooms.remove(name)?;
        Ok(())
    }
}

impl StateReader {
    /// Up to `limit` rooms in name order, starting after `after` (for paging).
    pub fn rooms(&self, after: &str, limit: usize) -> Result<Vec<(String, RoomMeta)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROOMS)?;
        let mut out = Vec::new();
        for item in table.range::<&str>(after..)? {
            let (k, v) = item?;
            if k.value() == after {
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    /// One room's bookkeeping, if it exists.
    pub fn room(&self, name: &str) -> Result<Option<RoomMeta>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ROOMS)?;
        let found = match table.get(name)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Up to `limit` kept messages of `room` with seq greater than `after`, in seq order.
    pub fn messages(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        let start = after.saturating_add(1);
        for item in table.range((room, start)..=(room, u64::MAX))?.take(limit) {
            let (_, v) = item?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }
}
