//! Every postcard body that crosses the peer transport, in both directions, and the check
//! the `peer_decode` target makes on each: decoding never panics, and whatever decodes
//! re-encodes to bytes that decode to the same value (and encode to the same bytes again).
//!
//! Owns the list of peer message kinds ([`Kind`]) and real example values of each for the
//! seed corpus. Refuses driving a node: what a node does with a decoded message is the
//! `public_http` target's and the cluster tests' business.

use std::fmt::Debug;

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use kith_core::files::Hash;
use kith_core::{Command, NodeId, Proposal, Response};
use kith_node::peer::protocol::{ForwardError, ForwardRequest, ForwardResponse};
use kith_storage::TypeConfig;

/// One peer message type. The fuzz input's first byte picks the kind; the rest is its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Body of `POST /internal/raft/append`.
    AppendRequest,
    /// Body of `POST /internal/raft/vote`.
    VoteRequest,
    /// Body of `POST /internal/raft/snapshot`.
    SnapshotRequest,
    /// Body of `POST /internal/forward`.
    ForwardRequest,
    /// Body of `POST /internal/chunk-have`.
    ChunkHaveRequest,
    /// What a leader decodes from a follower's append route.
    AppendAnswer,
    /// What a candidate decodes from a peer's vote route.
    VoteAnswer,
    /// What a leader decodes from a follower's snapshot route.
    SnapshotAnswer,
    /// What a follower decodes from the leader's forward route.
    ForwardAnswer,
    /// What a node decodes from a peer's chunk-have route.
    ChunkHaveAnswer,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::AppendRequest,
        Kind::VoteRequest,
        Kind::SnapshotRequest,
        Kind::ForwardRequest,
        Kind::ChunkHaveRequest,
        Kind::AppendAnswer,
        Kind::VoteAnswer,
        Kind::SnapshotAnswer,
        Kind::ForwardAnswer,
        Kind::ChunkHaveAnswer,
    ];

    /// The kind a fuzz input's first byte selects.
    pub fn from_tag(tag: u8) -> Kind {
        Kind::ALL[usize::from(tag) % Kind::ALL.len()]
    }

    pub fn tag(self) -> u8 {
        Kind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("every kind is in ALL") as u8
    }

    /// Decodes `body` as this kind and checks the round trip; panics on a violation.
    pub fn check(self, body: &[u8]) {
        match self {
            Kind::AppendRequest => round_trip::<AppendEntriesRequest<TypeConfig>>(body),
            Kind::VoteRequest => round_trip::<VoteRequest<NodeId>>(body),
            Kind::SnapshotRequest => round_trip::<InstallSnapshotRequest<TypeConfig>>(body),
            Kind::ForwardRequest => round_trip::<ForwardRequest>(body),
            Kind::ChunkHaveRequest => round_trip::<Vec<Hash>>(body),
            Kind::AppendAnswer => round_trip::<AppendAnswer>(body),
            Kind::VoteAnswer => round_trip::<VoteAnswer>(body),
            Kind::SnapshotAnswer => round_trip::<SnapshotAnswer>(body),
            Kind::ForwardAnswer => round_trip::<ForwardAnswer>(body),
            Kind::ChunkHaveAnswer => round_trip::<Vec<bool>>(body),
        }
    }
}

pub type AppendAnswer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
pub type VoteAnswer = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
pub type SnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
pub type ForwardAnswer = Result<ForwardResponse, ForwardError>;

/// Decode, encode, decode, encode: the two decoded values print the same and the two
/// encodings are equal. Several peer types have no `PartialEq`, so values are compared
/// through their encoding and their `Debug` form.
fn round_trip<T: Serialize + DeserializeOwned + Debug>(body: &[u8]) {
    let Ok(first) = postcard::from_bytes::<T>(body) else {
        return;
    };
    let encoded = postcard::to_allocvec(&first).expect("a decoded peer message re-encodes");
    let second: T = postcard::from_bytes(&encoded).expect("a re-encoded peer message decodes");
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    let again = postcard::to_allocvec(&second).expect("a decoded peer message re-encodes");
    assert_eq!(encoded, again, "the encoding of a decoded value is stable");
}

/// A fuzz input for `kind` with `value` as its body.
fn input<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    let mut bytes = vec![kind.tag()];
    bytes.extend(postcard::to_allocvec(value).expect("seed values encode"));
    bytes
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn members() -> Membership<NodeId, BasicNode> {
    let nodes = [(1, "127.0.0.1:7001"), (2, "127.0.0.1:7002")]
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)));
    Membership::new(
        vec![[1, 2].into()],
        nodes.collect::<std::collections::BTreeMap<_, _>>(),
    )
}

fn put(key: &str, value: &[u8]) -> Command {
    Command::Put {
        key: key.into(),
        value: value.to_vec(),
        if_revision: Some(3),
        ttl_ms: Some(60_000),
    }
}

