//! The receiving half of the file chunk routes: store a chunk a peer sends, return a local
//! copy, and say which of a list of chunks are here. The files module decides what to do
//! with them (`crate::files::peers`); this module only decodes, bounds and answers.
//!
//! Refuses: a chunk body past `CHUNK_BYTES_MAX`, a hash list past `HAVE_HASHES_MAX`, and more
//! than [`CHUNK_BODY_BYTES_IN_FLIGHT_MAX`] bytes of chunk bodies at once (a PUT past that
//! waits for room before its body is read; the uploader's own timeout bounds the wait).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;

use kith_core::files::{self, parse_hex, Hash};

use super::route;
use crate::files::HAVE_HASHES_MAX;
use crate::{Node, NodeError};

/// Bytes of peer chunk bodies this node holds in memory at once. A chunk is read whole
/// (to verify its hash before it is stored), so without a budget a burst of chunk PUTs could
/// hold a chunk each. A PUT past the budget waits for room before its body is read; the
/// uploader's own timeout bounds that wait.
pub const CHUNK_BODY_BYTES_IN_FLIGHT_MAX: usize = 256 * 1024 * 1024;

/// The peer routes that move chunks between nodes, for [`super::server::router`] to mount
/// (behind its refusal while the node is cut off).
pub fn router(node: Arc<Node>) -> Router {
    let budget = Arc::new(tokio::sync::Semaphore::new(CHUNK_BODY_BYTES_IN_FLIGHT_MAX));
    let put_route =
        move |state: State<Arc<Node>>, hash: Path<String>, headers: HeaderMap, body: Body| {
            let budget = budget.clone();
            async move {
                let declared = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(files::CHUNK_BYTES_MAX as usize);
                let bytes = declared.clamp(1, files::CHUNK_BYTES_MAX as usize) as u32;
                let Ok(_room) = budget.acquire_many_owned(bytes).await else {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                };
                put_chunk(state, hash, body).await
            }
        };
    Router::new()
        .route(
            &format!("{}/{{hash}}", route::CHUNKS),
            put(put_route).get(get_chunk),
        )
        .route(route::HAVE, post(have))
        .layer(DefaultBodyLimit::disable())
        .with_state(node)
}

fn chunk_hash(text: &str) -> Option<Hash> {
    parse_hex(text)
}

fn not_a_hash() -> Response {
    (StatusCode::BAD_REQUEST, "not a chunk hash").into_response()
}

async fn put_chunk(
    State(node): State<Arc<Node>>,
    Path(hash): Path<String>,
    body: Body,
) -> Response {
    let Some(hash) = chunk_hash(&hash) else {
        return not_a_hash();
    };
    let bytes: Bytes = match axum::body::to_bytes(body, files::CHUNK_BYTES_MAX as usize).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "chunk too large").into_response(),
    };
    match node.accept_chunk(hash, bytes).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(NodeError::InvalidInput(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        // The uploader reads the usage back and tries the next holder in line.
        Err(NodeError::QuotaExceeded(usage)) => {
            (StatusCode::INSUFFICIENT_STORAGE, axum::Json(usage)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn get_chunk(State(node): State<Arc<Node>>, Path(hash): Path<String>) -> Response {
    let Some(hash) = chunk_hash(&hash) else {
        return not_a_hash();
    };
    match node.local_chunk(hash).await {
        Ok(Some(bytes)) => bytes.into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no copy here").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn have(State(node): State<Arc<Node>>, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, HAVE_HASHES_MAX * 33 + 16).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too many hashes").into_response();
    };
    let hashes: Vec<Hash> = match postcard::from_bytes(&bytes) {
        Ok(h) => h,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match node.have_chunks(hashes).await {
        Ok(answer) => match postcard::to_allocvec(&answer) {
            Ok(b) => b.into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
