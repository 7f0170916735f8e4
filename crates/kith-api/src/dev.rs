//! The playground routes: kill, pause, resume, restart, isolate, heal, add and tamper with a
//! node from the dashboard and the lessons, start or stop the supervisor's own workers
//! (`/v1/dev/workers`), and a node's newest log entries for the lessons page (`/v1/dev/log`). They exist only on nodes started by `kith dev` (which passes its
//! control URL); everywhere else they answer 403, so a production node can never be told to
//! stop or cut itself off through its API.
//!
//! ```text
//! browser ──POST /v1/dev/nodes/2/pause──▶ any node ──POST /nodes/2/pause──▶ kith dev
//!                                                           (SIGSTOP, SIGCONT, SIGKILL, spawn,
//!                                                            or POST /internal/dev/isolate)
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::params::Q;
use kith_node::Node;

/// The most log entries `GET /v1/dev/log` lists.
pub const LOG_ENTRIES_MAX: u64 = 32;
/// What `GET /v1/dev/log` lists without `?count=`.
const LOG_ENTRIES_DEFAULT: u64 = 16;

/// The most workers `POST /v1/dev/workers` asks `kith dev` for.
pub const WORKERS_MAX: u64 = 4;

/// The actions the supervisor knows.
/// `add` starts node `id` (the next one) and has it join the cluster; `tamper` restarts it
/// with one ledger entry altered.
pub const ACTIONS: [&str; 8] = [
    "kill", "pause", "resume", "restart", "isolate", "heal", "add", "tamper",
];

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "not_dev",
        "the playground is only available on nodes started by `kith dev`",
    )
}

/// `GET /v1/dev`: whether this node offers the playground.
pub async fn status(State(node): State<Arc<Node>>) -> Response {
    Json(json!({
        "enabled": node.config.dev_control.is_some(),
        "node_id": node.config.id,
        "isolated": node.is_isolated(),
        "actions": ACTIONS,
    }))
    .into_response()
}

/// `POST /v1/dev/nodes/{id}/{action}`: asks the `kith dev` supervisor to act on a node.
pub async fn act(
    State(node): State<Arc<Node>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Some(control) = &node.config.dev_control else {
        return Err(forbidden());
    };
    // Strings first, then a number: a typed path would answer a bad id with axum's plain-text
    // rejection, and every /v1 error is JSON.
    let Path((id, action)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("node id '{id}' is not a number")))?;
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown action '{action}'; one of {}",
            ACTIONS.join(", ")
        )));
    }
    supervise(control, &format!("/nodes/{id}/{action}"), None).await
}

/// Passes a request on to the supervisor and its answer back.
async fn supervise(
    control: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Response, ApiError> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut request = http.post(format!("{control}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "supervisor_unreachable",
            format!("kith dev did not answer: {e}"),
        )
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = answer.json().await.unwrap_or(json!({}));
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersBody {
    count: u64,
    queue: Option<String>,
}

/// `POST /v1/dev/workers {"count": N, "queue": Q}`: has `kith dev` stop the workers it
/// started before and start N (0 to [`WORKERS_MAX`]) on queue Q, each a real `kith worker`
/// process running the supervisor's own fixed job command. `count` 0 only stops them.
pub async fn workers(
    State(node): State<Arc<Node>>,
    body: Result<Json<WorkersBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Some(control) = &node.config.dev_control else {
        return Err(forbidden());
    };
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if body.count > WORKERS_MAX {
        return Err(ApiError::bad_request(format!(
            "count must be 0 to {WORKERS_MAX}"
        )));
    }
    if body.count > 0 {
        let queue = body
            .queue
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("give the queue the workers work on"))?;
        kith_core::limits::validate_room(queue).map_err(|_| {
            ApiError::bad_request("queue must be 1 to 64 letters, digits, '-', '_' or '.'")
        })?;
    }
    let forwarded = json!({"count": body.count, "queue": body.queue});
    supervise(control, "/workers", Some(forwarded)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolate {
    isolated: bool,
}

/// The dev-only routes mounted beside the public table: the supervisor's
/// `/internal/dev/isolate`, which stays reachable while the node is cut off (it is how the
/// node is healed). The lessons page `/learn` and `/v1/dev/log` are in the route table
/// (`routes`), with the other public routes.
pub fn supervisor_router(node: Arc<Node>) -> Router {
    let body_limit = kith_node::peer::protocol::peer_body_bytes_max(&node.config);
    Router::new()
        .route("/internal/dev/isolate", post(isolate))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// `POST /internal/dev/isolate {"isolated": bool}`: the supervisor cuts this node off from
/// its peers or heals it.
pub async fn isolate(
    State(node): State<Arc<Node>>,
    body: Result<Json<Isolate>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if node.config.dev_control.is_none() {
        return Err(forbidden());
    }
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    node.set_isolated(body.isolated);
    tracing::warn!(
        isolated = body.isolated,
        "dev playground changed this node's isolation"
    );
    Ok(Json(json!({"isolated": body.isolated})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    count: Option<u64>,
}

/// `GET /v1/dev/log[?count=N]`: this node's newest log entries (index, term, kind) and its
/// commit index, for the lessons page's synchronization lesson. Dev only: it shows the
/// log's shape, which no client needs.
pub async fn log(
    State(node): State<Arc<Node>>,
    Q(query): Q<LogQuery>,
) -> Result<Response, ApiError> {
    if node.config.dev_control.is_none() {
        return Err(forbidden());
    }
    let count = query.count.unwrap_or(LOG_ENTRIES_DEFAULT);
    if !(1..=LOG_ENTRIES_MAX).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {LOG_ENTRIES_MAX}"
        )));
    }
    let entries: Vec<serde_json::Value> = node
        .recent_log_entries(count)
        .await
        .into_iter()
        .map(|(index, term, kind)| json!({"index": index, "term": term, "kind": kind}))
        .collect();
    let health = node.health();
    Ok(Json(json!({
        "node_id": node.config.id,
        "role": health.role,
        "term": health.term,
        "commit_index": health.commit_index,
        "applied_index": health.applied_index,
        "entries": entries,
    }))
    .into_response())
}
