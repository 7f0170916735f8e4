//! The `/internal/…` peer routes: openraft RPCs and requests forwarded to the leader.
//!
//! Bodies are postcard both ways; answers are `Result`s encoded as-is so the sender sees the
//! receiver's Raft error exactly. These routes are for other kith nodes only.
//!
//! One exception is for the fault suite: `POST /internal/faults` (JSON [`FaultSettings`])
//! sets this node's test-only delay and loss on outgoing peer messages. It answers 403
//! unless the node was started with `--enable-fault-injection`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{de::DeserializeOwned, Serialize};

use kith_node::network::{FaultSettings, POSTCARD};
use kith_node::protocol::route;
use kith_node::Node;

pub fn router(node: Arc<Node>) -> Router {
    let body_limit = kith_node::protocol::peer_body_bytes_max(&node.config);
    Router::new()
        .route(route::APPEND, post(append))
        .route(route::VOTE, post(vote))
        .route(route::SNAPSHOT, post(snapshot))
        .route(route::FORWARD, post(forward))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            refuse_when_isolated,
        ))
        .route("/internal/dev/isolate", post(crate::dev::isolate))
        .route(route::FAULTS, post(faults))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// While the dev playground has cut this node off, peers cannot reach it either.
pub(crate) async fn refuse_when_isolated(
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

async fn append(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&node.raft().append_entries(request).await),
        Err(m) => refuse(m),
    }
}

async fn vote(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&node.raft().vote(request).await),
        Err(m) => refuse(m),
    }
}

async fn snapshot(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&node.raft().install_snapshot(request).await),
        Err(m) => refuse(m),
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
