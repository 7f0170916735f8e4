//! Files (docs/FILES.md): streamed upload and download with endpoint failover, stat, paged
//! listing, delete, share links and chunk placement.
//!
//! Transfers never hold a whole file in memory: an upload streams its source in
//! `READ_BYTES` pieces as the request body, a download writes each piece of the answer to an
//! `AsyncWrite` as it arrives. Both report progress through a [`Progress`] callback.
//!
//! ```text
//! put_file: open source ──▶ PUT to endpoint i ──503 / refused / cut off──▶ reopen, endpoint i+1
//!                                  │ 2xx
//!                                  ▼ manifest (FileInfo)
//! get_file: GET (Range) ──▶ write pieces ──cut off──▶ GET bytes=N- with If-Match: ETag on i+1
//! ```
//!
//! Failover: an upload is repeated from the start on the next endpoint when the connection
//! could not be made, the node answered 503, or the transfer broke before an answer — but only
//! when the source can be read again from the start (a local file or bytes; a one-shot reader
//! only while none of it was consumed). Repeating a PUT of the same bytes leaves the same file
//! (HTTP's PUT is idempotent); the only trace is a higher `version`. A download that breaks
//! midway resumes on the next endpoint with a range from the first missing byte, fenced by
//! `If-Match` so that the pieces come from one version of the file.
//!
//! Bounds: at most `ROUNDS_MAX` rounds over the endpoints per call, a 500 ms connect
//! timeout, and a transfer that makes no progress for `TRANSFER_IDLE` is abandoned. There is
//! no cap on a transfer's total time, since a large file on a slow link legitimately takes
//! long.
//!
//! Refuses: deciding what a valid path is beyond a cheap local check with kith-core's rule
//! (the node decides), and verifying content (the node checks every chunk's BLAKE3 hash).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use kith_core::files::{validate_path, FileExplain, FileInfo, Share, LIST_FILES_MAX};
use kith_core::limits::InvalidInput;

use crate::{
    decode_error, encode_key, encode_query, Client, ClientError, Consistency, Retry, BACKOFF_MAX,
    BACKOFF_START, JSON, OCTETS, ROUNDS_MAX,
};

/// Bytes read from an upload's source per body piece.
const READ_BYTES: usize = 256 * 1024;
/// A transfer that moves no byte (and gets no answer) for this long is abandoned.
const TRANSFER_IDLE: Duration = Duration::from_secs(30);
/// How often a transfer checks whether it has gone idle.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Called with the bytes transferred so far in the current attempt. It is called with 0 when
/// an upload starts again on another endpoint.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// One page of `GET /v1/files`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct FilePage {
    pub files: Vec<FileInfo>,
    /// Pass back as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// What `HEAD /v1/files/{path}` says about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    /// The ETag without quotes: the whole-file BLAKE3 hash.
    pub blake3: String,
    pub version: u64,
    pub content_type: String,
}

/// What to upload.
pub enum UploadSource {
    /// A local file, opened afresh for every attempt; its size is sent as `Content-Length`.
    File(PathBuf),
    /// Bytes in memory (retried like a file).
    Bytes(Bytes),
    /// A one-shot reader (stdin, a pipe), sent chunked. Retried on another endpoint only if
    /// nothing had been read from it yet.
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

/// Options of [`Client::put_file`].
#[derive(Clone, Default)]
pub struct UploadOptions {
    /// Stored and returned on download; the node's default is `application/octet-stream`.
    pub content_type: Option<String>,
    pub progress: Option<Progress>,
}

/// One byte range (RFC 9110), as `Range: bytes=…` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=A-`: from A to the end.
    From(u64),
    /// `bytes=A-B`: A to B inclusive.
    Inclusive(u64, u64),
    /// `bytes=-N`: the last N bytes.
    Last(u64),
}

impl ByteRange {
    fn header(self) -> String {
        match self {
            ByteRange::From(a) => format!("bytes={a}-"),
            ByteRange::Inclusive(a, b) => format!("bytes={a}-{b}"),
            ByteRange::Last(n) => format!("bytes=-{n}"),
        }
    }

    /// Parses `A-B`, `A-` or `-N` (with or without a leading `bytes=`).
    pub fn parse(text: &str) -> Option<ByteRange> {
        let spec = text.trim().strip_prefix("bytes=").unwrap_or(text.trim());
        let (a, b) = spec.split_once('-')?;
        match (a.trim(), b.trim()) {
            ("", n) => n.parse().ok().map(ByteRange::Last),
            (a, "") => a.parse().ok().map(ByteRange::From),
            (a, b) => {
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                (a <= b).then_some(ByteRange::Inclusive(a, b))
            }
        }
    }
}

