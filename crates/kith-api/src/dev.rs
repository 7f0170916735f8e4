//! The playground routes: kill, pause, resume, restart, isolate and heal a node from the
//! dashboard. They exist only on nodes started by `kith dev` (which passes its control URL);
//! everywhere else they answer 403, so a production node can never be told to stop or cut
//! itself off through its API.
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
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use kith_node::Node;

/// The actions the supervisor knows.
pub const ACTIONS: [&str; 6] = ["kill", "pause", "resume", "restart", "isolate", "heal"];

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
    Path((id, action)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    let Some(control) = &node.config.dev_control else {
        return Err(forbidden());
    };
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown action '{action}'; one of {}",
            ACTIONS.join(", ")
        )));
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let answer = http
        .post(format!("{control}/nodes/{id}/{action}"))
        .send()
        .await
        .map_err(|e| {
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
pub struct Isolate {
    isolated: bool,
}

/// The dev-only routes mounted beside the public table: the supervisor's
/// `/internal/dev/isolate`, which stays reachable while the node is cut off (it is how the
/// node is healed), and the lessons page `/learn` that drives the playground.
pub fn supervisor_router(node: Arc<Node>) -> Router {
    let body_limit = kith_node::peer::protocol::peer_body_bytes_max(&node.config);
    Router::new()
        .route("/internal/dev/isolate", post(isolate))
        .route("/learn", get(crate::web::learn))
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
