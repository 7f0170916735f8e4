//! Messages on the peer transport besides openraft's own RPCs: requests a node forwards to
//! the leader. Encoded with postcard; both sides run the same binary version.

use serde::{Deserialize, Serialize};

use kith_core::{Command, NodeId, Response};

use crate::NodeConfig;

/// Largest body a node accepts on its `/internal` Raft and forward routes, and so the
/// largest request a peer may build for it. Both sides derive it from the same settings.
///
/// Today: an AppendEntries batch of `APPEND_ENTRIES_MAX` entries of at most one value each,
/// plus room for encoding overhead.
pub fn peer_body_bytes_max(config: &NodeConfig) -> usize {
    (crate::node::APPEND_ENTRIES_MAX as usize + 2) * config.value_bytes_max + (4 << 20)
}

/// Peer routes, relative to a node's base URL.
pub mod route {
    pub const APPEND: &str = "/internal/raft/append";
    pub const VOTE: &str = "/internal/raft/vote";
    pub const SNAPSHOT: &str = "/internal/raft/snapshot";
    pub const FORWARD: &str = "/internal/forward";
    /// Test-only fault settings (JSON); see `kith_node::network::FaultLayer`.
    pub const FAULTS: &str = "/internal/faults";
}

/// A request a follower forwards to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose a command.
    Write(Command),
    /// Propose each of these commands (writes a follower received at about the same time);
    /// answered one by one with [`ForwardResponse::WrittenEach`].
    Writes(Vec<Command>),
    /// Confirm leadership with a quorum and return the index a linearizable read must wait
    /// for (ReadIndex, Raft thesis §6.4).
    ReadIndex,
    /// Add a node as learner, wait for it to catch up, then make it a voter.
    AddMember { id: NodeId, addr: String },
    /// Remove a node from the voters and from the cluster.
    RemoveMember { id: NodeId },
    /// The leader's replication progress: matched log index per member.
    Replication,
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    Written(Response),
    /// One outcome per command of a [`ForwardRequest::Writes`], in order.
    WrittenEach(Vec<Result<Response, ForwardError>>),
    ReadIndex(u64),
    MembershipChanged,
    Replication(Vec<(NodeId, Option<u64>)>),
}

/// Why the leader could not serve a forwarded request. `NotLeader` makes the sender look
/// for the leader again; the others are final for this request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardError {
    NotLeader {
        leader_id: Option<NodeId>,
    },
    Timeout {
        what: String,
        ms: u64,
    },
    /// The leader could not confirm it still has a quorum.
    NoQuorum,
    Membership(String),
    Internal(String),
    /// The leader is past its storage quota and refuses writes that add data.
    QuotaExceeded(crate::quota::QuotaUsage),
}
