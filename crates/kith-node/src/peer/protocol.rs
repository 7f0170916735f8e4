//! Messages on the peer transport besides openraft's own RPCs (requests a node forwards to
//! the leader), and the byte bounds of every peer request. Encoded with postcard; both sides
//! run the same binary version.
//!
//! Sizes: one function, [`peer_body_bytes_max`], says how large a peer request may be. The
//! receiving side ([`super::server`]) refuses larger bodies, and every request
//! kith builds stays under it, each by its own bound:
//!
//! ```text
//!  proposal   ≤ proposal_bytes_max   the largest valid command, plus the leader's clock;
//!                                     the batcher refuses larger ones
//!  log entry  ≤ entry_bytes_max      a batch stops before BATCH_BYTES_MAX, but always takes
//!                                     its first proposal
//!  append     ≤ peer_body_bytes_max  entries up to append_bytes_max, or a single entry;
//!                                     the leader's transport enforces it (client.rs)
//!  forward    ≤ peer_body_bytes_max  commands up to FORWARD_BYTES_MAX, or a single one
//!  snapshot   ≤ peer_body_bytes_max  one chunk of SNAPSHOT_CHUNK_BYTES_MAX
//! ```
//!
//! All of them derive from the same settings (`NodeConfig`), so the members of one cluster
//! must agree on `value_bytes_max`, `job_payload_bytes_max` and `append_bytes_max`.
//!
//! Refuses: deciding what is valid; `kith_core::limits` and the routes do that. This module
//! only bounds the encoded size of what has been decided valid.

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use kith_core::{Command, NodeId, Response};

use crate::NodeConfig;

/// The header every peer request carries: the sender's peer protocol version.
pub const PROTOCOL_HEADER: &str = "kith-protocol";
/// The peer protocol this build speaks: the routes under `/internal`, their postcard
/// bodies, and the meaning of both. A change a node of the previous version would misread is
/// a new version. Nodes talk only to nodes of their own version (`server::members_only`
/// refuses the rest with 426, naming both), so a rolling upgrade across versions needs the
/// cluster to pass through a build that speaks both, or a restore into a new cluster.
pub const PROTOCOL_VERSION: u32 = 1;
/// What a request without the header speaks: builds before the header spoke version 1.
pub const PROTOCOL_VERSION_UNMARKED: u32 = 1;

/// The version this node claims: [`PROTOCOL_VERSION`], or in a `test-hooks` build
/// `KITH_TEST_PROTOCOL_VERSION` (how a test plays a node of another version).
pub fn protocol_version() -> u32 {
    #[cfg(feature = "test-hooks")]
    {
        static CLAIMED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        *CLAIMED.get_or_init(|| {
            std::env::var("KITH_TEST_PROTOCOL_VERSION")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(PROTOCOL_VERSION)
        })
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        PROTOCOL_VERSION
    }
}

/// Encoded bytes a proposal holds besides its one large field (a value, a job payload, a
/// file's chunk list): a key (at most `KEY_BYTES_MAX`, 4 KiB), names, a path, a content type,
/// integers and enum tags. Commands without a large field (a job's result is at most 64 KiB)
/// are smaller than the chunk list of the largest file.
const PROPOSAL_FRAMING_BYTES: usize = 128 * 1024;
/// Encoded bytes of one chunk reference in a file manifest: a 32-byte hash and a u32 size
/// (a varint of at most 5 bytes).
const CHUNK_REF_BYTES_MAX: usize = 32 + 5;
/// Encoded bytes a log entry adds to its proposals: its log id, payload tag and the count.
const ENTRY_FRAMING_BYTES: usize = 1024;
/// Encoded bytes a peer request adds to what it carries: votes, log ids, the entry count,
/// a snapshot's metadata (its membership lists each member's address).
const REQUEST_FRAMING_BYTES: usize = 64 * 1024;
/// Bytes of snapshot data in one InstallSnapshot request (openraft's
/// `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The largest encoded [`kith_core::Proposal`] a valid command makes under `config`: a put
/// of the largest value, a job of the largest payload, or a file of `FILE_CHUNKS_MAX` chunks.
/// The leader's batcher refuses a larger one, so no log entry outgrows [`entry_bytes_max`].
pub fn proposal_bytes_max(config: &NodeConfig) -> usize {
    let manifest = kith_core::files::FILE_CHUNKS_MAX * CHUNK_REF_BYTES_MAX;
    let largest_field = config
        .value_bytes_max
        .max(config.job_payload_bytes_max)
        .max(manifest);
    largest_field + PROPOSAL_FRAMING_BYTES
}

/// The largest encoded log entry the leader builds: a batch stops before it would pass
/// `BATCH_BYTES_MAX`, but always takes its first proposal, whatever its size.
pub fn entry_bytes_max(config: &NodeConfig) -> usize {
    BATCH_BYTES_MAX.max(proposal_bytes_max(config)) + ENTRY_FRAMING_BYTES
}

/// Largest body a node accepts on its `/internal` Raft and forward routes, and so the
/// largest request a peer may build for it. Both sides call this, with the same settings.
///
/// It is the largest of: `append_bytes_max` (AppendEntries requests carry several entries up
/// to it), one entry of [`entry_bytes_max`] (a request always carries at least one), a
/// forwarded batch (`FORWARD_BYTES_MAX`, or one command of at most
/// [`proposal_bytes_max`]), and a snapshot chunk; plus each request's own framing.
pub fn peer_body_bytes_max(config: &NodeConfig) -> usize {
    let forward = FORWARD_BYTES_MAX.max(proposal_bytes_max(config));
    config
        .append_bytes_max
        .max(entry_bytes_max(config))
        .max(forward)
        .max(SNAPSHOT_CHUNK_BYTES_MAX)
        + REQUEST_FRAMING_BYTES
}

