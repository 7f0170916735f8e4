//! The table of routes: every public path, its method and its handler, in one place, with
//! the layers that wrap them all (request counting, the leader header, CORS, body limit) and
//! the JSON answers for an unknown route or a wrong method.
//!
//! Refuses: handling requests itself; each handler lives with its domain (`kv`, `cluster`,
//! `watch`, `rooms`, `jobs`, `files`, `web`, `metrics`, `dev`), and none of them imports
//! this module, so the table can name them all without a circle.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::error::ApiError;
use crate::{cluster, dev, jobs, kv, metrics, rooms, watch, web};
use kith_node::Node;

type Shared = State<Arc<Node>>;

pub fn router(node: Arc<Node>) -> Router {
    // Bodies one byte over the bound are still read so the error can name the limit.
    let body_limit = node.config.value_bytes_max + 1;
    Router::new()
        .route("/v1/health", get(cluster::health))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/v1/kv", get(kv::list))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/ledger", get(cluster::ledger))
        .route("/v1/rooms", get(rooms::list_rooms))
        .route("/v1/rooms/{room}", delete(rooms::delete_room))
        .route(
            "/v1/rooms/{room}/messages",
            get(rooms::history).post(rooms::post_message),
        )
        .route("/v1/rooms/{room}/stream", get(rooms::stream))
        .route("/v1/queues", get(jobs::queues))
        .route("/v1/queues/{q}", delete(jobs::delete_queue))
        .route("/v1/queues/{q}/jobs", post(jobs::enqueue))
        .route("/v1/queues/{q}/claim", post(jobs::claim))
        .route("/v1/queues/{q}/dead", get(jobs::dead))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get_job).delete(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/{action}", post(jobs::report))
        .route("/v1/dev", get(dev::status))
        .route("/v1/dev/nodes/{id}/{action}", post(dev::act))
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        )
        // Applies to the routes above only (axum layers wrap what is already added).
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            count_requests,
        ))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(web::dashboard))
        .route("/chat", get(web::chat))
        .route("/jobs", get(web::jobs))
        .route("/files", get(web::files))
        .route("/assets/{name}", get(web::asset))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// Counts public API requests for `/v1/health` and `/metrics`, and names the leader in the
/// answer to every write (`kith-leader: http://ADDR`), so a client can send its next writes
/// there directly instead of through this node's forwarder (one hop and one peer call
/// fewer per write; see ARCHITECTURE.md, "How a write flows").
pub(crate) async fn count_requests(
    State(node): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    node.stats.requests.fetch_add(1, Relaxed);
    let method = request.method();
    let write = method != axum::http::Method::GET && method != axum::http::Method::HEAD;
    if !write {
        return next.run(request).await;
    }
    node.stats.writes.fetch_add(1, Relaxed);
    let mut response = next.run(request).await;
    // Read after the write: if it moved leadership, the answer names the new leader.
    if let Some(url) = node.leader_url() {
        if let Ok(value) = axum::http::HeaderValue::try_from(url) {
            response.headers_mut().insert(LEADER_HEADER, value);
        }
    }
    response
}

/// The answer header that names the leader's API address (set by `count_requests` above).
pub const LEADER_HEADER: &str = "kith-leader";

/// The public API may be called from any origin: the web UI served by one node keeps
/// talking to the others when its own node dies. No credentials are involved.
pub(crate) fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("kith-revision"),
            HeaderName::from_static("kith-create-revision"),
            HeaderName::from_static("kith-version"),
            HeaderName::from_static("kith-expires-at-ms"),
            HeaderName::from_static("kith-file-version"),
            HeaderName::from_static(LEADER_HEADER),
            header::ETAG,
            header::CONTENT_RANGE,
            header::CONTENT_DISPOSITION,
        ])
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
