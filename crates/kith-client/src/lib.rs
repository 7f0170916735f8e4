//! kith-client: a typed HTTP client for a kith cluster.
//!
//! Takes several endpoints, spreads reads over them round-robin (skipping endpoints that
//! failed in the last few seconds), and fails over between them: a request whose connection
//! cannot be made goes to the next endpoint. Reads and other idempotent requests are also retried
//! on the next endpoint when a node answers 503 (no leader, timeout). A write is retried
//! only when it certainly did not happen (connection refused, or `no_leader`), never after a
//! timeout, whose outcome is unknown. Attempts and backoff are bounded. Writes go first to
//! the endpoint the cluster last named as its leader (`kith-leader`), when the client has it.
//!
//! Refuses: knowing cluster internals; it speaks only the public `/v1` API.

mod backup;
mod chat;
mod files;
mod jobs;
pub mod profile;
mod sse;
pub mod tls;
mod watch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use backup::BackupSaved;
pub use chat::{ChatMessage, RoomEvent};
pub use files::{
    ByteRange, Download, DownloadOptions, FilePage, FileStat, Progress, UploadOptions, UploadSource,
};
pub use jobs::ClaimedJob;
/// The wire types the client shares with the server.
pub use kith_core::files::{validate_path, ChunkPlacement, FileExplain, FileInfo, Share};
pub use watch::{WatchControl, WatchEvent};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// Rounds over the endpoint list before giving up.
const ROUNDS_MAX: usize = 3;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Adding a member waits for it to catch up, so requests may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);
/// How long an endpoint that failed to connect is skipped by reads.
const DOWN_FOR: Duration = Duration::from_secs(3);
const OCTETS: &str = "application/octet-stream";
/// The header in which a node names the leader's address (`http://ADDR`).
const LEADER_HEADER: &str = "kith-leader";
pub(crate) const JSON: &str = "application/json";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error.
    #[error("{status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A watch stream was ended by the server and cannot be resumed (e.g. its revision was
    /// compacted away).
    #[error("watch ended: {reason}: {message}")]
    WatchCut { reason: String, message: String },
    /// No endpoint could serve the request.
    #[error("no endpoint could serve the request; last error: {0}")]
    Unavailable(String),
    #[error(
        "invalid endpoint '{0}': expected http://HOST:PORT, or https://HOST:PORT with a CA (--ca)"
    )]
    BadEndpoint(String),
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A local file or stream of a transfer could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl ClientError {
    /// The API error code, when the cluster answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Read consistency for [`Client::get`] and [`Client::list`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

impl Consistency {
    pub(crate) fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

/// A value read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvValue {
    pub value: Vec<u8>,
    pub revision: u64,
}

/// Whether a request may be repeated after an ambiguous failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Retry {
    /// Reads: retry on any retryable failure.
    Idempotent,
    /// Writes: retry only when the request certainly did not take effect.
    OnlyIfNotApplied,
    /// Compare-and-set: retried like a read, since a second apply cannot change anything.
    /// But once an attempt may have applied (a timeout, a 503 other than `no_leader`), a 409
    /// from a later attempt may be the echo of our own write, so it is reported as an
    /// unknown outcome rather than as a failed compare.
    CompareAndSet,
}

/// Options for [`Client::put_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PutOptions {
    /// Compare-and-set: only if the key's revision is this (0: only if absent).
    pub if_revision: Option<u64>,
    /// Seconds until the key expires.
    pub ttl_s: Option<u64>,
}

pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
    /// For long-lived streams: no overall timeout, only the connect timeout.
    stream_http: reqwest::Client,
    /// Index of the endpoint writes try first: the leader, as the last answer to a write
    /// named it, or else the last endpoint that answered.
    preferred: AtomicUsize,
    /// Round-robin position for reads.
    next_read: AtomicUsize,
    /// Per endpoint, until when reads skip it after a failed connection.
    down_until: Mutex<Vec<Option<Instant>>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl Client {
    /// A client for `endpoints` (`http://HOST:PORT`, trailing slash optional).
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, ClientError> {
        Client::with_tls(endpoints, None)
    }

    /// A client for `endpoints` (`http://` or, with `tls`, `https://HOST:PORT`).
    pub fn with_tls<S: AsRef<str>>(
        endpoints: &[S],
        tls: Option<&tls::TlsOptions>,
    ) -> Result<Self, ClientError> {
        Client::with_options(endpoints, tls, None)
    }

    /// A client for `endpoints` that also presents `token` (`Authorization: Bearer`) on
    /// every request, as a cluster with TLS asks.
    pub fn with_options<S: AsRef<str>>(
        endpoints: &[S],
        tls: Option<&tls::TlsOptions>,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| {
                        ClientError::Unavailable(
                            "the token holds characters a header cannot".into(),
                        )
                    })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.as_ref().trim().trim_end_matches('/').to_owned())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint(String::new()));
        }
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        for e in &endpoints {
            if !e.starts_with(scheme) || e.len() <= scheme.len() {
                return Err(ClientError::BadEndpoint(e.clone()));
            }
        }
        tls::install_default_provider();
        let builder = || -> Result<reqwest::ClientBuilder, ClientError> {
            let builder = reqwest::Client::builder()
                .no_proxy()
                .default_headers(headers.clone())
                .connect_timeout(Duration::from_millis(500));
            Ok(match tls {
                Some(tls) => builder.tls_backend_preconfigured(
                    tls.client_config(&[b"http/1.1"])
                        .map_err(|e| ClientError::Unavailable(e.to_string()))?,
                ),
                None => builder,
            })
        };
        let http = builder()?
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let stream_http = builder()?
            .build()
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        Ok(Client {
            stream_http,
            down_until: Mutex::new(vec![None; endpoints.len()]),
            endpoints,
            http,
            preferred: AtomicUsize::new(0),
            next_read: AtomicUsize::new(0),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Vec<u8>, &'static str)>,
        retry: Retry,
    ) -> Result<reqwest::Response, ClientError> {
        let n = self.endpoints.len();
        let mut backoff = BACKOFF_START;
        let mut last = String::from("no attempt made");
        let start = match retry {
            Retry::Idempotent => self.read_start(),
            Retry::OnlyIfNotApplied | Retry::CompareAndSet => {
                self.preferred.load(Ordering::Relaxed)
            }
        };
        // Whether an earlier attempt may have taken effect (only tracked for CompareAndSet).
        let mut maybe_applied = false;
        for attempt in 0..n * ROUNDS_MAX {
            let index = (start + attempt) % n;
            let url = format!("{}{}", self.endpoints[index], path_and_query);
            let mut request = self.http.request(method.clone(), &url);
            if let Some((bytes, content_type)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            match request.send().await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let status = response.status().as_u16();
                    let error = decode_error(status, response).await;
                    let not_applied = error.code() == Some("no_leader");
                    maybe_applied |= !not_applied;
                    if retry != Retry::OnlyIfNotApplied || not_applied {
                        last = error.to_string();
                    } else {
                        return Err(error);
                    }
                }
                Ok(response)
                    if retry == Retry::CompareAndSet
                        && maybe_applied
                        && response.status() == StatusCode::CONFLICT =>
                {
                    return Err(ClientError::Unavailable(format!(
                        "outcome unknown: an earlier attempt of this compare-and-set may have \
                         applied, so the 409 from {url} may be its own echo; read the key"
                    )));
                }
                Ok(response) => {
                    match self.leader_named_by(&response) {
                        Some(leader) => self.preferred.store(leader, Ordering::Relaxed),
                        // A read's answer says nothing about where writes should go.
                        None if retry != Retry::Idempotent => {
                            self.preferred.store(index, Ordering::Relaxed)
                        }
                        None => {}
                    }
                    return Ok(response);
                }
                Err(e) if e.is_connect() => {
                    self.mark_down(index);
                    last = format!("{url}: {e}");
                }
                Err(e) if retry != Retry::OnlyIfNotApplied => {
                    maybe_applied = true;
                    last = format!("{url}: {e}");
                }
                Err(e) => return Err(ClientError::Unavailable(format!("{url}: {e}"))),
            }
            // Move on to the next endpoint; back off once a whole round has failed.
            if (attempt + 1) % n == 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// The endpoint the answer's `kith-leader` header names, when it is one of ours. Nodes
    /// name the leader in the answer to every write; sending the next writes there saves
    /// the hop through a follower's forwarder. An address the client was not given is not
    /// followed: the client talks only to the endpoints it was configured with.
    fn leader_named_by(&self, response: &reqwest::Response) -> Option<usize> {
        let named = response.headers().get(LEADER_HEADER)?.to_str().ok()?;
        let named = named.trim_end_matches('/');
        self.endpoints.iter().position(|e| e == named)
    }

    /// The endpoint a read starts at: the next in round-robin order that has not failed
    /// recently (or simply the next, when all have).
    pub(crate) fn read_start(&self) -> usize {
        let n = self.endpoints.len();
        let first = self.next_read.fetch_add(1, Ordering::Relaxed);
        let down = self.down_until.lock().expect("down_until lock");
        let now = Instant::now();
        (0..n)
            .map(|i| (first + i) % n)
            .find(|i| down[*i].is_none_or(|until| until <= now))
            .unwrap_or(first % n)
    }

    fn mark_down(&self, index: usize) {
        self.down_until.lock().expect("down_until lock")[index] = Some(Instant::now() + DOWN_FOR);
    }

    pub(crate) async fn json(response: reqwest::Response) -> Result<Value, ClientError> {
        let status = response.status();
        if !status.is_success() {
            return Err(decode_error(status.as_u16(), response).await);
        }
        response
            .json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sets `key`; returns the new revision. `if_revision` makes it a compare-and-set
    /// (`Some(0)`: only if absent).
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        if_revision: Option<u64>,
    ) -> Result<u64, ClientError> {
        let options = PutOptions {
            if_revision,
            ttl_s: None,
        };
        self.put_with(key, value, options).await
    }

    /// Sets `key` with the given options; returns the new revision.
    pub async fn put_with(
        &self,
        key: &str,
        value: &[u8],
        options: PutOptions,
    ) -> Result<u64, ClientError> {
        let mut query = Vec::new();
        if let Some(r) = options.if_revision {
            query.push(format!("if_revision={r}"));
        }
        if let Some(t) = options.ttl_s {
            query.push(format!("ttl={t}"));
        }
        let mut path = format!("/v1/kv/{}", encode_key(key));
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        let retry = if options.if_revision.is_some() {
            // A compare-and-set applied twice fails the second time, so it is safe to retry;
            // but see `Retry::CompareAndSet` for what a 409 after a retry means.
            Retry::CompareAndSet
        } else {
            Retry::OnlyIfNotApplied
        };
        let v = Self::json(
            self.send(Method::PUT, &path, Some((value.to_vec(), OCTETS)), retry)
                .await?,
        )
        .await?;
        v["revision"]
            .as_u64()
            .ok_or_else(|| ClientError::Decode(v.to_string()))
    }

    /// Reads `key`; `None` when absent.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<KvValue>, ClientError> {
        let path = format!(
            "/v1/kv/{}?consistency={}",
            encode_key(key),
            consistency.as_query()
        );
        let response = self
            .send(Method::GET, &path, None, Retry::Idempotent)
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(decode_error(status.as_u16(), response).await);
        }
        let revision = response
            .headers()
            .get("kith-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Decode("missing kith-revision header".into()))?;
        let value = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?
            .to_vec();
        Ok(Some(KvValue { value, revision }))
    }

    /// Deletes `key`; returns the store revision and whether the key existed.
    pub async fn delete(
        &self,
        key: &str,
        if_revision: Option<u64>,
    ) -> Result<(u64, bool), ClientError> {
        let mut path = format!("/v1/kv/{}", encode_key(key));
        if let Some(r) = if_revision {
            path.push_str(&format!("?if_revision={r}"));
        }
        // Deleting twice leaves the same state, so a retry is harmless.
        let v = Self::json(
            self.send(Method::DELETE, &path, None, Retry::Idempotent)
                .await?,
        )
        .await?;
        match (v["revision"].as_u64(), v["deleted"].as_bool()) {
            (Some(r), Some(d)) => Ok((r, d)),
            _ => Err(ClientError::Decode(v.to_string())),
        }
    }

    /// Lists keys under `prefix` (the JSON document of `GET /v1/kv`).
    pub async fn list(
        &self,
        prefix: &str,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/v1/kv?prefix={}&limit={limit}&consistency={}",
            encode_query(prefix),
            consistency.as_query()
        );
        Self::json(
            self.send(Method::GET, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// `GET /v1/cluster` from the first endpoint that answers.
    pub async fn cluster(&self) -> Result<Value, ClientError> {
        Self::json(
            self.send(Method::GET, "/v1/cluster", None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// `GET /v1/health` of one specific endpoint (no failover: the answer is about that node).
    pub async fn health_of(&self, endpoint: &str) -> Result<Value, ClientError> {
        let url = format!("{}/v1/health", endpoint.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        // 503 still carries the node's report.
        response
            .json()
            .await
            .map_err(|e| ClientError::Decode(format!("{status}: {e}")))
    }

    /// `GET /v1/ledger` of one specific endpoint: that node's ledger head, or with `index`
    /// its hash at that index. `Ok(None)` when the node no longer keeps (or has not yet
    /// reached) that index.
    pub async fn ledger_of(
        &self,
        endpoint: &str,
        index: Option<u64>,
    ) -> Result<Option<Value>, ClientError> {
        let mut url = format!("{}/v1/ledger", endpoint.trim_end_matches('/'));
        if let Some(i) = index {
            url.push_str(&format!("?index={i}"));
        }
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            _ => Self::json(response).await.map(Some),
        }
    }

    /// Adds node `id` reachable at `addr` (HOST:PORT) as a voter.
    pub async fn add_member(&self, id: u64, addr: &str) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({"id": id, "addr": addr}))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let response = self
            .send(
                Method::POST,
                "/v1/cluster/members",
                Some((body, JSON)),
                Retry::Idempotent,
            )
            .await?;
        Self::json(response).await.map(drop)
    }

    /// Creates a token (`POST /v1/tokens`); the answer holds it (`token`), shown only once.
    pub async fn create_token(&self, request: &Value) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let response = self
            .send(
                Method::POST,
                "/v1/tokens",
                Some((body, JSON)),
                Retry::OnlyIfNotApplied,
            )
            .await?;
        Self::json(response).await
    }

    /// Every token record (`GET /v1/tokens`; never a secret).
    pub async fn tokens(&self) -> Result<Value, ClientError> {
        Self::json(
            self.send(Method::GET, "/v1/tokens", None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// Revokes token `id` (`DELETE /v1/tokens/{id}`).
    pub async fn revoke_token(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/tokens/{}", encode_key(id));
        Self::json(
            self.send(Method::DELETE, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// Removes node `id` from the cluster.
    pub async fn remove_member(&self, id: u64) -> Result<(), ClientError> {
        let path = format!("/v1/cluster/members/{id}");
        Self::json(
            self.send(Method::DELETE, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
        .map(drop)
    }
}

pub(crate) async fn decode_error(status: u16, response: reqwest::Response) -> ClientError {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => ClientError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unknown".into(),
            message: text,
        },
    }
}

/// Percent-encodes a key for the URL path, keeping `/` so keys read naturally.
pub fn encode_key(key: &str) -> String {
    encode(key, true)
}

pub(crate) fn encode_query(value: &str) -> String {
    encode(value, false)
}

fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_key("a/b c?d"), "a/b%20c%3Fd");
        assert_eq!(encode_query("a/b&c"), "a%2Fb%26c");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        assert!(Client::new(&["http://127.0.0.1:7001/"]).is_ok());
        assert!(matches!(
            Client::new(&["127.0.0.1:7001"]),
            Err(ClientError::BadEndpoint(_))
        ));
        assert!(Client::new::<&str>(&[]).is_err());
    }

    /// Serves one canned HTTP answer per connection, in order, and then stops.
    async fn canned_server(answers: Vec<(u16, &'static str)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            for (status, body) in answers {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    /// Found while building the fault suite: the first attempt of a compare-and-set timed
    /// out on the server (503 `timeout`, outcome unknown) but had in fact committed; the
    /// client's retry then met its own write and got 409, which it reported as a failed
    /// compare — a definite "no" for a write that happened.
    #[tokio::test]
    async fn cas_whose_retry_gets_409_after_an_ambiguous_attempt_is_unknown_not_a_mismatch() {
        let url = canned_server(vec![
            (503, r#"{"error":{"code":"timeout","message":"commit"}}"#),
            (
                409,
                r#"{"error":{"code":"revision_mismatch","message":"at 8"}}"#,
            ),
        ])
        .await;
        let client = Client::new(&[url]).expect("client");
        let outcome = client.put("k", b"v", Some(7)).await;
        assert!(
            matches!(outcome, Err(ClientError::Unavailable(_))),
            "a 409 after an ambiguous attempt must be an unknown outcome: {outcome:?}"
        );
        // A 409 on the first attempt is a genuine failed compare.
        let url = canned_server(vec![(
            409,
            r#"{"error":{"code":"revision_mismatch","message":"at 8"}}"#,
        )])
        .await;
        let client = Client::new(&[url]).expect("client");
        let outcome = client.put("k", b"v", Some(7)).await;
        assert!(
            matches!(&outcome, Err(e) if e.code() == Some("revision_mismatch")),
            "{outcome:?}"
        );
    }
}
