//! Client-visible errors: `{"error":{"code","message"}}` with a fitting status. The mapping
//! from every internal condition to a status lives here, in the `From` impls for
//! [`NodeError`] and [`StoreError`], so handlers use `?`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kith_node::NodeError;
use kith_storage::StoreError;
use serde_json::json;

/// An error answer. `code` is a stable machine-readable word; `message` is for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra machine-readable fields merged into the `error` object.
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds a machine-readable field to the error object.
    pub fn with(mut self, field: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .insert(field.to_owned(), value.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        // The same answer whether the route or the leader refused the input.
        let e = match e {
            NodeError::InvalidInput(invalid) => return invalid.into(),
            other => other,
        };
        let status = match &e {
            NodeError::NoLeader
            | NodeError::Timeout { .. }
            | NodeError::LeaderUnreachable { .. }
            | NodeError::Busy { .. }
            | NodeError::InsufficientReplicas { .. }
            | NodeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::FileTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            NodeError::BadBody(_) => StatusCode::BAD_REQUEST,
            NodeError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            NodeError::Membership(_) => StatusCode::CONFLICT,
            NodeError::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
            NodeError::Storage(_) | NodeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = match &e {
            NodeError::NoLeader => "no_leader",
            NodeError::Timeout { .. } => "timeout",
            NodeError::LeaderUnreachable { .. } => "leader_unreachable",
            NodeError::ShuttingDown => "shutting_down",
            NodeError::Busy { .. } => "busy",
            NodeError::InsufficientReplicas { .. } => "insufficient_replicas",
            NodeError::FileTooLarge { .. } => "too_large",
            NodeError::BadBody(_) => "bad_body",
            NodeError::InvalidInput(_) => "invalid_input",
            NodeError::Membership(_) => "membership",
            NodeError::QuotaExceeded(_) => "quota_exceeded",
            NodeError::Storage(_) => "storage",
            NodeError::Internal(_) => "internal",
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A failed read of this node's applied state (`Node::read`): 500 `storage` with the store's
/// own message. The kv and files reads answer as the node's own reads do, through
/// [`NodeError::Storage`] above (message `storage: …`): they convert with `NodeError::from`.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
    }
}

impl From<kith_core::limits::InvalidInput> for ApiError {
    fn from(e: kith_core::limits::InvalidInput) -> Self {
        let status = if e.is_too_large() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "invalid_input", e.to_string())
    }
}

impl ApiError {
    /// A command the state machine refused on apply ([`kith_core::Response::Rejected`]):
    /// it broke an input rule the leader should have caught; nothing changed.
    pub fn rejected(reason: String) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(object)) = (self.details, error.as_object_mut()) {
            object.extend(details);
        }
        let body = json!({ "error": error });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Leader elections settle within about one election timeout.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
