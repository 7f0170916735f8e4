//! The receiving half of the peer protocol: the `/internal/…` routes that take openraft RPCs
//! and requests forwarded to the leader, and mount the chunk routes ([`super::chunks`]).
//! `kith-api` merges [`router`] into the node's one HTTP router and does nothing else with
//! peer messages.
//!
//! Bodies are postcard both ways; answers are `Result`s encoded as-is so the sender sees the
//! receiver's Raft error exactly. These routes are for other kith nodes only. While the dev
//! playground has cut this node off, every peer route but the fault settings answers 503.
//!
//! Refuses, with 503 and at once, a Raft or forward request past the in-flight bounds
//! ([`RAFT_REQUESTS_IN_FLIGHT_MAX`], [`FORWARDS_IN_FLIGHT_MAX`], and
//! [`FORWARD_BODY_BYTES_IN_FLIGHT_MAX`] bytes of forwarded bodies; a request counts from
//! before its body is read until it is answered), so a flood of peer requests holds at most
//! that many bodies. Raft's own messages have their own pool, so forwarded writes and reads can
//! never crowd out the votes and appends that keep the cluster live.
//!
//! Snapshots arrive in pieces on `/internal/raft/snapshot`; kith assembles them itself in a
//! file ([`SnapshotInbox`]), one receive at a time, rather than through openraft's chunked
//! receive (which seeks an in-memory buffer to whatever offset a message names). A sender
//! whose vote is below this node's is answered with this node's vote, as openraft would, so
//! a stale leader steps down. A piece out of order is a 400, a snapshot past
//! [`SNAPSHOT_BYTES_MAX`](kith_storage::SNAPSHOT_BYTES_MAX) a 413, a finished file that is not
//! a whole snapshot a 400; only a file that checked out is handed to
//! `Raft::install_full_snapshot`, so no message can make the install fail and stop the core.
//!
//! Who may speak: without TLS, anyone who reaches the port (which then listens on loopback,
//! or the operator said `--insecure`). With TLS, [`members_only`] answers 403 to every
//! `/internal` request that does not come with a certificate [`Node::admits_peer`] accepts,
//! before its body is read, so a stranger changes no term, vote or log.
//!
//! A member speaks only for itself: with TLS, an append, snapshot piece or vote request
//! whose vote names another node than the sender's certificate is a 403 too.
//!
//! One exception is for the fault suite: `POST /internal/faults` (JSON [`FaultSettings`])
//! sets this node's test-only delay and loss on outgoing peer messages. It answers 403
//! unless the node was started with `--enable-fault-injection`.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::Vote;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{Mutex, Semaphore};

use kith_core::{FaultSettings, NodeId};
use kith_storage::{SnapshotInbox, StoreError, TypeConfig};

use super::client::POSTCARD;
use super::route;
use crate::Node;

/// Raft messages (appends, votes, snapshot pieces) being read or served at once. A leader
/// keeps about two streams per follower (replication and heartbeats) and a snapshot send,
/// a candidate one vote request per peer: 64 covers clusters of well over a dozen nodes.
pub const RAFT_REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Forwarded requests being read or served at once. Each follower forwards up to 4 write
/// batches at a time, and one read-index request per linearizable read its clients make.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 512;
/// Bytes of forwarded-request bodies held at once. Most forwards are a few hundred bytes
/// (read indexes, small writes); without this, 512 forwards of the largest body each would
/// hold over a gigabyte. Raft's pool needs no byte budget: 64 of its largest bodies are
/// about 160 MiB.
pub const FORWARD_BODY_BYTES_IN_FLIGHT_MAX: usize = 64 * 1024 * 1024;

/// The in-flight bounds' permits.
#[derive(Clone)]
struct InFlight {
    raft: Arc<Semaphore>,
    forwards: Arc<Semaphore>,
    /// One permit per byte of forwarded bodies being held (`Content-Length`, or the body
    /// limit when the sender names none).
    forward_bytes: Arc<Semaphore>,
    body_bytes_max: usize,
}

type SnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Every peer route, ready to merge into the node's HTTP router.
pub fn router(node: Arc<Node>) -> Router {
    let body_limit = super::protocol::peer_body_bytes_max(&node.config);
    let in_flight = InFlight {
        raft: Arc::new(Semaphore::new(RAFT_REQUESTS_IN_FLIGHT_MAX)),
        forwards: Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT_MAX)),
        forward_bytes: Arc::new(Semaphore::new(FORWARD_BODY_BYTES_IN_FLIGHT_MAX)),
        body_bytes_max: body_limit,
    };
    // Held across a whole piece, install included: one receive at a time.
    let inbox = Arc::new(Mutex::new(SnapshotInbox::new(&node.config.data_dir)));
    let snapshot_route = move |State(node): State<Arc<Node>>, sender: Sender, body: Bytes| {
        let inbox = inbox.clone();
        async move { snapshot(node, inbox, sender, body).await }
    };
    let raft = Router::new()
        .route(route::APPEND, post(append))
        .route(route::VOTE, post(vote))
        .route(route::SNAPSHOT, post(snapshot_route))
        .route(route::FORWARD, post(forward))
        .route(route::ELECT, post(elect))
        .layer(axum::middleware::from_fn_with_state(
            in_flight,
            bound_in_flight,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node.clone());
    let faults = Router::new()
        .route(route::FAULTS, post(faults))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node.clone());
    raft.merge(super::chunks::router(node.clone()))
        .layer(axum::middleware::from_fn_with_state(
            node,
            refuse_when_isolated,
        ))
        .merge(faults)
}

