//! The chat-room state machine: totally ordered messages per room, dense sequence numbers,
//! idempotent sends, bounded retention.
//!
//! A room exists from its first message. Each room numbers its messages 1, 2, 3, … in log
//! order, so every replica gives a message the same `seq`, and a reader that resumes on
//! another node after `seq` N sees N + 1 next. A send carries an id; a second send with the
//! same id in the same room (a client retrying after a lost answer) returns the first one's
//! `seq` and stores nothing. A room keeps its newest `keep` messages; older ones are
//! dropped, oldest first, and `first_seq` says where the kept history begins.
//!
//! A room can be deleted ([`delete`]): its kept messages and their ids go with it and it no
//! longer counts under `rooms_max`. A later message under the same name starts a new room
//! whose numbering begins at 1 again.

use serde::{Deserialize, Serialize};

use crate::limits::{validate_message, validate_message_id, validate_room, InvalidInput};
use crate::Response;

/// Most messages dropped by retention in one apply (bounds the work when `keep` shrinks).
pub const RETENTION_DROPS_PER_APPLY_MAX: u64 = 1000;

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub id: String,
    pub author: String,
    pub text: String,
    /// When the leader accepted it (the proposal's clock, ms since the Unix epoch).
    pub at_ms: u64,
}

/// A room's bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMeta {
    /// Seq of the newest message (0 before any).
    pub last_seq: u64,
    /// Seq of the oldest message still kept.
    pub first_seq: u64,
    pub last_activity_ms: u64,
}

impl RoomMeta {
    /// Messages currently kept.
    pub fn kept(&self) -> u64 {
        self.last_seq
            .saturating_add(1)
            .saturating_sub(self.first_seq)
    }
}

/// A message to post, as it travels in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub room: String,
    pub author: String,
    pub text: String,
    /// Idempotency key: the client's, or one the receiving node generated.
    pub id: String,
    /// Messages the room keeps (the leader's configured retention).
    pub keep: u64,
    /// Rooms the cluster may hold (the leader's configured bound).
    pub rooms_max: u64,
}

impl Post {
    /// Checks what a client supplied: the room name, author, text and id. `keep` and
    /// `rooms_max` are the leader's to set.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        validate_room(&self.room)?;
        validate_message(&self.author, &self.text)?;
        validate_message_id(&self.id)
    }
}

/// The storage [`apply`] reads and writes. Implemented by the durable store, and by
/// [`MemRooms`] for tests.
pub trait RoomTable {
    type Error;
    fn room(&mut self, name: &str) -> Result<Option<RoomMeta>, Self::Error>;
    fn put_room(&mut self, name: &str, meta: &RoomMeta) -> Result<(), Self::Error>;
    fn room_count(&mut self) -> Result<u64, Self::Error>;
    fn put_message(&mut self, room: &str, message: &Message) -> Result<(), Self::Error>;
    /// Removes and returns the message, if kept.
    fn take_message(&mut self, room: &str, seq: u64) -> Result<Option<Message>, Self::Error>;
    fn id_seq(&mut self, room: &str, id: &str) -> Result<Option<u64>, Self::Error>;
    fn put_id(&mut self, room: &str, id: &str, seq: u64) -> Result<(), Self::Error>;
    fn remove_id(&mut self, room: &str, id: &str) -> Result<(), Self::Error>;
    fn remove_room(&mut self, name: &str) -> Result<(), Self::Error>;
}

