//! The table of routes: every public path, its method, its access rule and its handler, in
//! one place (the files routes are in `files`, built the same way), with
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
use axum::Router;

use crate::access::{Name, RouteRule, Routes, Rule};
use crate::error::ApiError;
use crate::{backup, cluster, dev, jobs, kv, metrics, rooms, tokens, watch, web};
use kith_node::Node;

type Shared = State<Arc<Node>>;

/// The public routes that count as API requests (`count_requests`), each with its access
/// rule (see `access`).
fn counted_routes() -> Routes {
    use kith_core::auth::Capability::{Kv, Queues, Rooms};
    use Name::{All, Param, Query, QueueOfJob};
    Routes::new()
        .get("/v1/health", Rule::Open, cluster::health)
        .get("/v1/cluster", Rule::Monitor, cluster::cluster)
        .post("/v1/cluster/members", Rule::Membership, cluster::add_member)
        .delete(
            "/v1/cluster/members/{id}",
            Rule::Membership,
            cluster::remove_member,
        )
        .get("/v1/kv", Rule::Read(Kv, Query("prefix")), kv::list)
        .get("/v1/watch", Rule::Read(Kv, Query("prefix")), watch::watch)
        .get("/v1/ledger", Rule::Monitor, cluster::ledger)
        .get("/v1/rooms", Rule::Read(Rooms, All), rooms::list_rooms)
        .delete(
            "/v1/rooms/{room}",
            Rule::Write(Rooms, Param("room")),
            rooms::delete_room,
        )
        .get(
            "/v1/rooms/{room}/messages",
            Rule::Read(Rooms, Param("room")),
            rooms::history,
        )
        .post(
            "/v1/rooms/{room}/messages",
            Rule::Write(Rooms, Param("room")),
            rooms::post_message,
        )
        .get(
            "/v1/rooms/{room}/stream",
            Rule::Read(Rooms, Param("room")),
            rooms::stream,
        )
        .get("/v1/queues", Rule::Read(Queues, All), jobs::queues)
        .delete(
            "/v1/queues/{q}",
            Rule::Write(Queues, Param("q")),
            jobs::delete_queue,
        )
        .post(
            "/v1/queues/{q}/jobs",
            Rule::Write(Queues, Param("q")),
            jobs::enqueue,
        )
        .post("/v1/queues/{q}/claim", Rule::Work(Param("q")), jobs::claim)
        .get(
            "/v1/queues/{q}/dead",
            Rule::Read(Queues, Param("q")),
            jobs::dead,
        )
        .get("/v1/jobs", Rule::Read(Queues, Query("queue")), jobs::list)
        .get(
            "/v1/jobs/{id}",
            Rule::Read(Queues, QueueOfJob),
            jobs::get_job,
        )
        .delete(
            "/v1/jobs/{id}",
            Rule::Write(Queues, QueueOfJob),
            jobs::cancel,
        )
        .post(
            "/v1/jobs/{id}/retry",
            Rule::Write(Queues, QueueOfJob),
            jobs::retry,
        )
        .post(
            "/v1/jobs/{id}/{action}",
            Rule::Work(QueueOfJob),
            jobs::report,
        )
        .get("/v1/dev", Rule::Monitor, dev::status)
        .get("/v1/dev/log", Rule::Monitor, dev::log)
        .post("/v1/dev/nodes/{id}/{action}", Rule::Admin, dev::act)
        .post("/v1/dev/workers", Rule::Admin, dev::workers)
        .get("/v1/backup", Rule::Admin, backup::backup)
        .get("/v1/tokens", Rule::Admin, tokens::list)
        .post("/v1/tokens", Rule::Admin, tokens::create)
        .delete("/v1/tokens/{id}", Rule::Admin, tokens::revoke)
        .post("/v1/login", Rule::Open, tokens::login)
        .get("/v1/kv/{*key}", Rule::Read(Kv, Param("key")), kv::get_key)
        .put("/v1/kv/{*key}", Rule::Write(Kv, Param("key")), kv::put_key)
        .delete(
            "/v1/kv/{*key}",
            Rule::Write(Kv, Param("key")),
            kv::delete_key,
        )
}

/// The probes, metrics and web pages (not counted as API requests).
fn other_routes() -> Routes {
    Routes::new()
        .get("/livez", Rule::Open, cluster::livez)
        .get("/readyz", Rule::Open, cluster::readyz)
        .get("/metrics", Rule::Monitor, metrics::metrics)
        .get("/", Rule::Open, web::dashboard)
        .get("/chat", Rule::Open, web::chat)
        .get("/jobs", Rule::Open, web::jobs)
        .get("/files", Rule::Open, web::files)
        .get("/login", Rule::Open, web::login)
        .get("/learn", Rule::Open, web::learn)
        .get("/assets/{name}", Rule::Open, web::asset)
}

/// Every public route's (method, path, rule), the files routes' included: exactly what the
/// routers register, since both come from the same builders.
pub fn rules() -> Vec<RouteRule> {
    let mut rules = counted_routes().finish().1;
    rules.extend(other_routes().finish().1);
    rules.extend(crate::files::routes().finish().1);
    rules.extend(
        kith_etcd::paths()
            .into_iter()
            .map(|(method, path)| (method, path, Rule::Etcd)),
    );
    rules
}

/// The public routes (not the files routes: `files::router`).
pub fn router(node: Arc<Node>) -> Router {
    // Bodies one byte over the bound are still read so the error can name the limit.
    let body_limit = node.config.value_bytes_max + 1;
    let (counted, _) = counted_routes().finish();
    let (other, _) = other_routes().finish();
    counted
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            count_requests,
        ))
        .merge(other)
        // etcd's v3 API (gRPC): its paths are `/etcdserverpb.<Service>/<Call>`, none of
        // which is a kith route.
        .merge(kith_etcd::routes(node.clone()))
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

/// Which pages may call the public API from a browser: the members' own (the web UI served
/// by one node keeps talking to the others when its own node dies) and the origins given
/// with `--cors-origin`; no credentials are involved. `/internal` never answers a browser.
pub(crate) fn cors(node: Arc<Node>) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, Method};
    let allowed = move |origin: &axum::http::HeaderValue, parts: &axum::http::request::Parts| {
        if parts.uri.path().starts_with("/internal") {
            return false;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        node.config.cors_origins.iter().any(|o| o == origin) || node.is_member_origin(origin)
    };
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::predicate(allowed))
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