/// With TLS, every `/internal` request (these routes, and the dev playground's) must come
/// from a member's certificate: anything else is a 403 with the JSON error body, before the
/// body is read. kith-api layers this over its whole router, so no `/internal` route can
/// miss it.
pub async fn members_only(
    State(node): State<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    // The fault suite's route is its own guard: it exists only on a node started with
    // `--enable-fault-injection` (never in production), whose harness sets a node's faults
    // also while the nemesis has removed it from the membership.
    if !path.starts_with("/internal") || (path == route::FAULTS && node.config.fault_injection) {
        return next.run(request).await;
    }
    let ours = super::protocol::protocol_version();
    let theirs = match request.headers().get(super::protocol::PROTOCOL_HEADER) {
        None => Some(super::protocol::PROTOCOL_VERSION_UNMARKED),
        Some(v) => v.to_str().ok().and_then(|v| v.parse::<u32>().ok()),
    };
    if theirs != Some(ours) {
        let theirs = theirs.map_or_else(|| "an unreadable".to_owned(), |v| v.to_string());
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, format!("kith-protocol/{ours}"))],
            format!(
                "the peer speaks kith peer protocol {theirs}; this node speaks {ours}: run one \
                 kith version on every member"
            ),
        )
            .into_response();
    }
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::tls::Peer>>()
        .map(|info| &info.0);
    match node.admits_peer(peer) {
        Ok(()) => next.run(request).await,
        Err(reason) => forbidden(reason),
    }
}

/// While the dev playground has cut this node off, peers cannot reach it either.
async fn refuse_when_isolated(
    State(node): State<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if node.is_isolated() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "cut off by the dev playground",
        )
            .into_response();
    }
    next.run(request).await
}

/// Admits a request only while its pool has a permit, held until it is answered.
async fn bound_in_flight(
    State(in_flight): State<InFlight>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let busy = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many peer requests in flight; try again",
        )
            .into_response()
    };
    let forward = request.uri().path() == route::FORWARD;
    let pool = if forward {
        &in_flight.forwards
    } else {
        &in_flight.raft
    };
    let Ok(_permit) = pool.clone().try_acquire_owned() else {
        return busy();
    };
    let _bytes = if forward {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(in_flight.body_bytes_max);
        // A body past the limit is refused by the body extractor; it holds no more.
        let bytes = declared.clamp(1, in_flight.body_bytes_max) as u32;
        match in_flight
            .forward_bytes
            .clone()
            .try_acquire_many_owned(bytes)
        {
            Ok(permit) => Some(permit),
            Err(_) => return busy(),
        }
    } else {
        None
    };
    next.run(request).await
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("undecodable peer message: {e}"))
}

fn refuse(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn encode<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, POSTCARD)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(node): State<Arc<Node>>, sender: Sender, body: Bytes) -> Response {
    let request: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(request) => request,
        Err(m) => return refuse(m),
    };
    if let Err(reason) = speaks_for_itself(&node, &sender, &request.vote) {
        return forbidden(reason);
    }
    // openraft never replicates to the node that leads, so an append naming this node's own
    // leadership is forged; openraft would run it on its leader state, which it asserts
    // never happens.
    if names_this_node(&node, &request.vote) {
        return refuse("an append that names this node as its leader".into());
    }
    encode(&node.raft().append_entries(request).await)
}

/// Whether `vote` is this node's own leadership (or candidacy).
fn names_this_node(node: &Node, vote: &Vote<NodeId>) -> bool {
    vote.leader_id().voted_for() == Some(node.config.id)
}

async fn vote(State(node): State<Arc<Node>>, sender: Sender, body: Bytes) -> Response {
    let request: openraft::raft::VoteRequest<NodeId> = match decode(&body) {
        Ok(request) => request,
        Err(m) => return refuse(m),
    };
    if let Err(reason) = speaks_for_itself(&node, &sender, &request.vote) {
        return forbidden(reason);
    }
    encode(&node.raft().vote(request).await)
}

/// Who sent a request, when the node's listener knows (always, in `kith serve`).
type Sender = Option<axum::Extension<axum::extract::ConnectInfo<crate::tls::Peer>>>;