/// Named seed inputs: one or more real encodings of every kind.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id: log_id(2, 7),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 8),
            payload: EntryPayload::Membership(members()),
        },
        Entry {
            log_id: log_id(2, 9),
            payload: EntryPayload::Normal(vec![
                Proposal {
                    now_ms: 1_700_000_000_000,
                    command: put("a/b", b"value"),
                },
                Proposal {
                    now_ms: 1_700_000_000_001,
                    command: Command::Delete {
                        key: "a/b".into(),
                        if_revision: None,
                    },
                },
            ]),
        },
    ];
    let vote = Vote::new_committed(2, 1);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(2, 9)),
        last_membership: StoredMembership::new(Some(log_id(2, 8)), members()),
        snapshot_id: "2-9-1".into(),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 6)),
        entries,
        leader_commit: Some(log_id(2, 8)),
    };
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(2, 9)),
        entries: Vec::new(),
        leader_commit: Some(log_id(2, 9)),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: meta.clone(),
        offset: 0,
        data: b"snapshot bytes".to_vec(),
        done: true,
    };
    let fatal: RaftError<NodeId> = RaftError::Fatal(Fatal::Panicked);
    let mismatch: RaftError<NodeId, InstallSnapshotError> =
        RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: ("2-9-1", 0).into(),
            got: ("2-9-1", 4096).into(),
        }));
    let hash: Hash = [0x5a; 32];
    let post = kith_core::rooms::Post {
        room: "general".into(),
        author: "ann".into(),
        text: "hello".into(),
        id: "m1".into(),
        keep: 10_000,
        rooms_max: 10_000,
    };
    let txn = kith_core::txn::Txn {
        compares: vec![kith_core::txn::Compare {
            range: kith_core::txn::KeyRange::one("k"),
            op: kith_core::txn::CompareOp::Equal,
            target: kith_core::txn::CompareTarget::ModRevision(3),
        }],
        success: vec![kith_core::txn::TxnOp::Delete {
            range: kith_core::txn::KeyRange {
                key: "a/".into(),
                end: kith_core::txn::RangeEnd::Before(b"a0".to_vec()),
            },
            prev_kv: true,
        }],
        failure: vec![kith_core::txn::TxnOp::Range {
            range: kith_core::txn::KeyRange::one("k"),
            limit: 1,
            keys_only: false,
            count_only: false,
        }],
    };
    let lease = kith_core::lease::LeaseCommand::Grant { id: 7, ttl_s: 10 };
    let writes = ForwardRequest::Writes(vec![
        put("k", b"v"),
        Command::Expire,
        Command::Post(post),
        Command::Txn(txn),
        Command::Lease(lease),
    ]);
    let each: ForwardAnswer = Ok(ForwardResponse::WrittenEach(vec![
        Ok(Response::Put { revision: 4 }),
        Err(ForwardError::NotLeader { leader_id: Some(2) }),
        Err(ForwardError::Timeout {
            what: "commit".into(),
            ms: 5000,
        }),
    ]));
    let vec: Vec<(&str, Vec<u8>)> = vec![
        ("append", input(Kind::AppendRequest, &append)),
        ("heartbeat", input(Kind::AppendRequest, &heartbeat)),
        (
            "vote",
            input(
                Kind::VoteRequest,
                &VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 9))),
            ),
        ),
        ("snapshot", input(Kind::SnapshotRequest, &snapshot)),
        (
            "forward_write",
            input(Kind::ForwardRequest, &ForwardRequest::Write(put("k", b"v"))),
        ),
        ("forward_writes", input(Kind::ForwardRequest, &writes)),
        (
            "forward_add_member",
            input(
                Kind::ForwardRequest,
                &ForwardRequest::AddMember {
                    id: 4,
                    addr: "127.0.0.1:7004".into(),
                },
            ),
        ),
        (
            "chunk_have",
            input(Kind::ChunkHaveRequest, &vec![hash, [0; 32]]),
        ),
        (
            "append_ok",
            input(
                Kind::AppendAnswer,
                &AppendAnswer::Ok(AppendEntriesResponse::Success),
            ),
        ),
        (
            "append_partial",
            input(
                Kind::AppendAnswer,
                &AppendAnswer::Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 8)))),
            ),
        ),
        (
            "append_fatal",
            input(Kind::AppendAnswer, &AppendAnswer::Err(fatal)),
        ),
        (
            "vote_answer",
            input(
                Kind::VoteAnswer,
                &VoteAnswer::Ok(VoteResponse::new(Vote::new(3, 2), Some(log_id(2, 9)), true)),
            ),
        ),
        (
            "snapshot_answer",
            input(
                Kind::SnapshotAnswer,
                &SnapshotAnswer::Ok(InstallSnapshotResponse { vote }),
            ),
        ),
        (
            "snapshot_mismatch",
            input(Kind::SnapshotAnswer, &SnapshotAnswer::Err(mismatch)),
        ),
        ("forward_each", input(Kind::ForwardAnswer, &each)),
        (
            "forward_replication",
            input(
                Kind::ForwardAnswer,
                &ForwardAnswer::Ok(ForwardResponse::Replication(vec![(1, Some(9)), (2, None)])),
            ),
        ),
        (
            "chunk_have_answer",
            input(Kind::ChunkHaveAnswer, &vec![true, false]),
        ),
    ];
    vec.into_iter().map(|(n, b)| (n.to_owned(), b)).collect()
}
