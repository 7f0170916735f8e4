//! Files over HTTP: `/v1/files/…`, `/v1/shares/…`, the share links `/s/{token}`, and the
//! peer chunk routes `/internal/chunks/…` (docs/FILES.md is the contract).
//!
//! Upload and download bodies are streamed: an upload goes frame by frame into
//! [`Node::upload`], a download comes out of [`Node::read_file`] chunk by chunk, so a node's
//! memory does not grow with the size of a file. This router therefore disables axum's
//! default body limit; every body it reads whole (share requests, peer chunks) is read with
//! an explicit bound instead.
//!
//! Refuses: deciding where chunks go or whether a file exists (that is `kith-node`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::access::{Name, Routes, Rule};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::{parse_consistency, parse_limit, Q};
use kith_core::files::{self, hex, FileExplain, FileInfo, Manifest, Share};
use kith_node::files::ShareLookup;
use kith_node::{Consistency, Node};

type Shared = State<Arc<Node>>;
type PathResult = Result<Path<String>, axum::extract::rejection::PathRejection>;

/// Largest share request body (`{"expires_in_s":N}`).
const SHARE_BODY_BYTES_MAX: usize = 4096;
/// Share links `GET /v1/shares` returns at most.
const SHARES_LISTED_MAX: usize = 1000;

/// The public files routes, each with its access rule (see `access`).
pub fn routes() -> Routes {
    use kith_core::auth::Capability::Files;
    Routes::new()
        .get("/v1/files", Rule::Read(Files, Name::Query("prefix")), list)
        .get(
            "/v1/files/{*path}",
            Rule::Read(Files, Name::Param("path")),
            download,
        )
        .put(
            "/v1/files/{*path}",
            Rule::Write(Files, Name::Param("path")),
            upload,
        )
        .delete(
            "/v1/files/{*path}",
            Rule::Write(Files, Name::Param("path")),
            remove,
        )
        .post(
            "/v1/files/{*path}",
            Rule::Write(Files, Name::Param("path")),
            share,
        )
        // Every share link's token: only administrators list or revoke them.
        .get("/v1/shares", Rule::Admin, list_shares)
        .delete("/v1/shares/{token}", Rule::Admin, revoke)
        // A share link is a capability by design: whoever holds it may download.
        .get("/s/{token}", Rule::Open, shared)
}

/// The public files routes.
pub fn router(node: Arc<Node>) -> Router {
    routes()
        .finish()
        .0
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            crate::routes::count_requests,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(node)
}

fn file_path(path: PathResult) -> Result<String, ApiError> {
    let Path(path) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    files::validate_path(&path)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.to_string()))?;
    Ok(path)
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found(format!("no file at '{path}'"))
}

/// A manifest as clients see it (without the chunk list); `replicas` is
/// [`Node::file_replicas`], read once per response.
fn summary(replicas: usize, m: &Manifest) -> Value {
    json!(FileInfo::new(m, replicas))
}

async fn upload(
    State(node): Shared,
    path: PathResult,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = file_path(path)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => "application/octet-stream".to_owned(),
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Content-Type must be visible ASCII"))?;
            if text.len() > files::CONTENT_TYPE_BYTES_MAX {
                return Err(ApiError::bad_request(
                    "Content-Type is longer than 255 bytes",
                ));
            }
            text.to_owned()
        }
    };
    let content_length = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?,
        ),
    };
    let manifest = node
        .upload(
            &path,
            &content_type,
            content_length,
            body.into_data_stream(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(summary(node.file_replicas(), &manifest)),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    consistency: Option<String>,
    explain: Option<String>,
}

async fn download(
    State(node): Shared,
    method: Method,
    path: PathResult,
    Q(query): Q<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = parse_consistency(query.consistency.as_deref())?;
    let path = file_path(path)?;
    let manifest = node
        .file(&path, consistency)
        .await?
        .ok_or_else(|| not_found(&path))?;
    match query.explain.as_deref() {
        None | Some("0") | Some("false") => serve_file(&node, manifest, &method, &headers, None),
        Some("1") | Some("true") => {
            let chunks = node.explain(&manifest).await;
            let file = FileInfo::new(&manifest, node.file_replicas());
            Ok(Json(json!(FileExplain { file, chunks })).into_response())
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "explain must be 1 or 0, not '{other}'"
        ))),
    }
}

