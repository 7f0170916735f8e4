//! The key-value routes: `GET`/`PUT`/`DELETE /v1/kv/{key}` and `GET /v1/kv` (list by
//! prefix).
//!
//! Every handler validates its input completely before calling the node, so a refused
//! request changes nothing. Commands are checked with `Command::validate` against the
//! node's limits — the very check the leader repeats before proposing — so a client gets
//! the same error whichever node it asked. Reads go through [`Node::read`] with the
//! client's consistency.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::params::{parse_consistency, parse_limit, Q};
use kith_core::limits::{validate_key, validate_ttl_s, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use kith_core::{Command, Response as Applied};
use kith_node::{Node, NodeError};

type Shared = State<Arc<Node>>;

/// The request body, or the 413 that names the limit (or 400) when it could not be read.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    consistency: Option<String>,
}

pub(crate) async fn get_key(
    State(node): Shared,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    Q(query): Q<ReadQuery>,
) -> Result<Response, ApiError> {
    let key = key_from_path(path)?;
    let consistency = parse_consistency(query.consistency.as_deref())?;
    let state = node.read(consistency).await?;
    let Some(entry) = state.get(&key).map_err(NodeError::from)? else {
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
pub(crate) struct WriteQuery {
    if_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutQuery {
    if_revision: Option<u64>,
    /// Seconds until the key expires.
    ttl: Option<u64>,
}

pub(crate) async fn put_key(
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

pub(crate) async fn delete_key(
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
        | Applied::RoomDeleted { .. }
        | Applied::Token(_)
        | Applied::Txn { .. }
        | Applied::Lease { .. } => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a write produced no result",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    consistency: Option<String>,
}

pub(crate) async fn list(
    State(node): Shared,
    Q(query): Q<ListQuery>,
) -> Result<Response, ApiError> {
    let consistency = parse_consistency(query.consistency.as_deref())?;
    let limit = parse_limit(query.limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    if query.prefix.len() > kith_core::limits::KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "prefix is longer than the longest key",
        ));
    }
    let state = node.read(consistency).await?;
    let (entries, more, revision) = state.list(&query.prefix, limit).map_err(NodeError::from)?;
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
