//! The one way to read a node's applied state: [`Node::read`] runs the barrier its
//! [`Consistency`] asks for and only then hands out a [`Fresh`] view.
//!
//! Owns [`Fresh`], the proof that a read's barrier ran: it has no public constructor, so a
//! caller outside this crate holding one got it from [`Node::read`] (after the barrier) or
//! [`Node::read_stale`] (which names, in the call, that it reads this node's own state with no
//! barrier). Every `StateReader` query is reached through it. Also owns
//! [`Node::applied_changes`], the wake-up signal for long polls and streams, which carries no
//! state and so needs no barrier.
//!
//! Refuses: the barrier itself (`Node::read_barrier` in `node.rs`, where the ReadIndex
//! exchange with the leader lives) and any query logic (that is `kith_storage::StateReader`).
//!
//! ```text
//!  handler ── Node::read(c) ──▶ read_barrier(c) ──▶ Fresh ──▶ StateReader query
//!              (Linearizable: leader's read index, wait until applied; Stale: nothing)
//! ```

use std::ops::Deref;

use kith_storage::StateReader;
use tokio::sync::watch;

use crate::node::{Consistency, Node};
use crate::NodeError;

/// This node's applied state, read after the barrier for [`Fresh::consistency`] ran.
///
/// Borrowed from the node, so it lives no longer than one request; a stream or long poll
/// that reads again after waking takes a new one for each read.
pub struct Fresh<'a> {
    state: &'a StateReader,
    consistency: Consistency,
}

impl Fresh<'_> {
    /// The consistency whose barrier ran before this view was handed out.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }
}

impl Deref for Fresh<'_> {
    type Target = StateReader;

    fn deref(&self) -> &StateReader {
        self.state
    }
}

impl Node {
    /// Runs the barrier for `consistency` (for a linearizable read: the leader's read index,
    /// applied here; for a stale read: nothing) and returns the state to read.
    pub async fn read(&self, consistency: Consistency) -> Result<Fresh<'_>, NodeError> {
        self.read_barrier(consistency).await?;
        Ok(Fresh {
            state: self.state(),
            consistency,
        })
    }

    /// This node's own applied state with no barrier, as [`Node::read`] with
    /// [`Consistency::Stale`] gives it: for answers that are this node's view by design (the
    /// ledger, watches, room streams, job listings, claim polls) and so wait on no leader.
    pub fn read_stale(&self) -> Fresh<'_> {
        Fresh {
            state: self.state(),
            consistency: Consistency::Stale,
        }
    }

    /// A receiver that sees the store revision after every apply on this node: the wake-up
    /// for long polls and streams. It carries no state; read through [`Node::read`] or
    /// [`Node::read_stale`] after it fires.
    pub fn applied_changes(&self) -> watch::Receiver<u64> {
        self.state().subscribe()
    }
}