/// What a `Range` header asks for, against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses one `bytes=` range (RFC 9110 §14.1.2). Several ranges, other units and malformed
/// values are ignored (the whole file is served), which the RFC allows.
fn parse_range(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last N bytes.
        return match last.parse::<u64>() {
            Ok(0) => RangeAsk::Unsatisfiable,
            Ok(_) if size == 0 => RangeAsk::Unsatisfiable,
            Ok(n) => RangeAsk::Part(size.saturating_sub(n), size),
            Err(_) => RangeAsk::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeAsk::Whole;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(size),
            _ => return RangeAsk::Whole,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start, end)
}

/// Whether an `If-Match`/`If-None-Match` value names `etag` (or is `*`).
fn etag_listed(value: &HeaderValue, etag: &str) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag)
    })
}

fn serve_file(
    node: &Arc<Node>,
    manifest: Manifest,
    method: &Method,
    headers: &HeaderMap,
    attachment: Option<&str>,
) -> Result<Response, ApiError> {
    let etag = format!("\"{}\"", hex(&manifest.blake3));
    if let Some(v) = headers.get(header::IF_MATCH) {
        if !etag_listed(v, &etag) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the file's ETag does not match If-Match",
            ));
        }
    }
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("kith-file-version", manifest.version);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| etag_listed(v, &etag))
    {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            });
    }
    let size = manifest.size;
    // If-Range: a range only applies to the version the client already has part of.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|t| t == etag));
    let ask = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if range_applies => parse_range(v, size),
        _ => RangeAsk::Whole,
    };
    let (status, start, end) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, size),
        RangeAsk::Part(start, end) => {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            );
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        RangeAsk::Unsatisfiable => {
            let mut error = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the range is outside the file's {size} bytes"),
            )
            .into_response();
            error.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(error);
        }
    };
    // Uploaded bytes are the uploader's, served on the dashboard's origin: they run in a
    // sandbox (no script, no same-origin access) even when opened directly, and anything
    // but an inert type is a download, never a page (docs/FILES.md, "Serving").
    let name = attachment
        .map(str::to_owned)
        .or_else(|| (!is_inert(&manifest.content_type)).then(|| file_name(&manifest.path)));
    response = response
        .status(status)
        .header(header::CONTENT_TYPE, &manifest.content_type)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::CONTENT_SECURITY_POLICY, "sandbox");
    if let Some(name) = name {
        response = response.header(header::CONTENT_DISPOSITION, content_disposition(&name));
    }
    let body = if method == Method::HEAD || start == end {
        Body::empty()
    } else {
        Body::from_stream(node.read_file(manifest, start, end))
    };
    response
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Content types a browser only displays (text, images, audio, video, JSON), served
/// inline. Everything else — HTML, XHTML, SVG, XML, JavaScript, PDF, types nobody listed —
/// is served as an attachment.
const INERT_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "application/octet-stream",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "video/mp4",
    "video/webm",
    "video/ogg",
];

/// Whether `content_type` (parameters ignored, any case) is in [`INERT_TYPES`].
fn is_inert(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INERT_TYPES.contains(&essence.as_str())
}

/// The last segment of a file path: the name a download is saved under.
fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266).
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    consistency: Option<String>,
}

async fn list(State(node): Shared, Q(query): Q<ListQuery>) -> Result<Response, ApiError> {
    let consistency = parse_consistency(query.consistency.as_deref())?;
    let limit = parse_limit(
        query.limit,
        files::LIST_FILES_DEFAULT,
        files::LIST_FILES_MAX,
    )?;
    let prefix = query.prefix.unwrap_or_default();
    if prefix.len() > files::PATH_BYTES_MAX
        || query
            .after
            .as_ref()
            .is_some_and(|a| a.len() > files::PATH_BYTES_MAX)
    {
        return Err(ApiError::bad_request(
            "prefix and after are at most 1024 bytes",
        ));
    }
    // One more than asked tells whether another page exists.
    let mut page = node
        .files(&prefix, query.after.as_deref(), limit + 1, consistency)
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more.then(|| page.last().map(|m| m.path.clone()));
    let replicas = node.file_replicas();
    let files: Vec<Value> = page.iter().map(|m| summary(replicas, m)).collect();
    Ok(Json(json!({ "files": files, "next": next.flatten() })).into_response())
}

