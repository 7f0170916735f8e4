//! What every etcd service shares: the response header, kith's errors as gRPC statuses
//! with etcd's messages (clients match on them), keys and ranges from etcd's bytes, and the
//! token check.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::KeyValue;
use kith_core::auth::{Capability, Need};
use kith_core::txn::{KeyRange, RangeEnd};
use kith_core::KvEntry;
use kith_node::{Node, NodeError};

/// The services' shared state: the node they answer for.
#[derive(Clone)]
pub struct Etcd {
    pub node: Arc<Node>,
}

impl Etcd {
    /// A header at `revision` (0 for calls that do not touch the key-value store).
    pub fn header(&self, revision: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: cluster_id(&self.node),
            member_id: self.node.config.id,
            revision: revision as i64,
            raft_term: self.node.term(),
        })
    }

    /// Checks the caller's token for `need`, where the node asks for tokens (`--tls`). The
    /// token travels as etcd's clients send it (metadata `token`, what `Authenticate`
    /// answered) or as kith's (`authorization: Bearer …`).
    pub fn authorize<T>(&self, request: &Request<T>, need: Need) -> Result<(), Status> {
        if !self.node.auth_required() {
            return Ok(());
        }
        let record = self.token_record(request)?;
        if record.allows(&need, wall_clock_ms()) {
            Ok(())
        } else {
            Err(Status::permission_denied("etcdserver: permission denied"))
        }
    }

    /// The live token record the caller presents.
    pub fn token_record<T>(
        &self,
        request: &Request<T>,
    ) -> Result<kith_core::auth::TokenRecord, Status> {
        let metadata = request.metadata();
        let token = metadata
            .get("token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                metadata
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ").or(Some(v)))
            })
            .ok_or_else(|| Status::unauthenticated("etcdserver: user name is empty"))?;
        self.node
            .authenticate(token.trim())
            .map_err(|_| Status::unauthenticated("etcdserver: invalid auth token"))
    }
}

/// A stable id for the cluster in headers: from the TLS cluster id when there is one.
fn cluster_id(node: &Node) -> u64 {
    let name = node.cluster_name().unwrap_or_else(|| "kith".to_owned());
    let hash = blake3::hash(name.as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// kith's error as the status etcd would answer, with etcd's message where clients look
/// for one (`etcdserver: no leader`, `etcdserver: request timed out`).
pub fn status(e: NodeError) -> Status {
    match e {
        NodeError::NoLeader | NodeError::LeaderUnreachable { .. } => {
            Status::unavailable("etcdserver: no leader")
        }
        NodeError::Timeout { .. } => Status::unavailable("etcdserver: request timed out"),
        NodeError::ShuttingDown => Status::unavailable("etcdserver: server stopped"),
        NodeError::InvalidInput(e) => Status::invalid_argument(format!("etcdserver: {e}")),
        NodeError::QuotaExceeded(_) => {
            Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
        }
        NodeError::Busy { .. } => Status::resource_exhausted(format!("etcdserver: {e}")),
        other => Status::internal(format!("etcdserver: {other}")),
    }
}

/// A key from etcd's bytes: kith's keys are UTF-8 text.
pub fn key(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("kith keys are UTF-8 text; this key is not"))
}

/// etcd's `key` and `range_end` as a range: an empty end is the key alone, `\0` every key
/// from it (and with the key `\0` too, every key).
pub fn key_range(key_bytes: &[u8], range_end: &[u8]) -> Result<KeyRange, Status> {
    if key_bytes.is_empty() {
        return Err(Status::invalid_argument("etcdserver: key is not provided"));
    }
    let end = match range_end {
        [] => RangeEnd::One,
        [0] => RangeEnd::Unbounded,
        end => RangeEnd::Before(end.to_vec()),
    };
    let key = if key_bytes == [0] && end != RangeEnd::One {
        String::new()
    } else {
        key(key_bytes)?
    };
    Ok(KeyRange { key, end })
}

/// The name a token's grant must cover to read or write `range`: the key for one key, else
/// the prefix the range's start and end share (every key, for an open-ended range).
pub fn range_name(range: &KeyRange) -> String {
    match &range.end {
        RangeEnd::One => range.key.clone(),
        RangeEnd::Unbounded => String::new(),
        RangeEnd::Before(end) => {
            let shared = range
                .key
                .bytes()
                .zip(end.iter())
                .take_while(|(a, b)| a == *b)
                .count();
            // Back to a character boundary.
            let mut cut = shared;
            while !range.key.is_char_boundary(cut) {
                cut -= 1;
            }
            range.key[..cut].to_owned()
        }
    }
}

pub fn read_need(range: &KeyRange) -> Need {
    Need::Read(Capability::Kv, range_name(range))
}

pub fn write_need(range: &KeyRange) -> Need {
    Need::Write(Capability::Kv, range_name(range))
}

pub fn key_value(key: &str, e: &KvEntry) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: e.create_revision as i64,
        mod_revision: e.mod_revision as i64,
        version: e.version as i64,
        value: e.value.clone(),
        lease: 0,
    }
}

/// A revision from etcd's signed field (negative is a bad request).
pub fn revision(value: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("etcdserver: {what} must not be negative")))
}

/// etcd's "not in this build" answer, naming the call.
pub fn unimplemented(call: &str, why: &str) -> Status {
    Status::unimplemented(format!("kith does not implement {call}: {why}"))
}