/// Applies one post at the store's clock `now_ms`. Deterministic. A post that breaks an
/// input rule is answered [`Response::Rejected`] and stores nothing.
pub fn apply<T: RoomTable>(table: &mut T, now_ms: u64, post: &Post) -> Result<Response, T::Error> {
    if let Err(e) = post.validate() {
        return Ok(Response::Rejected {
            reason: e.to_string(),
        });
    }
    if let Some(seq) = table.id_seq(&post.room, &post.id)? {
        return Ok(Response::Posted {
            seq,
            id: post.id.clone(),
            duplicate: true,
        });
    }
    let mut meta = match table.room(&post.room)? {
        Some(meta) => meta,
        None => {
            if table.room_count()? >= post.rooms_max {
                return Ok(Response::RoomsFull {
                    max: post.rooms_max,
                });
            }
            RoomMeta {
                last_seq: 0,
                first_seq: 1,
                last_activity_ms: 0,
            }
        }
    };
    let Some(seq) = meta.last_seq.checked_add(1) else {
        return Ok(Response::Rejected {
            reason: format!("room {} has no sequence numbers left", post.room),
        });
    };
    meta.last_seq = seq;
    meta.last_activity_ms = now_ms;
    let message = Message {
        seq: meta.last_seq,
        id: post.id.clone(),
        author: post.author.clone(),
        text: post.text.clone(),
        at_ms: now_ms,
    };
    table.put_message(&post.room, &message)?;
    table.put_id(&post.room, &post.id, message.seq)?;
    let keep = post.keep.max(1);
    let mut dropped = 0;
    while meta.kept() > keep && dropped < RETENTION_DROPS_PER_APPLY_MAX {
        if let Some(old) = table.take_message(&post.room, meta.first_seq)? {
            table.remove_id(&post.room, &old.id)?;
        }
        meta.first_seq = meta.first_seq.saturating_add(1);
        dropped += 1;
    }
    table.put_room(&post.room, &meta)?;
    Ok(Response::Posted {
        seq: message.seq,
        id: message.id,
        duplicate: false,
    })
}

/// Deletes `room` with every message it keeps and their ids. Deterministic; the work is
/// bounded by what the room keeps (its retention, `keep` messages).
pub fn delete<T: RoomTable>(table: &mut T, room: &str) -> Result<Response, T::Error> {
    let Some(meta) = table.room(room)? else {
        return Ok(Response::RoomDeleted {
            deleted: false,
            messages: 0,
        });
    };
    let mut messages = 0;
    for seq in meta.first_seq..=meta.last_seq {
        if let Some(message) = table.take_message(room, seq)? {
            table.remove_id(room, &message.id)?;
            messages += 1;
        }
    }
    table.remove_room(room)?;
    Ok(Response::RoomDeleted {
        deleted: true,
        messages,
    })
}

/// An in-memory [`RoomTable`] for tests.
#[derive(Debug, Default)]
pub struct MemRooms {
    pub rooms: std::collections::BTreeMap<String, RoomMeta>,
    pub messages: std::collections::BTreeMap<(String, u64), Message>,
    pub ids: std::collections::BTreeMap<(String, String), u64>,
}