async fn remove(State(node): Shared, path: PathResult) -> Result<Response, ApiError> {
    let path = file_path(path)?;
    let deleted = node.delete_file(&path).await?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ShareRequest {
    expires_in_s: Option<u64>,
}

fn share_json(share: &Share) -> Value {
    json!({
        "token": share.token,
        "url": share.url(),
        "path": share.path,
        "expires_at_ms": share.expires_at_ms,
    })
}

/// `POST /v1/files/{path}/share`: the only POST on a file.
async fn share(State(node): Shared, path: PathResult, body: Body) -> Result<Response, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(path) = raw.strip_suffix("/share") else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST on a file only creates a share link: POST /v1/files/{path}/share",
        ));
    };
    files::validate_path(path)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.to_string()))?;
    let bytes = axum::body::to_bytes(body, SHARE_BODY_BYTES_MAX)
        .await
        .map_err(|_| ApiError::bad_request("the share request body is over 4 KiB"))?;
    let request: ShareRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        ShareRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed share request: {e}")))?
    };
    let ttl_s = request.expires_in_s.unwrap_or(files::SHARE_TTL_S_DEFAULT);
    match node.share_file(path, ttl_s).await? {
        Some(share) => Ok((StatusCode::CREATED, Json(share_json(&share))).into_response()),
        None => Err(not_found(path)),
    }
}

fn unknown_share() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_share", "no such share link")
}

async fn revoke(State(node): Shared, token: PathResult) -> Result<Response, ApiError> {
    let Ok(Path(token)) = token else {
        return Err(unknown_share());
    };
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown_share());
    }
    if node.unshare(&token).await? {
        Ok(Json(json!({ "revoked": true })).into_response())
    } else {
        Err(unknown_share())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharesQuery {
    path: Option<String>,
}

async fn list_shares(State(node): Shared, Q(query): Q<SharesQuery>) -> Result<Response, ApiError> {
    let shares = node
        .read(Consistency::Linearizable)
        .await?
        .shares(query.path.as_deref(), SHARES_LISTED_MAX)
        .map_err(kith_node::NodeError::from)?;
    let shares: Vec<Value> = shares.iter().map(share_json).collect();
    Ok(Json(json!({ "shares": shares })).into_response())
}

/// `GET /s/{token}`: a download that needs nothing but the token.
async fn shared(
    State(node): Shared,
    method: Method,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match node.lookup_share(&token).await? {
        ShareLookup::Found(share, manifest) => {
            let name = file_name(&share.path);
            serve_file(&node, manifest, &method, &headers, Some(&name))
        }
        ShareLookup::Unknown => Err(unknown_share()),
        ShareLookup::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "share_expired",
            "this share link has expired",
        )),
        ShareLookup::FileGone(share) => Err(not_found(&share.path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary body is kith-core's `FileInfo`; its JSON is the document clients read.
    #[test]
    fn a_summary_is_the_shared_file_info() {
        let chunk = |size| files::ChunkRef {
            hash: [7; 32],
            size,
        };
        let manifest = Manifest {
            path: "a/b.txt".into(),
            size: 7,
            blake3: [1; 32],
            content_type: "text/plain".into(),
            chunk_bytes: 4,
            chunks: vec![chunk(4), chunk(3)],
            created_ms: 5,
            version: 6,
        };
        assert_eq!(
            serde_json::to_string(&summary(3, &manifest)).unwrap(),
            serde_json::to_string(&json!({
                "path": "a/b.txt",
                "size": 7,
                "blake3": hex(&[1; 32]),
                "content_type": "text/plain",
                "created_ms": 5,
                "version": 6,
                "chunk_bytes": 4,
                "chunk_count": 2,
                "replicas": 3,
            }))
            .unwrap()
        );
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAsk::Part(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), RangeAsk::Part(90, 100));
        assert_eq!(parse_range("bytes=90-500", 100), RangeAsk::Part(90, 100));
        assert_eq!(parse_range("bytes=-10", 100), RangeAsk::Part(90, 100));
        assert_eq!(parse_range("bytes=-500", 100), RangeAsk::Part(0, 100));
        assert_eq!(parse_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeAsk::Unsatisfiable);
        // Ignored: several ranges, other units, nonsense, backwards.
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-y",
            "bytes=9-3",
            "bytes",
        ] {
            assert_eq!(parse_range(ignored, 100), RangeAsk::Whole, "{ignored}");
        }
    }

    #[test]
    fn disposition_names_are_safe() {
        assert_eq!(
            content_disposition("a \"b\".txt"),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"
        );
        assert!(content_disposition("ünï.txt").contains("filename*=UTF-8''%C3%BCn%C3%AF.txt"));
    }

    #[test]
    fn only_inert_types_are_served_inline() {
        for inert in ["text/plain; charset=utf-8", "IMAGE/PNG", "application/json"] {
            assert!(is_inert(inert), "{inert}");
        }
        for active in [
            "text/html",
            "text/html; charset=utf-8",
            "application/xhtml+xml",
            "image/svg+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript",
            "application/pdf",
            "",
            "text/plain2",
        ] {
            assert!(!is_inert(active), "{active}");
        }
    }
}
