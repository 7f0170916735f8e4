//! The peer protocol, both halves: how kith nodes talk to each other.
//!
//! Every peer message is an HTTP POST (a GET or PUT for chunks) to an `/internal/…` route of
//! the node's one port, with a postcard body; both sides run the same binary version.
//!
//! ```text
//!  this node                                          another node
//!  openraft ─▶ client::PeerConnection ── /internal/raft/{append,vote,snapshot} ─▶ server ─▶ openraft
//!  Node::write (follower) ─▶ Forwarder ── /internal/forward ───────────────────▶ server ─▶ Node::serve_forwarded
//!  files (upload, repair) ─▶ client::PeerTransport ── /internal/chunks, chunk-have ─▶ chunks ─▶ files
//! ```
//!
//! - [`route`]: every peer route's path.
//! - [`protocol`]: the messages besides openraft's own RPCs (requests forwarded to the
//!   leader) and the byte bound of every peer request.
//! - [`client`]: the sending half — Raft RPCs on each replication stream's own connection,
//!   everything else on one pooled client.
//! - [`server`]: the receiving half — the axum routes that decode, bound and answer peer
//!   messages and hand them to openraft or the node; `kith-api` only mounts it.
//! - [`chunks`]: the receiving half of the file chunk routes.
//! - [`faults`]: the fault suite's delay and loss on outgoing messages.
//! - [`links`]: each link's state as the last messages found it (for the dashboard).
//!
//! Refuses: deciding what a command means or whether it is valid (`kith-core`, on the
//! leader), and public routes (`kith-api`).

pub mod chunks;
pub mod client;
pub mod faults;
pub mod links;
pub mod protocol;
pub mod server;

/// The paths of the peer routes.
pub mod route {
    pub const APPEND: &str = "/internal/raft/append";
    pub const VOTE: &str = "/internal/raft/vote";
    pub const SNAPSHOT: &str = "/internal/raft/snapshot";
    pub const FORWARD: &str = "/internal/forward";
    /// `POST` postcard `()`: the leader, about to stop, asks this follower to stand for
    /// election now (`Node::hand_over_leadership`).
    pub const ELECT: &str = "/internal/raft/elect";
    /// Test-only fault settings (JSON); see [`super::faults::FaultLayer`].
    pub const FAULTS: &str = "/internal/faults";
    /// `PUT` stores a chunk (raw body), `GET` returns one; the hash is the last segment.
    pub const CHUNKS: &str = "/internal/chunks";
    /// `POST` postcard `Vec<Hash>` → postcard `Vec<bool>`: which of these chunks are here.
    pub const HAVE: &str = "/internal/chunk-have";
}