/// With TLS, a member speaks only for itself: an append, snapshot piece or vote request
/// whose vote names another node than the sender's certificate is a 403. So a member's
/// stolen key cannot pose as the leader or as another candidate.
fn speaks_for_itself(node: &Node, sender: &Sender, vote: &Vote<NodeId>) -> Result<(), String> {
    if node.config.tls.is_none() {
        return Ok(());
    }
    let cert = sender.as_ref().and_then(|s| s.0 .0.cert.as_ref());
    let Some(cert) = cert else {
        return Err("no node certificate".into());
    };
    match vote.leader_id().voted_for() {
        Some(named) if named != cert.node_id => Err(format!(
            "node {}'s certificate cannot speak for node {named}",
            cert.node_id
        )),
        _ => Ok(()),
    }
}

/// 403 with the JSON error body, as [`members_only`] answers.
fn forbidden(reason: String) -> Response {
    let body = serde_json::json!({"error": {"code": "not_a_member", "message": reason}});
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// One piece of a snapshot (see the module docs).
async fn snapshot(
    node: Arc<Node>,
    inbox: Arc<Mutex<SnapshotInbox>>,
    sender: Sender,
    body: Bytes,
) -> Response {
    let request: InstallSnapshotRequest<TypeConfig> = match decode(&body) {
        Ok(request) => request,
        Err(m) => return refuse(m),
    };
    if let Err(reason) = speaks_for_itself(&node, &sender, &request.vote) {
        return forbidden(reason);
    }
    drop(body);
    let raft = node.raft();
    let my_vote = match raft.with_raft_state(|state| *state.vote_ref()).await {
        Ok(vote) => vote,
        Err(fatal) => return encode(&SnapshotAnswer::Err(RaftError::Fatal(fatal))),
    };
    let ours = |vote| encode(&SnapshotAnswer::Ok(InstallSnapshotResponse { vote }));
    if !matches!(
        request.vote.partial_cmp(&my_vote),
        Some(Ordering::Greater | Ordering::Equal)
    ) {
        return ours(my_vote);
    }
    // Each piece from the leader is news from a live leader, as in openraft's own chunked
    // receive (which updates the vote per chunk): without it, a follower that receives a
    // snapshot for longer than an election timeout starts an election, the leader steps
    // down and restarts the send, and a large snapshot may never arrive. An empty append
    // that names no earlier entry refreshes the vote and changes no log and no commit.
    if request.vote.is_committed() && !names_this_node(&node, &request.vote) {
        let heartbeat = AppendEntriesRequest {
            vote: request.vote,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        match raft.append_entries(heartbeat).await {
            Ok(_) => {}
            Err(RaftError::Fatal(fatal)) => {
                return encode(&SnapshotAnswer::Err(RaftError::Fatal(fatal)))
            }
            Err(RaftError::APIError(never)) => match never {},
        }
    }
    // A task of its own: the sender may stop waiting (a large install outlasts its
    // timeout), and the install and the inbox's cleanup must still run to the end.
    let raft = raft.clone();
    let task = tokio::spawn(async move {
        let vote = request.vote;
        let mut inbox = inbox.lock().await;
        match inbox.receive(request).await {
            Ok(None) => Ok(SnapshotAnswer::Ok(InstallSnapshotResponse {
                vote: my_vote,
            })),
            Ok(Some(snapshot)) => {
                let installed = raft.install_full_snapshot(vote, snapshot).await;
                inbox.finished();
                Ok(installed.map(Into::into).map_err(RaftError::Fatal))
            }
            Err(refused) => Err(refused),
        }
    });
    match task.await {
        Ok(Ok(answer)) => encode(&answer),
        Ok(Err(refused)) => {
            tracing::warn!(error = %refused, "snapshot piece refused");
            let status = match refused {
                StoreError::SnapshotTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                StoreError::SnapshotOffset { .. } | StoreError::InvalidSnapshot(_) => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, refused.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn forward(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&node.serve_forwarded(request).await),
        Err(m) => refuse(m),
    }
}

/// Sets the fault layer: 204 when applied, 403 when this node does not allow fault injection,
/// 400 for a body that is not `{"delay_ms":N,"drop_per_million":N}`.
async fn faults(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    if !node.faults().is_enabled() {
        return (
            StatusCode::FORBIDDEN,
            "fault injection is off: start kith serve with --enable-fault-injection",
        )
            .into_response();
    }
    let settings: FaultSettings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return refuse(format!("malformed fault settings: {e}")),
    };
    node.faults().set(settings);
    tracing::warn!(?settings, "fault injection settings changed");
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /internal/raft/elect`: stand for election now, as a stopping leader asks its most
/// up-to-date follower to. Safe whoever asks: an election is what any follower starts on
/// its own when it stops hearing a leader, and Raft's vote rules decide it.
async fn elect(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    if let Err(m) = decode::<()>(&body) {
        return refuse(m);
    }
    match node.stand_for_election().await {
        Ok(()) => encode(&()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
