//! etcd's JSON gateway: the same calls as the gRPC services, as `POST /v3/<service>/<call>`
//! with a JSON body in proto3's JSON mapping (base64 keys and values, 64-bit integers as
//! strings, snake_case names), as etcd's grpc-gateway speaks it; and `GET /version`.
//! Patroni and APISIX talk to etcd this way.
//!
//! `/v3/watch` streams one JSON object per line, each `{"result": WatchResponse}`, for the
//! watch the request body creates. An error answers with the HTTP status etcd's gateway
//! gives its gRPC code and `{"error", "code", "message"}`.
//!
//! The token travels in `Authorization` (etcd's gateway header; `Bearer ` may precede it).
//! Bodies are bounded by [`BODY_BYTES_MAX`] (a larger one is a 413 with the error body).

use std::sync::Arc;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Request, Status};

use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{watch_request, LeaseKeepAliveRequest, WatchRequest};
use crate::Etcd;
use kith_node::Node;

/// Every path the gateway answers with POST.
pub const POST_PATHS: [&str; 18] = [
    "/v3/kv/range",
    "/v3/kv/put",
    "/v3/kv/deleterange",
    "/v3/kv/txn",
    "/v3/kv/compaction",
    "/v3/lease/grant",
    "/v3/lease/revoke",
    "/v3/kv/lease/revoke",
    "/v3/lease/timetolive",
    "/v3/kv/lease/timetolive",
    "/v3/lease/leases",
    "/v3/lease/keepalive",
    "/v3/cluster/member/list",
    "/v3/maintenance/status",
    "/v3/maintenance/alarm",
    "/v3/auth/authenticate",
    "/v3/auth/status",
    "/v3/watch",
];

/// Largest request body the gateway reads (a put's value is bounded again by the node).
pub const BODY_BYTES_MAX: usize = 4 << 20;

/// The gateway's routes (no fallback of their own).
pub fn routes<S: Clone + Send + Sync + 'static>(node: Arc<Node>) -> Router<S> {
    let etcd = Etcd { node };
    macro_rules! call {
        ($trait:ident :: $method:ident) => {{
            let etcd = etcd.clone();
            post(move |headers: HeaderMap, body: Body| {
                let etcd = etcd.clone();
                async move {
                    match decode(&headers, body) {
                        Ok(request) => answer($trait::$method(&etcd, request).await),
                        Err(refused) => *refused,
                    }
                }
            })
        }};
    }
    let watch_etcd = etcd.clone();
    let keepalive_etcd = etcd.clone();
    Router::new()
        .route("/v3/kv/range", call!(Kv::range))
        .route("/v3/kv/put", call!(Kv::put))
        .route("/v3/kv/deleterange", call!(Kv::delete_range))
        .route("/v3/kv/txn", call!(Kv::txn))
        .route("/v3/kv/compaction", call!(Kv::compact))
        .route("/v3/lease/grant", call!(Lease::lease_grant))
        .route("/v3/lease/revoke", call!(Lease::lease_revoke))
        .route("/v3/kv/lease/revoke", call!(Lease::lease_revoke))
        .route("/v3/lease/timetolive", call!(Lease::lease_time_to_live))
        .route("/v3/kv/lease/timetolive", call!(Lease::lease_time_to_live))
        .route("/v3/lease/leases", call!(Lease::lease_leases))
        .route(
            "/v3/lease/keepalive",
            post(move |headers: HeaderMap, body: Body| {
                keepalive(keepalive_etcd.clone(), headers, body)
            }),
        )
        .route("/v3/cluster/member/list", call!(Cluster::member_list))
        .route("/v3/maintenance/status", call!(Maintenance::status))
        .route("/v3/maintenance/alarm", call!(Maintenance::alarm))
        .route("/v3/auth/authenticate", call!(Auth::authenticate))
        .route("/v3/auth/status", call!(Auth::auth_status))
        .route(
            "/v3/watch",
            post(move |headers: HeaderMap, body: Body| watch(watch_etcd.clone(), headers, body)),
        )
        .route("/version", get(version))
        // Above the node's own bound on /v1 bodies: a value travels in base64 here.
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
}

/// A body the gateway refused before parsing it: too large (413) or unreadable (400).
type Body = Result<Bytes, BytesRejection>;

/// `GET /version`, as etcd answers it (the API level kith speaks).
async fn version() -> Response {
    axum::Json(serde_json::json!({
        "etcdserver": "3.5.0",
        "etcdcluster": "3.5.0",
        "kith": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// The body as the call's message, with the caller's token as metadata; or the answer
/// that refuses it.
fn decode<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<Request<T>, Box<Response>> {
    let body = body.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is larger than the limit of {BODY_BYTES_MAX} bytes")
        } else {
            e.body_text()
        };
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            Code::ResourceExhausted
        } else {
            Code::InvalidArgument
        };
        let body = serde_json::json!({"error": message, "code": code as i32, "message": message});
        Box::new((status, axum::Json(body)).into_response())
    })?;
    // An empty body is the empty message, as etcd's gateway takes it.
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let message: T = serde_json::from_slice(text).map_err(|e| {
        Box::new(failure(Status::invalid_argument(format!(
            "the body is not the call's JSON: {e}"
        ))))
    })?;
    let mut request = Request::new(message);
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        if let Ok(value) = token.parse() {
            request.metadata_mut().insert("token", value);
        }
    }
    Ok(request)
}

fn answer<T: Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(response) => axum::Json(response.into_inner()).into_response(),
        Err(status) => failure(status),
    }
}

/// The HTTP status etcd's gateway gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failure(status: Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    });
    (http_status(status.code()), axum::Json(body)).into_response()
}

/// `POST /v3/watch`: the body creates one watch; its responses stream as JSON lines.
async fn watch(etcd: Etcd, headers: HeaderMap, body: Body) -> Response {
    let request: Request<WatchRequest> = match decode(&headers, body) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let (metadata, _, message) = request.into_parts();
    if !matches!(
        message.request_union,
        Some(watch_request::RequestUnion::CreateRequest(_))
    ) {
        return failure(Status::invalid_argument(
            "the body of /v3/watch is a create_request",
        ));
    }
    // The one request, then nothing more: the watch lives until the client goes away.
    let inbound =
        futures::stream::once(async move { Ok(message) }).chain(futures::stream::pending());
    let responses = match etcd.open_watch(metadata, Box::pin(inbound)) {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let lines = responses.map(|item| {
        let object = match item {
            Ok(response) => serde_json::json!({ "result": response }),
            Err(status) => serde_json::json!({
                "error": {
                    "grpc_code": status.code() as i32,
                    "http_code": http_status(status.code()).as_u16(),
                    "message": status.message(),
                    "http_status": http_status(status.code()).canonical_reason(),
                }
            }),
        };
        let mut line = serde_json::to_vec(&object).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(HttpBody::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `POST /v3/lease/keepalive`: one keep-alive, answered as the stream's one message.
async fn keepalive(etcd: Etcd, headers: HeaderMap, body: Body) -> Response {
    let request: Request<LeaseKeepAliveRequest> = match decode(&headers, body) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    match etcd.keep_alive_once(request).await {
        Ok(answer) => axum::Json(serde_json::json!({ "result": answer })).into_response(),
        Err(e) => failure(e),
    }
}
