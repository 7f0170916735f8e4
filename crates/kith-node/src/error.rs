//! The node's error type. Retryable conditions are kept apart from fatal ones so the API can
//! tell a client whether to try again.

use kith_core::limits::InvalidInput;
use kith_core::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No leader is known (election in progress, or no quorum). Retryable.
    #[error("no leader is available; the cluster may be electing one or have lost its quorum")]
    NoLeader,
    /// The request did not complete within the node's bound. For a write the outcome is
    /// unknown: it may still commit. Retryable.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: &'static str, ms: u64 },
    /// The leader could not be reached to forward a request. Retryable.
    #[error("could not reach the leader (node {leader_id}): {message}")]
    LeaderUnreachable { leader_id: NodeId, message: String },
    /// The request is malformed or out of bounds; nothing was changed.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The node is shutting down or its Raft core stopped.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A file is larger than the node accepts (or than its Content-Length said).
    #[error("the file is larger than {max} bytes")]
    FileTooLarge { max: u64 },
    /// The request body could not be read in full (cut off, shorter than announced, or
    /// stalled); nothing was stored.
    #[error("bad request body: {0}")]
    BadBody(String),
    /// A bounded resource is at its limit. Retryable later.
    #[error("too many {what} (limit {max})")]
    Busy { what: &'static str, max: usize },
    /// Too few members stored a chunk for the upload to be safe. Retryable.
    #[error("a chunk reached {stored} nodes, fewer than the {needed} required: {last_error}")]
    InsufficientReplicas {
        needed: usize,
        stored: usize,
        last_error: String,
    },
    /// The node is past its storage quota: writes that add data are refused until deletes
    /// bring it back under; deletes and reads work.
    #[error(
        "storage quota exceeded: {} bytes used of {}; delete data to get back under",
        .0.used_bytes,
        .0.quota_bytes
    )]
    QuotaExceeded(crate::quota::QuotaUsage),
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(#[from] kith_storage::StoreError),
    /// Anything else that should not happen; the message says what.
    #[error("internal: {0}")]
    Internal(String),
}

impl NodeError {
    /// The same error again, for each of several requests that share one failure (a batch
    /// forwarded to the leader). A storage error, which cannot be copied, keeps its message.
    pub(crate) fn same(&self) -> NodeError {
        match self {
            NodeError::NoLeader => NodeError::NoLeader,
            NodeError::Timeout { what, ms } => NodeError::Timeout { what, ms: *ms },
            NodeError::LeaderUnreachable { leader_id, message } => NodeError::LeaderUnreachable {
                leader_id: *leader_id,
                message: message.clone(),
            },
            NodeError::InvalidInput(e) => NodeError::InvalidInput(e.clone()),
            NodeError::Membership(m) => NodeError::Membership(m.clone()),
            NodeError::ShuttingDown => NodeError::ShuttingDown,
            NodeError::FileTooLarge { max } => NodeError::FileTooLarge { max: *max },
            NodeError::BadBody(m) => NodeError::BadBody(m.clone()),
            NodeError::Busy { what, max } => NodeError::Busy { what, max: *max },
            NodeError::InsufficientReplicas {
                needed,
                stored,
                last_error,
            } => NodeError::InsufficientReplicas {
                needed: *needed,
                stored: *stored,
                last_error: last_error.clone(),
            },
            NodeError::QuotaExceeded(usage) => NodeError::QuotaExceeded(*usage),
            NodeError::Storage(e) => NodeError::Internal(format!("storage: {e}")),
            NodeError::Internal(m) => NodeError::Internal(m.clone()),
        }
    }
}