/// Encoded bytes in one leader batch (`crate::batcher`, one log entry): a batch always takes its first proposal, then stops before
/// one that would pass this. With proposals of at most [`proposal_bytes_max`], no
/// entry outgrows [`entry_bytes_max`], and so fits in one peer request.
pub(crate) const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Encoded bytes in one forwarded batch (`crate::forwarder`): a batch always takes its first command, then stops before one
/// that would pass this. `peer::protocol::peer_body_bytes_max` covers such a batch, and a batch of
/// one command of up to [`proposal_bytes_max`]; the transport refuses to send
/// anything larger (a command that outgrew validation fails alone, as it travels alone).
pub(crate) const FORWARD_BYTES_MAX: usize = 2 * 1024 * 1024;

/// What a failed proposal tells the node that asked for it.
pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader_id: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(_) => {
                ForwardError::Membership(format!("another change is in progress: {c}"))
            }
            other => ForwardError::Membership(other.to_string()),
        },
        RaftError::Fatal(f) => ForwardError::Internal(f.to_string()),
    }
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
    /// The request broke an input rule (`kith_core::limits`); nothing was proposed.
    /// `too_large` says whether it was refused for its size, as the public route would.
    Invalid {
        message: String,
        too_large: bool,
    },
    /// The leader is past its storage quota and refuses writes that add data.
    QuotaExceeded(crate::quota::QuotaUsage),
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_core::files::{ChunkRef, FileCommand, NewFile};
    use kith_core::jobs::{Enqueue, JobCommand};
    use kith_core::limits::KEY_BYTES_MAX;
    use kith_core::Proposal;
    use kith_storage::TypeConfig;
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    fn config() -> NodeConfig {
        NodeConfig::new(1, "127.0.0.1:0".parse().unwrap(), "unused".into())
    }

    fn bytes<T: Serialize>(value: &T) -> usize {
        postcard::to_allocvec(value).expect("encodes").len()
    }

    fn proposal(command: Command) -> Proposal {
        Proposal {
            now_ms: u64::MAX,
            command,
        }
    }

    /// The largest command of each kind that validation lets through.
    fn largest_commands(config: &NodeConfig) -> Vec<Command> {
        let name = "n".repeat(kith_core::limits::ROOM_NAME_CHARS_MAX);
        vec![
            Command::Put {
                key: "k".repeat(KEY_BYTES_MAX),
                value: vec![0xff; config.value_bytes_max],
                if_revision: Some(u64::MAX),
                ttl_ms: Some(u64::MAX),
            },
            Command::File(FileCommand::Put(NewFile {
                path: "p".repeat(kith_core::files::PATH_BYTES_MAX),
                size: u64::MAX,
                blake3: [0xff; 32],
                content_type: "t".repeat(kith_core::files::CONTENT_TYPE_BYTES_MAX),
                chunk_bytes: u32::MAX,
                chunks: vec![
                    ChunkRef {
                        hash: [0xff; 32],
                        size: u32::MAX,
                    };
                    kith_core::files::FILE_CHUNKS_MAX
                ],
            })),
            Command::Job(JobCommand::Enqueue(Enqueue {
                queue: name.clone(),
                payload: "j".repeat(config.job_payload_bytes_max),
                priority: u8::MAX,
                run_at_ms: u64::MAX,
                delay_ms: u64::MAX,
                max_attempts: u32::MAX,
                timeout_ms: u64::MAX,
                idempotency_key: Some(name),
                retention_ms: u64::MAX,
            })),
        ]
    }

    fn entry(proposals: Vec<Proposal>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX),
            payload: EntryPayload::Normal(proposals),
        }
    }

    fn append(entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
        let log_id = LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX);
        AppendEntriesRequest {
            vote: Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(log_id),
            leader_commit: Some(log_id),
            entries,
        }
    }

    #[test]
    fn the_largest_valid_commands_fit_in_a_proposal_and_a_request() {
        for value_bytes_max in [1024, 1024 * 1024, 16 * 1024 * 1024] {
            let mut config = config();
            config.value_bytes_max = value_bytes_max;
            for command in largest_commands(&config) {
                let proposal = proposal(command.clone());
                assert!(bytes(&proposal) <= proposal_bytes_max(&config));
                let entry_request = append(vec![entry(vec![proposal])]);
                assert!(bytes(&entry_request) <= peer_body_bytes_max(&config));
                let forward = ForwardRequest::Writes(vec![command]);
                assert!(bytes(&forward) <= peer_body_bytes_max(&config));
            }
        }
    }

    #[test]
    fn a_full_batch_fits_in_an_entry_and_a_request() {
        let config = config();
        // The batcher's worst case: just under BATCH_BYTES_MAX of small proposals, then one
        // more that passes it (a batch always takes its first proposal, so the worst is one
        // proposal of the largest size; both are checked).
        let small = proposal(Command::Put {
            key: "k".repeat(100),
            value: vec![0; 1000],
            if_revision: None,
            ttl_ms: None,
        });
        let count = BATCH_BYTES_MAX / bytes(&small);
        let batch = entry(vec![small; count]);
        assert!(bytes(&batch) <= entry_bytes_max(&config));
        assert!(bytes(&append(vec![batch])) <= peer_body_bytes_max(&config));
        let entries = vec![entry(Vec::new()); 64];
        assert!(bytes(&append(entries)) <= peer_body_bytes_max(&config));
    }

    #[test]
    fn a_snapshot_chunk_fits_in_a_request() {
        let config = config();
        assert!(SNAPSHOT_CHUNK_BYTES_MAX + REQUEST_FRAMING_BYTES <= peer_body_bytes_max(&config));
        assert!(config.append_bytes_max < peer_body_bytes_max(&config));
    }
}
