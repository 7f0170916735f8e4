//! The public `/v1/…` routes.
//!
//! Every handler validates its input completely before calling the node, so a refused
//! request changes nothing. Commands are checked with `Command::validate` against the
//! node's limits — the very check the leader repeats before proposing — so a client gets
//! the same error whichever node it asked.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use kith_core::limits::{validate_key, validate_ttl_s, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use kith_core::{Command, NodeId, Response as Applied};
use kith_node::{Consistency, Node};

type Shared = State<Arc<Node>>;

pub fn router(node: Arc<Node>) -> Router {
    // Bodies one byte over the bound are still read so the error can name the limit.
    let body_limit = node.config.value_bytes_max + 1;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/kv", get(list))
        .route("/v1/watch", get(crate::watch::watch))
        .route("/v1/ledger", get(ledger))
        .route("/v1/rooms", get(crate::rooms::list_rooms))
        .route("/v1/rooms/{room}", delete(crate::rooms::delete_room))
        .route(
            "/v1/rooms/{room}/messages",
            get(crate::rooms::history).post(crate::rooms::post_message),
        )
        .route("/v1/rooms/{room}/stream", get(crate::rooms::stream))
        .route("/v1/queues", get(crate::jobs::queues))
        .route("/v1/queues/{q}", delete(crate::jobs::delete_queue))
        .route("/v1/queues/{q}/jobs", post(crate::jobs::enqueue))
        .route("/v1/queues/{q}/claim", post(crate::jobs::claim))
        .route("/v1/queues/{q}/dead", get(crate::jobs::dead))
        .route("/v1/jobs", get(crate::jobs::list))
        .route(
            "/v1/jobs/{id}",
            get(crate::jobs::get_job).delete(crate::jobs::cancel),
        )
        .route("/v1/jobs/{id}/retry", post(crate::jobs::retry))
        .route("/v1/jobs/{id}/{action}", post(crate::jobs::report))
        .route("/v1/dev", get(crate::dev::status))
        .route("/v1/dev/nodes/{id}/{action}", post(crate::dev::act))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        // Applies to the routes above only (axum layers wrap what is already added).
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            count_requests,
        ))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/", get(crate::web::dashboard))
        .route("/chat", get(crate::web::chat))
        .route("/jobs", get(crate::web::jobs))
        .route("/files", get(crate::web::files))
        .route("/assets/{name}", get(crate::web::asset))
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

/// The answer header that names the leader's API address (see [`count_requests`]).
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

/// `Query<T>` whose rejection is a JSON 400.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::bad_request(format!("malformed query: {}", e.body_text())))
    }
}

fn body(result: Result<Bytes, BytesRejection>, bytes_max: usize) -> Result<Bytes, ApiError> {
    result.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                format!("the body is larger than the limit of {bytes_max} bytes"),
            )
        } else {
            ApiError::new(status, "bad_body", e.body_text())
        }
    })
}

fn key_from_path(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_key(&key)?;
    Ok(key)
}

/// A listing's `limit`: `default` when absent, else 1 to `max`.
pub(crate) fn parse_limit(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        limit @ 1.. if limit <= max => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// The position after `n`, a revision or seq a client resumes after: 400 when `n` is the
/// largest integer, which nothing can follow.
pub(crate) fn next_after(n: u64, what: &str) -> Result<u64, ApiError> {
    n.checked_add(1).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{what} must be below {}; nothing can follow it",
            u64::MAX
        ))
    })
}

/// The `Last-Event-ID` header as the integer `what` (a revision or seq), if sent.
pub(crate) fn last_event_id(headers: &HeaderMap, what: &str) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request(format!("Last-Event-ID must be a {what}")))?;
    next_after(n, "Last-Event-ID")?;
    Ok(Some(n))
}

pub(crate) fn parse_consistency(value: Option<&str>) -> Result<Consistency, ApiError> {
    match value {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be 'linearizable' or 'stale', not '{other}'"
        ))),
    }
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

async fn health(State(node): Shared) -> Response {
    let h = node.health();
    let status = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}