impl RoomTable for MemRooms {
    type Error = std::convert::Infallible;
    fn room(&mut self, name: &str) -> Result<Option<RoomMeta>, Self::Error> {
        Ok(self.rooms.get(name).copied())
    }
    fn put_room(&mut self, name: &str, meta: &RoomMeta) -> Result<(), Self::Error> {
        self.rooms.insert(name.to_owned(), *meta);
        Ok(())
    }
    fn room_count(&mut self) -> Result<u64, Self::Error> {
        Ok(self.rooms.len() as u64)
    }
    fn put_message(&mut self, room: &str, message: &Message) -> Result<(), Self::Error> {
        self.messages
            .insert((room.to_owned(), message.seq), message.clone());
        Ok(())
    }
    fn take_message(&mut self, room: &str, seq: u64) -> Result<Option<Message>, Self::Error> {
        Ok(self.messages.remove(&(room.to_owned(), seq)))
    }
    fn id_seq(&mut self, room: &str, id: &str) -> Result<Option<u64>, Self::Error> {
        Ok(self.ids.get(&(room.to_owned(), id.to_owned())).copied())
    }
    fn put_id(&mut self, room: &str, id: &str, seq: u64) -> Result<(), Self::Error> {
        self.ids.insert((room.to_owned(), id.to_owned()), seq);
        Ok(())
    }
    fn remove_id(&mut self, room: &str, id: &str) -> Result<(), Self::Error> {
        self.ids.remove(&(room.to_owned(), id.to_owned()));
        Ok(())
    }
    fn remove_room(&mut self, name: &str) -> Result<(), Self::Error> {
        self.rooms.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(room: &str, id: &str, keep: u64) -> Post {
        Post {
            room: room.into(),
            author: "ann".into(),
            text: format!("hello {id}"),
            id: id.into(),
            keep,
            rooms_max: 2,
        }
    }

    fn seq_of(r: Response) -> (u64, bool) {
        match r {
            Response::Posted { seq, duplicate, .. } => (seq, duplicate),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn seq_is_dense_per_room_and_retries_store_once() {
        let mut t = MemRooms::default();
        assert_eq!(
            seq_of(apply(&mut t, 10, &post("a", "m1", 100)).unwrap()),
            (1, false)
        );
        assert_eq!(
            seq_of(apply(&mut t, 11, &post("b", "m1", 100)).unwrap()),
            (1, false)
        );
        assert_eq!(
            seq_of(apply(&mut t, 12, &post("a", "m2", 100)).unwrap()),
            (2, false)
        );
        // A retry of m1 in room a: same seq, nothing stored.
        assert_eq!(
            seq_of(apply(&mut t, 13, &post("a", "m1", 100)).unwrap()),
            (1, true)
        );
        assert_eq!(t.rooms["a"].last_seq, 2);
        assert_eq!(t.rooms["a"].last_activity_ms, 12);
        assert_eq!(t.messages.len(), 3);
    }

    #[test]
    fn retention_drops_the_oldest_and_forgets_their_ids() {
        let mut t = MemRooms::default();
        for i in 1..=5 {
            apply(&mut t, i, &post("a", &format!("m{i}"), 3)).unwrap();
        }
        let meta = t.rooms["a"];
        assert_eq!((meta.first_seq, meta.last_seq, meta.kept()), (3, 5, 3));
        assert!(!t.messages.contains_key(&("a".into(), 2)));
        assert!(!t.ids.contains_key(&("a".into(), "m1".into())));
    }

    #[test]
    fn the_number_of_rooms_is_bounded() {
        let mut t = MemRooms::default();
        apply(&mut t, 1, &post("a", "1", 10)).unwrap();
        apply(&mut t, 1, &post("b", "1", 10)).unwrap();
        assert_eq!(
            apply(&mut t, 1, &post("c", "1", 10)).unwrap(),
            Response::RoomsFull { max: 2 }
        );
        assert!(!t.rooms.contains_key("c"));
        // Existing rooms still accept messages.
        assert_eq!(
            seq_of(apply(&mut t, 1, &post("a", "2", 10)).unwrap()),
            (2, false)
        );
    }

    #[test]
    fn deleting_a_room_drops_its_messages_and_ids_and_frees_its_slot() {
        let mut t = MemRooms::default();
        for i in 1..=5 {
            apply(&mut t, i, &post("a", &format!("m{i}"), 3)).unwrap();
        }
        apply(&mut t, 6, &post("b", "x", 3)).unwrap();
        assert_eq!(
            apply(&mut t, 7, &post("c", "1", 10)).unwrap(),
            Response::RoomsFull { max: 2 }
        );
        assert_eq!(
            delete(&mut t, "a").unwrap(),
            Response::RoomDeleted {
                deleted: true,
                messages: 3
            }
        );
        assert!(!t.rooms.contains_key("a"));
        assert!(t.messages.keys().all(|(room, _)| room == "b"));
        assert!(t.ids.keys().all(|(room, _)| room == "b"));
        // The slot is free again; a new room under the old name numbers from 1.
        assert_eq!(
            seq_of(apply(&mut t, 8, &post("c", "1", 10)).unwrap()),
            (1, false)
        );
        delete(&mut t, "c").unwrap();
        assert_eq!(
            seq_of(apply(&mut t, 9, &post("a", "m5", 10)).unwrap()),
            (1, false)
        );
        assert_eq!(
            delete(&mut t, "nope").unwrap(),
            Response::RoomDeleted {
                deleted: false,
                messages: 0
            }
        );
    }
}
