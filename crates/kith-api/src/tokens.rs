//! `/v1/tokens`: create, list and revoke client tokens (administrators only: see `access`),
//! and `POST /v1/login`, which checks a token and keeps it in the browser's `HttpOnly`
//! cookie for this node's pages.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::TOKEN_COOKIE;
use crate::error::ApiError;
use kith_core::auth::{Grant, Role, TokenRecord, GRANTS_MAX};
use kith_node::Node;

type Shared = State<Arc<Node>>;
type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Tokens `GET /v1/tokens` lists at most.
const TOKENS_LISTED_MAX: usize = 10_000;
/// The longest a login cookie lives, in seconds (the token's own expiry still applies).
const LOGIN_COOKIE_MAX_AGE_S: u64 = 12 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    role: String,
    #[serde(default)]
    prefixes: Vec<String>,
    ttl_s: Option<u64>,
    #[serde(default)]
    name: String,
}

/// A token record as clients see it: never its hash.
fn shown(t: &TokenRecord) -> Value {
    let grants: Vec<String> = t.grants.iter().map(Grant::to_string).collect();
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role.name(),
        "prefixes": grants,
        "created_ms": t.created_ms,
        "expires_ms": t.expires_ms,
        "revoked_ms": t.revoked_ms,
    })
}

/// `POST /v1/tokens {"role", "prefixes"?, "ttl_s"?, "name"?}` → 201 with the token, shown
/// this once.
pub(crate) async fn create(
    State(node): Shared,
    body: Body<NewToken>,
) -> Result<Response, ApiError> {
    let Json(new) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let role = Role::parse(&new.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown role '{}': one of admin, write, read, worker, monitor",
            new.role
        ))
    })?;
    if new.prefixes.len() > GRANTS_MAX {
        return Err(ApiError::bad_request(format!(
            "a token carries at most {GRANTS_MAX} prefixes"
        )));
    }
    let grants = new
        .prefixes
        .iter()
        .map(|p| Grant::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::bad_request)?;
    let (record, token) = node.create_token(role, grants, new.ttl_s, new.name).await?;
    let mut body = shown(&record);
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/tokens`: every token record, revoked ones too.
pub(crate) async fn list(State(node): Shared) -> Result<Response, ApiError> {
    let tokens: Vec<Value> = node.tokens(TOKENS_LISTED_MAX)?.iter().map(shown).collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `DELETE /v1/tokens/{id}`: revokes it on every node (as soon as each applies it).
pub(crate) async fn revoke(
    State(node): Shared,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let revoked = node.revoke_token(&id).await?;
    Ok(Json(json!({ "id": id, "revoked": revoked })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    token: String,
}

/// `POST /v1/login {"token"}`: 200 and the `kith_token` cookie (`HttpOnly; Secure;
/// SameSite=Strict`) when the token is live, 401 otherwise.
pub(crate) async fn login(State(node): Shared, body: Body<Login>) -> Result<Response, ApiError> {
    let Json(login) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let record = node
        .authenticate(&login.token)
        .map_err(|reason| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason))?;
    let cookie = format!(
        "{TOKEN_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={LOGIN_COOKIE_MAX_AGE_S}",
        login.token.trim()
    );
    let mut response = Json(json!({"id": record.id, "role": record.role.name()})).into_response();
    let value = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::bad_request("the token holds characters a cookie cannot"))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}
