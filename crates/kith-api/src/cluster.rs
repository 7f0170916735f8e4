//! The node's and the cluster's own state: `/v1/health`, `/v1/cluster`, membership changes
//! (`/v1/cluster/members`) and `/v1/ledger`.
//!
//! Owns: answering what this node sees of itself and its peers. Refuses: deciding
//! membership (that is `Node::add_member`/`remove_member` in kith-node).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::access::Authenticated;
use crate::error::ApiError;
use crate::params::Q;
use kith_core::NodeId;
use kith_node::tls::Peer;
use kith_node::Node;

type Shared = State<Arc<Node>>;

pub(crate) async fn health(State(node): Shared) -> Response {
    let h = node.health();
    let status = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}

pub(crate) async fn cluster(State(node): Shared) -> Response {
    let h = node.health();
    let members = node.cluster().await;
    Json(json!({
        "node_id": h.node_id,
        "leader_id": h.leader_id,
        "term": h.term,
        "commit_index": h.commit_index,
        "members": members,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddMember {
    id: NodeId,
    addr: String,
}

/// `GET /livez`: the process serves HTTP (Kubernetes' liveness convention); nothing else.
pub(crate) async fn livez() -> &'static str {
    "ok\n"
}

/// `GET /readyz` (Kubernetes' readiness convention): 200 when this node can serve — it is a
/// member that knows a leader, has applied every entry it knows to be committed, and is
/// within its storage quota; else 503 with the first check that failed as the error code
/// (`no_leader`, `applying`, `quota_exceeded`). A load balancer sends traffic only to nodes
/// that answer 200; none of the checks needs a round trip, so probing is cheap.
///
/// A leader cut off from its quorum still calls itself leader (openraft 0.9 does not step
/// down), so on the leader "knows a leader" also means a quorum acknowledged it within
/// [`quorum_ack_ms_max`]; past that it answers `no_leader` too.
pub(crate) async fn readyz(State(node): Shared) -> Response {
    let h = node.health();
    let ack_max = quorum_ack_ms_max(&node);
    let failed = if h.leader_id.is_none() || !h.ready {
        Some((
            "no_leader",
            "this node knows no leader (an election is under way, or it is cut off or not a member)"
                .to_owned(),
        ))
    } else if h.leader_id == Some(h.node_id) && h.quorum_ack_age_ms.is_none_or(|age| age > ack_max)
    {
        Some((
            "no_leader",
            format!(
                "this node leads, but no quorum has acknowledged it for {} ms (more than {ack_max}): \
                 it is cut off from the other members",
                h.quorum_ack_age_ms.map_or("unknown".into(), |a| a.to_string())
            ),
        ))
    } else if h.applied_index < h.commit_index {
        Some((
            "applying",
            format!(
                "this node has applied up to {} of the {} it knows to be committed",
                h.applied_index, h.commit_index
            ),
        ))
    } else if h.quota.exceeded {
        Some((
            "quota_exceeded",
            format!(
                "this node stores {} bytes, at or past its quota of {}",
                h.quota.used_bytes, h.quota.quota_bytes
            ),
        ))
    } else {
        None
    };
    match failed {
        Some((code, message)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response()
        }
        None => Json(json!({
            "ready": true,
            "node_id": h.node_id,
            "leader_id": h.leader_id,
            "applied_index": h.applied_index,
        }))
        .into_response(),
    }
}

/// How long ago a leader's quorum may last have acknowledged it for `/readyz`: twice the
/// longest election timeout (a live quorum answers every heartbeat, and by then its
/// followers have begun to elect another leader), and at least a second, so a loaded
/// machine's late heartbeats do not flap the probe.
fn quorum_ack_ms_max(node: &Node) -> u64 {
    (2 * node.config.election_timeout_ms_max).max(1000)
}

pub(crate) async fn add_member(
    State(node): Shared,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    admin: Option<Extension<Authenticated>>,
    request: Result<Json<AddMember>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = request.map_err(|e| ApiError::bad_request(e.body_text()))?;
    kith_core::limits::validate_member(request.id, &request.addr)?;
    if admin.is_none() {
        node.may_change_membership(peer.as_ref().map(|p| &p.0 .0), Some(request.id))
            .map_err(|reason| ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason))?;
    }
    node.add_member(request.id, request.addr).await?;
    Ok(Json(json!({"added": request.id})).into_response())
}

pub(crate) async fn remove_member(
    State(node): Shared,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    admin: Option<Extension<Authenticated>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    if admin.is_none() {
        node.may_change_membership(peer.as_ref().map(|p| &p.0 .0), None)
            .map_err(|reason| ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason))?;
    }
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("node id must be an integer, got '{id}'")))?;
    node.remove_member(id).await?;
    Ok(Json(json!({"removed": id})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LedgerQuery {
    index: Option<u64>,
}

/// `GET /v1/ledger[?index=N]`: this node's ledger head, or its hash at `index` while that is
/// still retained. Always this node's own view — comparing nodes is the point.
pub(crate) async fn ledger(
    State(node): Shared,
    Q(query): Q<LedgerQuery>,
) -> Result<Response, ApiError> {
    let state = node.read_stale();
    let head = state.ledger_head()?;
    let node_id = node.config.id;
    let Some(index) = query.index else {
        return Ok(Json(json!({
            "node_id": node_id,
            "index": head.index,
            "hash": kith_core::ledger::to_hex(&head.hash),
        }))
        .into_response());
    };
    if index > head.index {
        return Err(ApiError::not_found(format!(
            "index {index} is not applied on node {node_id} yet (head is {})",
            head.index
        ))
        .with("head_index", head.index));
    }
    match state.ledger_at(index)? {
        (Some(hash), _) => Ok(Json(json!({
            "node_id": node_id,
            "index": index,
            "hash": kith_core::ledger::to_hex(&hash),
        }))
        .into_response()),
        (None, oldest) => Err(ApiError::new(
            StatusCode::GONE,
            "not_retained",
            format!("node {node_id} no longer keeps the ledger hash at index {index}"),
        )
        .with("oldest_index", oldest)),
    }
}