async fn cluster(State(node): Shared) -> Response {
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
struct AddMember {
    id: NodeId,
    addr: String,
}

async fn add_member(
    State(node): Shared,
    request: Result<Json<AddMember>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = request.map_err(|e| ApiError::bad_request(e.body_text()))?;
    kith_core::limits::validate_member(request.id, &request.addr)?;
    node.add_member(request.id, request.addr).await?;
    Ok(Json(json!({"added": request.id})).into_response())
}

async fn remove_member(
    State(node): Shared,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("node id must be an integer, got '{id}'")))?;
    node.remove_member(id).await?;
    Ok(Json(json!({"removed": id})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    consistency: Option<String>,
}

async fn get_key(
    State(node): Shared,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Q(query): Q<ReadQuery>,
) -> Result<Response, ApiError> {
    let key = key_from_path(path)?;
    let consistency = parse_consistency(query.consistency.as_deref())?;
    let Some(entry) = node.get(&key, consistency).await? else {
        return Err(ApiError::not_found(format!("key '{key}' not found")));
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("kith-revision", entry.mod_revision.into());
    headers.insert("kith-create-revision", entry.create_revision.into());
    headers.insert("kith-version", entry.version.into());
    if let Some(at) = entry.expires_at_ms {
        headers.insert("kith-expires-at-ms", at.into());
    }
    Ok((headers, entry.value).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteQuery {
    if_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    if_revision: Option<u64>,
    /// Seconds until the key expires.
    ttl: Option<u64>,
}

async fn put_key(
    State(node): Shared,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Q(query): Q<PutQuery>,
    value: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(path)?;
    let value = body(value, node.config.value_bytes_max)?;
    // Seconds are checked first so the error speaks the client's unit; the bound keeps the
    // product far from overflow.
    if let Some(ttl) = query.ttl {
        validate_ttl_s(ttl)?;
    }
    let command = Command::Put {
        key,
        value: value.to_vec(),
        if_revision: query.if_revision,
        ttl_ms: query.ttl.map(|s| s * 1000),
    };
    command.validate(&node.limits())?;
    write_answer(node.write(command).await?)
}

async fn delete_key(
    State(node): Shared,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Q(query): Q<WriteQuery>,
) -> Result<Response, ApiError> {
    let key = key_from_path(path)?;
    let applied = node
        .write(Command::Delete {
            key,
            if_revision: query.if_revision,
        })
        .await?;
    write_answer(applied)
}

fn write_answer(applied: Applied) -> Result<Response, ApiError> {
    match applied {
        Applied::Put { revision } => Ok(Json(json!({"revision": revision})).into_response()),
        Applied::Delete { revision, deleted } => {
            Ok(Json(json!({"revision": revision, "deleted": deleted})).into_response())
        }
        Applied::RevisionMismatch { current } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "revision_mismatch",
            format!("the key's current revision is {current}; nothing was changed"),
        )),
        Applied::Rejected { reason } => Err(ApiError::rejected(reason)),
        Applied::None
        | Applied::Posted { .. }
        | Applied::RoomsFull { .. }
        | Applied::Job(_)
        | Applied::File(_)
        | Applied::RoomDeleted { .. } => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a write produced no result",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    consistency: Option<String>,
}

async fn list(State(node): Shared, Q(query): Q<ListQuery>) -> Result<Response, ApiError> {
    let consistency = parse_consistency(query.consistency.as_deref())?;
    let limit = parse_limit(query.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    if query.prefix.len() > kith_core::limits::KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "prefix is longer than the longest key",
        ));
    }
    let (entries, more, revision) = node.list(&query.prefix, limit, consistency).await?;
    let items: Vec<_> = entries
        .into_iter()
        .map(|(key, e)| {
            let mut item = json!({
                "key": key,
                "revision": e.mod_revision,
                "create_revision": e.create_revision,
                "version": e.version,
            });
            if let Some(at) = e.expires_at_ms {
                item["expires_at_ms"] = json!(at);
            }
            match String::from_utf8(e.value) {
                Ok(text) => item["value"] = json!(text),
                Err(bytes) => {
                    item["value_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes()))
                }
            }
            item
        })
        .collect();
    Ok(Json(json!({"revision": revision, "more": more, "items": items})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    index: Option<u64>,
}

/// `GET /v1/ledger[?index=N]`: this node's ledger head, or its hash at `index` while that is
/// still retained. Always this node's own view — comparing nodes is the point.
async fn ledger(State(node): Shared, Q(query): Q<LedgerQuery>) -> Result<Response, ApiError> {
    let state = node.state();
    let storage = |e: kith_storage::StoreError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
    };
    let head = state.ledger_head().map_err(storage)?;
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
    match state.ledger_at(index).map_err(storage)? {
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
