//! kith-core: the vocabulary every other kith crate shares, and the deterministic state
//! machines that the replicated log drives.
//!
//! Owns:
//! - [`command`]: what a client can ask the cluster to do ([`Command`]) and what applying it
//!   returns ([`Response`]).
//! - [`kv`]: the key-value state machine — revisions, compare-and-set, TTL expiry, change
//!   events — written against the [`kv::KvTable`] trait so storage can back it with any engine.
//! - [`rooms`]: the chat-room state machine — dense per-room sequence numbers, idempotent
//!   sends, bounded retention.
//! - [`jobs`]: the job queue — leases with fencing, retries with backoff, dead letters,
//!   priorities, delayed jobs.
//! - [`files`]: file manifests, chunk reference counts, share links, and the rendezvous
//!   placement of chunks (the bytes themselves never enter the log).
//! - [`ledger`]: the hash chain over applied entries that lets replicas prove they agree.
//! - [`machine`]: the whole state machine: one proposal dispatched to its domain, over the
//!   [`machine::Tables`] every store implements.
//! - [`limits`]: input bounds and validation shared by the API and the state machine.
//! - [`faults`]: the fault suite's settings body for a node's peer fault layer.
//!
//! Refuses: I/O, clocks, randomness, async. Applying the same commands in the same order must
//! give the same state on every replica; anything that could differ between machines stays
//! out of this crate.

pub mod auth;
pub mod command;
pub mod faults;
pub mod files;
pub mod jobs;
pub mod kv;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod machine;
pub mod rooms;
pub mod txn;

pub use command::{Command, Proposal, Response};
pub use faults::FaultSettings;
pub use kv::{EventKind, KvEntry, KvEvent, KvMeta, KvTable};

/// Identifies a node for the whole life of the cluster (the Raft paper's server id).
pub type NodeId = u64;