/// Options of [`Client::get_file`].
#[derive(Clone)]
pub struct DownloadOptions {
    pub range: Option<ByteRange>,
    pub consistency: Consistency,
    pub progress: Option<Progress>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            range: None,
            consistency: Consistency::Linearizable,
            progress: None,
        }
    }
}

/// What a finished download delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// Bytes written to the output.
    pub bytes: u64,
    /// The whole file's size (not just the range).
    pub file_size: u64,
    /// The first byte delivered, as an offset into the file.
    pub offset: u64,
    pub blake3: String,
    pub version: u64,
    pub content_type: String,
}

/// A path that fails kith-core's rule (docs/FILES.md "Paths"), refused before any byte is
/// sent; the node checks again.
fn bad_path(path: &str, why: InvalidInput) -> ClientError {
    ClientError::Api {
        status: 400,
        code: "invalid_path".into(),
        message: format!("{path:?}: {why}"),
    }
}

/// When a transfer last moved a byte; shared between the body stream and the watchdog.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Runs `future` until it completes, or `None` once `activity` has been idle for
/// `TRANSFER_IDLE`.
async fn until_idle<F: Future>(future: F, activity: &Activity) -> Option<F::Output> {
    tokio::pin!(future);
    loop {
        tokio::select! {
            out = &mut future => return Some(out),
            () = tokio::time::sleep(IDLE_CHECK) => {
                if activity.idle() >= TRANSFER_IDLE {
                    return None;
                }
            }
        }
    }
}

/// The reader behind one upload attempt, shared with the body stream so that a one-shot
/// reader the stream never touched can be handed to the next attempt.
type SharedReader = Arc<tokio::sync::Mutex<Box<dyn AsyncRead + Send + Unpin>>>;

/// Per-attempt counters of an upload body.
struct BodyState {
    reader: SharedReader,
    sent: Arc<AtomicU64>,
    activity: Arc<Activity>,
    progress: Option<Progress>,
    /// A read error of the local source, kept so that it is reported as such rather than as
    /// a network failure.
    source_error: Arc<Mutex<Option<std::io::Error>>>,
}

