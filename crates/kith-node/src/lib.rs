//! kith-node: one running kith node — openraft wired to kith's storage and peer transport.
//!
//! Owns:
//! - [`config`]: the node's settings and their defaults (timeouts, limits, snapshot policy).
//! - [`peer`]: the peer protocol, both halves — the messages, their byte bounds, the client
//!   that sends Raft RPCs, forwarded requests and chunks to other nodes, and the `/internal/…`
//!   routes that receive them (which `kith-api` mounts).
//! - [`files`]: chunked, replicated file uploads and downloads, and the per-node repair,
//!   scrub and garbage-collection passes that keep every chunk on R nodes.
//! - [`quota`]: the storage quota — what this node stores, and the leader's refusal of
//!   growing writes past `quota_bytes` (507 `quota_exceeded`).
//! - `batcher`: group commit on the leader — concurrent writes proposed as one log entry.
//! - `read_batcher`: concurrent linearizable reads share one leadership confirmation.
//! - [`read`]: [`Fresh`], the applied state handed out only after a read's barrier ran — the
//!   one way callers outside this crate read it.
//! - [`listen`]: accepting connections on the node's port, plain or TLS, and the peer
//!   (address, certificate) each one carries into its requests.
//! - [`tls`]: the node's TLS identity (`kith serve --tls`) and what a peer's certificate
//!   says about it (cluster id, node id).
//! - [`node`]: [`Node`], the facade the HTTP layer calls: writes (forwarded to the leader when
//!   this node is not it), the read barrier behind [`read`], health, cluster view, membership.
//!
//! Refuses: public HTTP routes and JSON (that is `kith-api`), and deciding what a command means
//! (that is `kith-core`).
//!
//! ```text
//!  client ──HTTP──▶ any node ──(follower? forward)──▶ leader: Raft::client_write
//!                                                        │ append + fsync (LogStore)
//!                                                        │ replicate ──▶ followers: append + fsync
//!                                                        ▼ quorum acked ⇒ committed
//!                                                      apply (StateMachineStore) ──▶ Response
//! ```

mod batch_queue;
mod batcher;
pub mod config;
pub mod error;
pub mod files;
mod forwarder;
pub mod listen;
pub mod node;
pub mod peer;
pub mod quota;
pub mod read;
mod read_batcher;
pub mod tls;
mod tokens;

pub use config::NodeConfig;
pub use error::NodeError;
pub use node::{wall_clock_ms, Consistency, Health, MemberStatus, Node, Stats};
pub use read::Fresh;