fn body_stream(state: BodyState) -> reqwest::Body {
    let stream = futures::stream::unfold(state, |state| async move {
        let mut buf = BytesMut::with_capacity(READ_BYTES);
        let read = {
            let mut reader = state.reader.lock().await;
            reader.read_buf(&mut buf).await
        };
        match read {
            Ok(0) => None,
            Ok(n) => {
                let total = state.sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                state.activity.touch();
                if let Some(p) = &state.progress {
                    p(total);
                }
                Some((Ok::<Bytes, std::io::Error>(buf.freeze()), state))
            }
            Err(e) => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                *state.source_error.lock().expect("source_error lock") = Some(e);
                Some((Err(copy), state))
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// Parses `Content-Range: bytes A-B/SIZE` into (A, B, SIZE).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, size.parse().ok()?))
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn etag_of(headers: &HeaderMap) -> Option<String> {
    header_str(headers, header::ETAG).map(|e| e.trim().trim_matches('"').to_owned())
}

fn length_of(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

fn version_of(headers: &HeaderMap) -> u64 {
    header_str(headers, "kith-file-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn content_type_of(headers: &HeaderMap) -> String {
    header_str(headers, header::CONTENT_TYPE).unwrap_or_else(|| OCTETS.to_owned())
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

impl Client {
    fn file_url(&self, index: usize, path: &str) -> String {
        format!("{}/v1/files/{}", self.endpoints[index], encode_key(path))
    }

    /// Uploads `source` to `path` (`PUT /v1/files/{path}`), streaming it; returns the
    /// manifest. See the module comment for when it is repeated on another endpoint.
    pub async fn put_file(
        &self,
        path: &str,
        source: UploadSource,
        options: UploadOptions,
    ) -> Result<FileInfo, ClientError> {
        validate_path(path).map_err(|why| bad_path(path, why))?;
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut backoff = BACKOFF_START;
        let mut last = String::from("no attempt made");
        let (one_shot, file, bytes) = match source {
            UploadSource::File(p) => (None, Some(p), None),
            UploadSource::Bytes(b) => (None, None, Some(b)),
            UploadSource::Reader(r) => {
                let shared: SharedReader = Arc::new(tokio::sync::Mutex::new(r));
                (Some(shared), None, None)
            }
        };
        for attempt in 0..n * ROUNDS_MAX {
            let index = (start + attempt) % n;
            let url = self.file_url(index, path);
            // A fresh reader for this attempt, and the body's length when it is known.
            let (reader, length): (SharedReader, Option<u64>) = if let Some(p) = &file {
                let f = tokio::fs::File::open(p)
                    .await
                    .map_err(io_error(format!("cannot open {}", p.display())))?;
                let length = f
                    .metadata()
                    .await
                    .map_err(io_error(format!("cannot stat {}", p.display())))?
                    .len();
                let boxed: Box<dyn AsyncRead + Send + Unpin> = Box::new(f);
                (Arc::new(tokio::sync::Mutex::new(boxed)), Some(length))
            } else if let Some(b) = &bytes {
                let boxed: Box<dyn AsyncRead + Send + Unpin> =
                    Box::new(std::io::Cursor::new(b.clone()));
                (
                    Arc::new(tokio::sync::Mutex::new(boxed)),
                    Some(b.len() as u64),
                )
            } else {
                let shared = one_shot.clone().expect("an upload has exactly one source");
                (shared, None)
            };
            if let Some(p) = &options.progress {
                p(0);
            }
            let sent = Arc::new(AtomicU64::new(0));
            let activity = Activity::new();
            let source_error = Arc::new(Mutex::new(None));
            let body = body_stream(BodyState {
                reader,
                sent: sent.clone(),
                activity: activity.clone(),
                progress: options.progress.clone(),
                source_error: source_error.clone(),
            });
            let content_type = options.content_type.as_deref().unwrap_or(OCTETS);
            let mut request = self
                .stream_http
                .put(&url)
                .header(header::CONTENT_TYPE, content_type)
                .body(body);
            if let Some(length) = length {
                request = request.header(header::CONTENT_LENGTH, length);
            }
            let outcome = until_idle(request.send(), &activity).await;
            if let Some(e) = source_error.lock().expect("source_error lock").take() {
                return Err(ClientError::Io {
                    what: "cannot read the upload's source".into(),
                    source: e,
                });
            }
            let consumed = sent.load(Ordering::Relaxed) > 0;
            match outcome {
                Some(Ok(response)) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    last = decode_error(503, response).await.to_string();
                }
                Some(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Self::json(response).await.and_then(|v| {
                        serde_json::from_value(v.clone())
                            .map_err(|e| ClientError::Decode(format!("{e}: {v}")))
                    });
                }
                Some(Err(e)) if e.is_connect() => {
                    self.mark_down(index);
                    last = format!("{url}: {e}");
                }
                Some(Err(e)) => last = format!("{url}: transfer broke off: {e}"),
                None => {
                    return Err(ClientError::Unavailable(format!(
                        "{url}: no progress for {TRANSFER_IDLE:?}; the upload's outcome is \
                         unknown"
                    )))
                }
            }
            // Only a source that can be read again from the start may go to another node.
            if one_shot.is_some() && consumed {
                return Err(ClientError::Unavailable(format!(
                    "{last}; the source cannot be read again, so the upload was not repeated"
                )));
            }
            if (attempt + 1).is_multiple_of(n) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// Downloads `path` (or a range of it) into `out`, streaming. Fails over between
    /// endpoints, resuming a broken transfer from its first missing byte. `Ok(None)` when the
    /// file does not exist.
    pub async fn get_file<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        out: &mut W,
        options: DownloadOptions,
    ) -> Result<Option<Download>, ClientError> {
        validate_path(path).map_err(|why| bad_path(path, why))?;
        let n = self.endpoints.len();
        let start = self.read_start();
        let mut backoff = BACKOFF_START;
        let mut last = String::from("no attempt made");
        // Learned from the first answer: (what is being delivered, how many bytes in all).
        let mut delivery: Option<(Download, u64)> = None;
        let mut written: u64 = 0;
        for attempt in 0..n * ROUNDS_MAX {
            let index = (start + attempt) % n;
            let url = format!(
                "{}?consistency={}",
                self.file_url(index, path),
                options.consistency.as_query()
            );
            let mut request = self.stream_http.get(&url);
            match &delivery {
                None => {
                    if let Some(range) = options.range {
                        request = request.header(header::RANGE, range.header());
                    }
                }
                Some((d, expected)) => {
                    let from = d.offset + written;
                    let to = d.offset + expected - 1;
                    request = request
                        .header(header::RANGE, format!("bytes={from}-{to}"))
                        .header(header::IF_MATCH, format!("\"{}\"", d.blake3));
                }
            }
            let activity = Activity::new();
            let response = match until_idle(request.send(), &activity).await {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    if e.is_connect() {
                        self.mark_down(index);
                    }
                    last = format!("{url}: {e}");
                    self.pause_after_round(attempt, n, &mut backoff).await;
                    continue;
                }
                None => {
                    last = format!("{url}: no answer for {TRANSFER_IDLE:?}");
                    self.pause_after_round(attempt, n, &mut backoff).await;
                    continue;
                }
            };
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                last = decode_error(503, response).await.to_string();
                self.pause_after_round(attempt, n, &mut backoff).await;
                continue;
            }
            if status == StatusCode::NOT_FOUND && delivery.is_none() {
                let error = decode_error(404, response).await;
                return match error.code() {
                    Some("not_found") => Ok(None),
                    _ => Err(error),
                };
            }
            if status == StatusCode::PRECONDITION_FAILED && delivery.is_some() {
                return Err(ClientError::Unavailable(format!(
                    "{path} changed while it was being downloaded; {written} bytes were \
                     written from the old version"
                )));
            }
            if !status.is_success() {
                return Err(decode_error(status.as_u16(), response).await);
            }
            let headers = response.headers().clone();
            match &delivery {
                None => {
                    let (offset, expected, file_size) = if status == StatusCode::PARTIAL_CONTENT {
                        let (a, b, size) = content_range(&headers).ok_or_else(|| {
                            ClientError::Decode("206 without a valid Content-Range".into())
                        })?;
                        (a, b - a + 1, size)
                    } else {
                        let length = length_of(&headers).ok_or_else(|| {
                            ClientError::Decode("a download without Content-Length".into())
                        })?;
                        (0, length, length)
                    };
                    let d = Download {
                        bytes: 0,
                        file_size,
                        offset,
                        blake3: etag_of(&headers).unwrap_or_default(),
                        version: version_of(&headers),
                        content_type: content_type_of(&headers),
                    };
                    delivery = Some((d, expected));
                }
                Some((d, _)) => {
                    // A resumed piece must continue exactly where the output stopped, from the
                    // same version of the file.
                    let from = d.offset + written;
                    let fits = status == StatusCode::PARTIAL_CONTENT
                        && content_range(&headers).is_some_and(|(a, _, _)| a == from)
                        && etag_of(&headers).as_deref() == Some(d.blake3.as_str());
                    if !fits {
                        return Err(ClientError::Decode(format!(
                            "{url}: the resumed answer does not continue at byte {from}"
                        )));
                    }
                }
            }
            let (_, expected) = delivery.as_ref().expect("set from the first answer");
            let expected = *expected;
            let mut stream = response.bytes_stream();
            loop {
                use futures::StreamExt;
                let next = tokio::time::timeout(TRANSFER_IDLE, stream.next()).await;
                match next {
                    Ok(Some(Ok(piece))) => {
                        // Never write past what was asked for, whatever the node sends.
                        let room = (expected - written).min(piece.len() as u64) as usize;
                        out.write_all(&piece[..room])
                            .await
                            .map_err(io_error("cannot write the download".into()))?;
                        written += room as u64;
                        if let Some(p) = &options.progress {
                            p(written);
                        }
                    }
                    Ok(Some(Err(e))) => {
                        last = format!("{url}: transfer broke off after {written} bytes: {e}");
                        break;
                    }
                    Ok(None) => {
                        if written < expected {
                            last = format!("{url}: answer ended after {written} of {expected}");
                        }
                        break;
                    }
                    Err(_) => {
                        last = format!("{url}: no byte for {TRANSFER_IDLE:?}");
                        break;
                    }
                }
            }
            if written >= expected {
                out.flush()
                    .await
                    .map_err(io_error("cannot write the download".into()))?;
                let (mut d, _) = delivery.expect("set from the first answer");
                d.bytes = written;
                return Ok(Some(d));
            }
            self.pause_after_round(attempt, n, &mut backoff).await;
        }
        Err(ClientError::Unavailable(last))
    }

    async fn pause_after_round(&self, attempt: usize, n: usize, backoff: &mut Duration) {
        if (attempt + 1).is_multiple_of(n) {
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// `HEAD /v1/files/{path}`; `None` when there is no such file.
    pub async fn stat_file(&self, path: &str) -> Result<Option<FileStat>, ClientError> {
        validate_path(path).map_err(|why| bad_path(path, why))?;
        let route = format!("/v1/files/{}", encode_key(path));
        let response = self
            .send(Method::HEAD, &route, None, Retry::Idempotent)
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: "unknown".into(),
                message: format!("HEAD {route} answered {status}"),
            });
        }
        let headers = response.headers();
        Ok(Some(FileStat {
            // From the header: a HEAD answer has no body, so its body length says nothing.
            size: length_of(headers).unwrap_or(0),
            blake3: etag_of(headers).unwrap_or_default(),
            version: version_of(headers),
            content_type: content_type_of(headers),
        }))
    }

    /// One page of files whose path starts with `prefix`, after path `after`, at most
    /// `limit` (1..=1000).
    pub async fn list_files(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<FilePage, ClientError> {
        let mut route = format!(
            "/v1/files?prefix={}&limit={}",
            encode_query(prefix),
            limit.clamp(1, LIST_FILES_MAX)
        );
        if let Some(after) = after {
            route.push_str(&format!("&after={}", encode_query(after)));
        }
        let v = Self::json(
            self.send(Method::GET, &route, None, Retry::Idempotent)
                .await?,
        )
        .await?;
        serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(format!("{e}: {v}")))
    }

    /// Deletes `path`; `false` when there was no such file. Repeating a delete is harmless,
    /// so it is retried like a read.
    pub async fn delete_file(&self, path: &str) -> Result<bool, ClientError> {
        validate_path(path).map_err(|why| bad_path(path, why))?;
        let route = format!("/v1/files/{}", encode_key(path));
        let v = Self::json(
            self.send(Method::DELETE, &route, None, Retry::Idempotent)
                .await?,
        )
        .await?;
        v["deleted"]
            .as_bool()
            .ok_or_else(|| ClientError::Decode(v.to_string()))
    }

    /// Creates a share link for `path` that expires after `expires_in_s` (the node's default,
    /// a day, when `None`). Each call makes a new token, so it is sent again only when it
    /// certainly did not arrive.
    pub async fn share_file(
        &self,
        path: &str,
        expires_in_s: Option<u64>,
    ) -> Result<Share, ClientError> {
        validate_path(path).map_err(|why| bad_path(path, why))?;
        let route = format!("/v1/files/{}/share", encode_key(path));
        let body = match expires_in_s {
            Some(s) => json!({ "expires_in_s": s }),
            None => json!({}),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let v = Self::json(
            self.send(
                Method::POST,
                &route,
                Some((bytes, JSON)),
                Retry::OnlyIfNotApplied,
            )
            .await?,
        )
        .await?;
        serde_json::from_value(v.clone()).map_err(|e| ClientError::Decode(format!("{e}: {v}")))
    }

    /// Revokes a share link; `false` when the token is unknown (or already revoked).
    pub async fn unshare(&self, token: &str) -> Result<bool, ClientError> {
        let route = format!("/v1/shares/{}", encode_query(token));
        let response = self
            .send(Method::DELETE, &route, None, Retry::Idempotent)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            let error = decode_error(404, response).await;
            return match error.code() {
                Some("unknown_share") => Ok(false),
                _ => Err(error),
            };
        }
        let v = Self::json(response).await?;
        Ok(v["revoked"].as_bool().unwrap_or(true))
    }

    /// The share links of `path` (`GET /v1/shares?path=P`), as the API's JSON document.
    pub async fn shares(&self, path: &str) -> Result<Value, ClientError> {
        let route = format!("/v1/shares?path={}", encode_query(path));
        Self::json(
            self.send(Method::GET, &route, None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// Where each chunk of `path` lives and should live; `None` when there is no such file.
    pub async fn explain_file(&self, path: &str) -> Result<Option<FileExplain>, ClientError> {
        validate_path(path).map_err(|why| bad_path(path, why))?;
        let route = format!("/v1/files/{}?explain=1", encode_key(path));
        let response = self
            .send(Method::GET, &route, None, Retry::Idempotent)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            let error = decode_error(404, response).await;
            return match error.code() {
                Some("not_found") => Ok(None),
                _ => Err(error),
            };
        }
        let v = Self::json(response).await?;
        serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ClientError::Decode(format!("{e}: {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The bodies as kith-api writes them (`share_json`, `summary` plus `chunks`) decode into
    /// the types shared with the server.
    #[test]
    fn the_server_s_share_and_explain_bodies_decode() {
        let share: Share = serde_json::from_value(json!({
            "token": "00ff", "url": "/s/00ff", "path": "a/b", "expires_at_ms": 7,
        }))
        .expect("share");
        assert_eq!(share.url(), "/s/00ff");
        assert_eq!((share.path.as_str(), share.expires_at_ms), ("a/b", 7));
        let body = json!({
            "path": "a/b", "size": 5, "blake3": "ab", "content_type": "text/plain",
            "created_ms": 1, "version": 2, "chunk_bytes": 4, "chunk_count": 2, "replicas": 3,
            "chunks": [
                {"index": 0, "offset": 0, "size": 4, "hash": "cd",
                 "holders": [1, 2], "desired": [1, 2, 3]},
                {"index": 1, "offset": 4, "size": 1, "hash": "ef",
                 "holders": [], "desired": [3]},
            ],
        });
        let explain: FileExplain = serde_json::from_value(body.clone()).expect("explain");
        assert_eq!(
            (explain.file.path.as_str(), explain.file.replicas),
            ("a/b", 3)
        );
        assert_eq!(explain.chunks[0].holders, [1, 2]);
        assert_eq!((explain.chunks[1].offset, explain.chunks[1].size), (4, 1));
        // What the client decodes, the server's types encode back to the same document.
        assert_eq!(serde_json::to_value(&explain).expect("encode"), body);
    }

    #[test]
    fn paths_follow_the_documented_rule() {
        for good in ["a", "photos/cat.jpg", "a b/é/c.txt", &"x".repeat(255)] {
            assert!(validate_path(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "./a",
            "a\0b",
            "a\\b",
            "a\nb",
            &"x".repeat(256),
            &"ab/".repeat(400),
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges_parse_and_print() {
        assert_eq!(ByteRange::parse("0-9"), Some(ByteRange::Inclusive(0, 9)));
        assert_eq!(ByteRange::parse("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(ByteRange::parse("-100"), Some(ByteRange::Last(100)));
        assert_eq!(ByteRange::parse("9-0"), None);
        assert_eq!(ByteRange::parse("x"), None);
        assert_eq!(ByteRange::Inclusive(3, 7).header(), "bytes=3-7");
        assert_eq!(ByteRange::Last(4).header(), "bytes=-4");
    }

    /// What a fake node saw of one request.
    #[derive(Debug, Default)]
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        }
    }

    /// Reads one request: its head, then a Content-Length or chunked body.
    async fn read_request(socket: &mut tokio::net::TcpStream) -> Seen {
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed inside the request head");
            raw.extend_from_slice(&buf[..n]);
        };
        let mut seen = Seen {
            head: String::from_utf8_lossy(&raw[..head_end]).into_owned(),
            body: Vec::new(),
        };
        let mut rest = raw[head_end..].to_vec();
        if let Some(length) = seen.header("content-length") {
            let length: usize = length.parse().expect("length");
            while rest.len() < length {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "connection closed inside the body");
                rest.extend_from_slice(&buf[..n]);
            }
            seen.body = rest;
        } else if seen.header("transfer-encoding").is_some() {
            while !rest.ends_with(b"0\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "connection closed inside the body");
                rest.extend_from_slice(&buf[..n]);
            }
            // Decode the chunks.
            let mut at = 0;
            loop {
                let line_end = at
                    + rest[at..]
                        .windows(2)
                        .position(|w| w == b"\r\n")
                        .expect("size");
                let size = usize::from_str_radix(
                    std::str::from_utf8(&rest[at..line_end]).expect("hex"),
                    16,
                )
                .expect("chunk size");
                if size == 0 {
                    break;
                }
                seen.body
                    .extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
                at = line_end + 2 + size + 2;
            }
        }
        seen
    }

    /// A fake node: answers each connection with the next canned answer (raw bytes, sent
    /// after the whole request was read) and reports what it saw.
    async fn fake_node(
        answers: Vec<Vec<u8>>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = read_request(&mut socket).await;
                let _ = tx.send(seen);
                let _ = socket.write_all(&answer).await;
                let _ = socket.shutdown().await;
            }
        });
        (url, rx)
    }

    fn answer(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
        for h in headers {
            out.push_str(h);
            out.push_str("\r\n");
        }
        let mut out = out.into_bytes();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    fn json_answer(status: &str, body: &str) -> Vec<u8> {
        let length = format!("content-length: {}", body.len());
        answer(
            status,
            &["content-type: application/json", &length],
            body.as_bytes(),
        )
    }

    const MANIFEST: &str = r#"{"path":"a/b.bin","size":300000,"blake3":"ab","content_type":"application/octet-stream","created_ms":1,"version":7,"chunk_bytes":1048576,"chunk_count":1,"replicas":3}"#;

    fn payload(n: usize) -> Bytes {
        (0..n)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[tokio::test]
    async fn an_upload_refused_with_503_is_sent_whole_to_the_next_node() {
        let (busy, mut busy_seen) = fake_node(vec![json_answer(
            "503 Service Unavailable",
            r#"{"error":{"code":"insufficient_replicas","message":"1 of 3"}}"#,
        )])
        .await;
        let (good, mut good_seen) = fake_node(vec![json_answer("201 Created", MANIFEST)]).await;
        let client = Client::new(&[busy, good]).expect("client");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let options = UploadOptions {
            content_type: Some("application/x-test".into()),
            progress: Some(Arc::new(move |n| record.lock().expect("lock").push(n))),
        };
        let data = payload(300_000);
        let info = client
            .put_file("a/b.bin", UploadSource::Bytes(data.clone()), options)
            .await
            .expect("the second node stores it");
        assert_eq!(info.version, 7);
        assert_eq!(info.size, 300_000);
        for seen in [
            busy_seen.recv().await.expect("first"),
            good_seen.recv().await.expect("second"),
        ] {
            assert!(
                seen.head.starts_with("PUT /v1/files/a/b.bin "),
                "{}",
                seen.head
            );
            assert_eq!(seen.header("content-length").as_deref(), Some("300000"));
            assert_eq!(
                seen.header("content-type").as_deref(),
                Some("application/x-test")
            );
            assert_eq!(seen.body, data, "each attempt sends the whole file");
        }
        let calls = calls.lock().expect("lock").clone();
        assert_eq!(calls.iter().filter(|n| **n == 0).count(), 2, "{calls:?}");
        assert_eq!(calls.last(), Some(&300_000));
    }

    #[tokio::test]
    async fn an_upload_fails_over_from_a_refused_connection() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let (good, mut good_seen) = fake_node(vec![json_answer("201 Created", MANIFEST)]).await;
        let client = Client::new(&[dead, good]).expect("client");
        let reader: Box<dyn AsyncRead + Send + Unpin> =
            Box::new(std::io::Cursor::new(payload(1000).to_vec()));
        client
            .put_file(
                "a/b.bin",
                UploadSource::Reader(reader),
                UploadOptions::default(),
            )
            .await
            .expect("an untouched one-shot reader may go to the next node");
        let seen = good_seen.recv().await.expect("request");
        assert_eq!(seen.body, payload(1000));
        assert_eq!(seen.header("content-type").as_deref(), Some(OCTETS));
    }

    #[tokio::test]
    async fn a_consumed_one_shot_upload_is_not_repeated() {
        let (busy, _busy_seen) = fake_node(vec![json_answer(
            "503 Service Unavailable",
            r#"{"error":{"code":"timeout","message":"commit"}}"#,
        )])
        .await;
        let (other, mut other_seen) = fake_node(vec![json_answer("201 Created", MANIFEST)]).await;
        let client = Client::new(&[busy, other]).expect("client");
        let reader: Box<dyn AsyncRead + Send + Unpin> =
            Box::new(std::io::Cursor::new(payload(1000).to_vec()));
        let outcome = client
            .put_file(
                "a/b.bin",
                UploadSource::Reader(reader),
                UploadOptions::default(),
            )
            .await;
        assert!(
            matches!(&outcome, Err(ClientError::Unavailable(m)) if m.contains("cannot be read again")),
            "{outcome:?}"
        );
        assert!(
            other_seen.try_recv().is_err(),
            "nothing went to the second node"
        );
    }

    #[tokio::test]
    async fn a_bad_path_is_refused_before_anything_is_sent() {
        let client = Client::new(&["http://127.0.0.1:9"]).expect("client");
        let outcome = client
            .put_file(
                "../etc/passwd",
                UploadSource::Bytes(payload(1)),
                UploadOptions::default(),
            )
            .await;
        assert!(
            matches!(&outcome, Err(e) if e.code() == Some("invalid_path")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_download_cut_off_midway_resumes_on_the_next_node_from_the_missing_byte() {
        let data = payload(10_000);
        // The first node promises 10,000 bytes and dies after 4,000.
        let cut = answer(
            "200 OK",
            &[
                "content-length: 10000",
                "etag: \"h1\"",
                "kith-file-version: 9",
                "content-type: image/png",
            ],
            &data[..4000],
        );
        let (first, mut first_seen) = fake_node(vec![cut]).await;
        let rest = answer(
            "206 Partial Content",
            &[
                "content-length: 6000",
                "content-range: bytes 4000-9999/10000",
                "etag: \"h1\"",
                "kith-file-version: 9",
            ],
            &data[4000..],
        );
        let (second, mut second_seen) = fake_node(vec![rest]).await;
        let client = Client::new(&[first, second]).expect("client");
        let mut out = Vec::new();
        let got = client
            .get_file("a/b.png", &mut out, DownloadOptions::default())
            .await
            .expect("download")
            .expect("found");
        assert_eq!(out, data.to_vec());
        assert_eq!(got.bytes, 10_000);
        assert_eq!(got.file_size, 10_000);
        assert_eq!(got.blake3, "h1");
        assert_eq!(got.version, 9);
        assert_eq!(got.content_type, "image/png");
        let first = first_seen.recv().await.expect("first request");
        assert_eq!(first.header("range"), None);
        let second = second_seen.recv().await.expect("second request");
        assert_eq!(second.header("range").as_deref(), Some("bytes=4000-9999"));
        assert_eq!(second.header("if-match").as_deref(), Some("\"h1\""));
    }

    #[tokio::test]
    async fn a_range_download_reports_its_offset_and_a_missing_file_is_none() {
        let data = payload(100);
        let partial = answer(
            "206 Partial Content",
            &[
                "content-length: 10",
                "content-range: bytes 90-99/100",
                "etag: \"h\"",
            ],
            &data[90..],
        );
        let missing = json_answer(
            "404 Not Found",
            r#"{"error":{"code":"not_found","message":"no file"}}"#,
        );
        let (node, mut seen) = fake_node(vec![partial, missing]).await;
        let client = Client::new(&[node]).expect("client");
        let mut out = Vec::new();
        let options = DownloadOptions {
            range: Some(ByteRange::Last(10)),
            ..DownloadOptions::default()
        };
        let got = client
            .get_file("f", &mut out, options)
            .await
            .expect("download")
            .expect("found");
        assert_eq!((got.offset, got.bytes, got.file_size), (90, 10, 100));
        assert_eq!(out, data[90..].to_vec());
        assert_eq!(
            seen.recv()
                .await
                .expect("request")
                .header("range")
                .as_deref(),
            Some("bytes=-10")
        );
        let mut out = Vec::new();
        let none = client
            .get_file("g", &mut out, DownloadOptions::default())
            .await
            .expect("an answer");
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn stat_reads_the_headers_of_a_head_answer() {
        let head = answer(
            "200 OK",
            &[
                "content-length: 52428800",
                "etag: \"abc\"",
                "kith-file-version: 12",
                "content-type: image/jpeg",
            ],
            b"",
        );
        let (node, mut seen) = fake_node(vec![head]).await;
        let client = Client::new(&[node]).expect("client");
        let stat = client.stat_file("p/cat.jpg").await.expect("stat");
        assert_eq!(
            stat,
            Some(FileStat {
                size: 52_428_800,
                blake3: "abc".into(),
                version: 12,
                content_type: "image/jpeg".into(),
            })
        );
        assert!(seen
            .recv()
            .await
            .expect("request")
            .head
            .starts_with("HEAD /v1/files/p/cat.jpg "));
    }

    #[test]
    fn content_range_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            "bytes 10-19/100".parse().expect("header"),
        );
        assert_eq!(content_range(&h), Some((10, 19, 100)));
        h.insert(
            header::CONTENT_RANGE,
            "bytes */100".parse().expect("header"),
        );
        assert_eq!(content_range(&h), None);
    }
}
