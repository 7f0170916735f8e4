//! `KithTarget`: kith's HTTP API over exactly `--conns` keep-alive connections.
//!
//! Raw hyper connections rather than a pooled client, so the connection count is what the
//! user asked for and not whatever a pool decides; `https` endpoints are reached over TLS
//! (see [`crate::conn`]). Over HTTP/1.1 a connection carries one request at a time: the
//! clients assigned to it take turns (their wait is part of their latency, as it would be
//! for a real client). Over HTTP/2 (`--http 2`: prior knowledge, or ALPN over TLS) they
//! multiplex, as etcd's gRPC clients do.
//!
//! A broken connection is dropped and reopened by the next request; an endpoint that
//! refuses a connection makes that connection move to the next endpoint. With `--route
//! leader` a connection whose write is answered with `kith-leader` naming another of the
//! endpoints moves there (reconnecting on its next request), as kith's client does.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};

use super::{OpError, Outcome, CONNECT_TIMEOUT};
use crate::args::HttpVersion;
use crate::conn::{self, ClientTls, Endpoint};
use crate::error::BenchError;
use crate::plan::Op;

/// Largest response body read; kith's answers to these requests are far smaller, except a
/// value, which the bench itself wrote.
const RESPONSE_BYTES_MAX: usize = (1 << 20) + 4096;

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

struct ConnState {
    /// `None` before the first request and after a failure; the next request reconnects.
    sender: Option<Sender>,
    /// Index into `KithTarget::endpoints` this connection uses.
    endpoint: usize,
}

/// How `KithTarget` reaches and treats the cluster, besides its endpoints.
#[derive(Clone)]
pub struct KithOptions {
    pub http: HttpVersion,
    /// Reads with `?consistency=stale`.
    pub stale: bool,
    pub timeout: Duration,
    /// Move a connection to the endpoint a write's answer names as the leader.
    pub follow_leader: bool,
    /// For `https` endpoints.
    pub tls: Option<ClientTls>,
    /// Presented on every request (`Authorization: Bearer`), as a cluster with TLS asks.
    pub token: Option<String>,
}

pub struct KithTarget {
    endpoints: Vec<Endpoint>,
    /// One per `--conns`. On HTTP/1.1 the lock is held for a whole request (one request at
    /// a time per connection); on HTTP/2 only while cloning the sender.
    conns: Vec<Mutex<ConnState>>,
    http: HttpVersion,
    stale: bool,
    timeout: Duration,
    follow_leader: bool,
    tls: Option<ClientTls>,
    /// `Bearer TOKEN`, ready to send.
    authorization: Option<hyper::header::HeaderValue>,
}

impl KithTarget {
    pub fn new(
        endpoints: &[String],
        conns: usize,
        options: KithOptions,
    ) -> Result<Self, BenchError> {
        let endpoints = endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        if options.tls.is_none() && endpoints.iter().any(Endpoint::is_tls) {
            return Err(BenchError::InvalidArgs(
                "https endpoints need --ca (the cluster CA to trust)".into(),
            ));
        }
        let conns = (0..conns)
            .map(|i| {
                Mutex::new(ConnState {
                    sender: None,
                    endpoint: i % endpoints.len(),
                })
            })
            .collect();
        Ok(KithTarget {
            endpoints,
            conns,
            http: options.http,
            stale: options.stale,
            timeout: options.timeout,
            follow_leader: options.follow_leader,
            tls: options.tls,
            authorization: crate::conn::authorization(options.token.as_deref())?,
        })
    }

    pub async fn exec(&self, conn: usize, op: &Op) -> Result<Outcome, OpError> {
        let (method, path, body) = match op {
            Op::Put { key, value } => (Method::PUT, format!("/v1/kv/{key}"), value.clone()),
            Op::Get { key } if self.stale => (
                Method::GET,
                format!("/v1/kv/{key}?consistency=stale"),
                Bytes::new(),
            ),
            Op::Get { key } => (Method::GET, format!("/v1/kv/{key}"), Bytes::new()),
        };
        let (status, body) = self.call(conn, method, &path, body, false).await?;
        classify(status, &body, op)
    }

    /// Sends one request over connection `conn` (< `--conns`), bounded by `--timeout-ms`,
    /// and returns the status with the whole body. `json` marks the body as JSON.
    pub async fn call(
        &self,
        conn: usize,
        method: Method,
        path: &str,
        body: Bytes,
        json: bool,
    ) -> Result<(StatusCode, Bytes), OpError> {
        let deadline = Instant::now() + self.timeout;
        let slot = &self.conns[conn];
        let mut state = timeout_at(deadline, slot.lock())
            .await
            .map_err(|_| OpError::Timeout)?;
        if state.sender.is_none() {
            let endpoint = &self.endpoints[state.endpoint];
            match timeout_at(deadline, connect(endpoint, self.tls.as_ref(), self.http)).await {
                Ok(Ok(sender)) => state.sender = Some(sender),
                Ok(Err(e)) => {
                    // This endpoint refuses: the next request tries the next one.
                    state.endpoint = (state.endpoint + 1) % self.endpoints.len();
                    return Err(e);
                }
                Err(_) => return Err(OpError::Timeout),
            }
        }
        let write = method != Method::GET && method != Method::HEAD;
        let request = self.request(method, path, body, json, &self.endpoints[state.endpoint]);
        let result = match state.sender.as_mut() {
            Some(Sender::H1(sender)) => timeout_at(deadline, send_h1(sender, request)).await,
            Some(Sender::H2(sender)) => {
                let mut sender = sender.clone();
                drop(state);
                let result = timeout_at(deadline, send_h2(&mut sender, request)).await;
                state = slot.lock().await;
                result
            }
            None => unreachable!("connected above"),
        };
        match result {
            Ok(Ok((status, leader, body))) => {
                if write && self.follow_leader {
                    if let Some(i) = leader.and_then(|l| self.endpoint_index(&l)) {
                        if i != state.endpoint {
                            // The next request on this connection opens one to the leader.
                            state.endpoint = i;
                            state.sender = None;
                        }
                    }
                }
                Ok((status, body))
            }
            Ok(Err(e)) => {
                if matches!(e, OpError::Transport) {
                    state.sender = None;
                }
                Err(e)
            }
            Err(_) => {
                // The connection is mid-request; only a fresh one is known to be usable.
                state.sender = None;
                Err(OpError::Timeout)
            }
        }
    }

    /// Which of the endpoints `url` (`http(s)://HOST:PORT`, as `kith-leader` gives it) is.
    fn endpoint_index(&self, url: &str) -> Option<usize> {
        let named = Endpoint::parse(url).ok()?;
        self.endpoints.iter().position(|e| *e == named)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        json: bool,
        endpoint: &Endpoint,
    ) -> Request<Full<Bytes>> {
        let authority = &endpoint.authority;
        let mut builder = match self.http {
            HttpVersion::Http1 => Request::builder()
                .uri(path)
                .header(hyper::header::HOST, authority),
            // HTTP/2 carries scheme and authority as pseudo-headers: absolute form.
            HttpVersion::Http2 => {
                Request::builder().uri(format!("{}://{authority}{path}", endpoint.scheme()))
            }
        };
        if json {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(authorization) = &self.authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, authorization);
        }
        builder
            .method(method)
            .body(Full::new(body))
            .expect("a request built from a valid authority and a printable path")
    }
}

async fn connect(
    endpoint: &Endpoint,
    tls: Option<&ClientTls>,
    http: HttpVersion,
) -> Result<Sender, OpError> {
    let io = conn::open(endpoint, tls, http, CONNECT_TIMEOUT)
        .await
        .map_err(|_| OpError::Connect)?;
    match http {
        HttpVersion::Http1 => {
            let (sender, conn) = http1::handshake(io).await.map_err(|_| OpError::Connect)?;
            // The connection task ends when the sender is dropped or the peer closes.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(sender))
        }
        HttpVersion::Http2 => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|_| OpError::Connect)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(sender))
        }
    }
}

/// An answer: its status, the leader it names (`kith-leader`), and its whole body.
type Answer = (StatusCode, Option<String>, Bytes);

async fn send_h1(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, OpError> {
    sender.ready().await.map_err(|_| OpError::Transport)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| OpError::Transport)?;
    read_body(response).await
}

async fn send_h2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, OpError> {
    sender.ready().await.map_err(|_| OpError::Transport)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| OpError::Transport)?;
    read_body(response).await
}

/// Reads the whole body, so the connection can carry the next request.
async fn read_body(response: hyper::Response<hyper::body::Incoming>) -> Result<Answer, OpError> {
    let status = response.status();
    let leader = response
        .headers()
        .get("kith-leader")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = http_body_util::Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
        .collect()
        .await
        .map_err(|_| OpError::Transport)?
        .to_bytes();
    Ok((status, leader, body))
}

/// Maps the status: 2xx is done, 404 on a read is "not found", anything else an error by
/// code.
fn classify(status: StatusCode, body: &[u8], op: &Op) -> Result<Outcome, OpError> {
    if status.is_success() {
        return Ok(Outcome::Done);
    }
    if status == StatusCode::NOT_FOUND && matches!(op, Op::Get { .. }) {
        return Ok(Outcome::NotFound);
    }
    Err(status_error(status, body))
}

/// An error status with kith's error code (`{"error":{"code","message"}}`).
pub fn status_error(status: StatusCode, body: &[u8]) -> OpError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    OpError::Status {
        status: status.as_u16(),
        code,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hyper::server::conn::{http1 as server1, http2 as server2};
    use hyper::service::service_fn;
    use hyper::Response;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::*;

    /// Serves a few fixed answers, in the shape kith gives them, on `version`.
    async fn server(version: HttpVersion) -> String {
        serve(version, None).await
    }

    /// The same over TLS with `config` when given (an `https` URL).
    async fn serve(version: HttpVersion, tls: Option<Arc<rustls::ServerConfig>>) -> String {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let (status, body) = match (req.method(), req.uri().path(), req.uri().query()) {
                        (&Method::PUT, _, None) => (200, r#"{"revision":1}"#),
                        (&Method::GET, "/v1/kv/00000001", None) => (200, "value"),
                        (&Method::GET, "/v1/kv/00000001", Some("consistency=stale")) => {
                            (200, "stale value")
                        }
                        (&Method::GET, "/v1/kv/00000002", _) => {
                            (404, r#"{"error":{"code":"not_found","message":""}}"#)
                        }
                        _ => (503, r#"{"error":{"code":"no_leader","message":""}}"#),
                    };
                    let response = Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                        .expect("response");
                    Ok::<_, Infallible>(response)
                });
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let io: conn::Io = match acceptor {
                        None => TokioIo::new(Box::new(stream)),
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => TokioIo::new(Box::new(stream)),
                            Err(_) => return,
                        },
                    };
                    let _ = match version {
                        HttpVersion::Http1 => {
                            server1::Builder::new().serve_connection(io, service).await
                        }
                        HttpVersion::Http2 => {
                            server2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        }
                    };
                });
            }
        });
        format!("{scheme}://{addr}")
    }

    /// Plain HTTP, linearizable reads, following the leader.
    fn options(http: HttpVersion) -> KithOptions {
        KithOptions {
            http,
            stale: false,
            timeout: Duration::from_secs(5),
            follow_leader: true,
            tls: None,
            token: None,
        }
    }

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: Bytes::from_static(b"v"),
        }
    }

    fn get(key: &str) -> Op {
        Op::Get { key: key.into() }
    }

    #[tokio::test]
    async fn answers_are_classified_on_http1_and_http2() {
        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let url = server(version).await;
            let target =
                KithTarget::new(std::slice::from_ref(&url), 2, options(version)).expect("target");
            assert_eq!(target.exec(0, &put("00000001")).await, Ok(Outcome::Done));
            assert_eq!(target.exec(1, &get("00000001")).await, Ok(Outcome::Done));
            assert_eq!(
                target.exec(0, &get("00000002")).await,
                Ok(Outcome::NotFound)
            );
            assert_eq!(
                target.exec(1, &get("00000003")).await,
                Err(OpError::Status {
                    status: 503,
                    code: "no_leader".into()
                })
            );
            // Many concurrent requests share the two connections.
            let target = Arc::new(target);
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let target = target.clone();
                    tokio::spawn(async move { target.exec(i % 2, &put("00000009")).await })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.expect("task"), Ok(Outcome::Done), "{version:?}");
            }
            let stale = KithTarget::new(
                &[url],
                1,
                KithOptions {
                    stale: true,
                    ..options(version)
                },
            )
            .expect("target");
            assert_eq!(stale.exec(0, &get("00000001")).await, Ok(Outcome::Done));
        }
    }

    #[tokio::test]
    async fn answers_come_back_over_tls_on_http1_and_http2() {
        let cert = crate::conn::tests::TestCert::new("kith-target");
        let tls = ClientTls::new(&cert.ca_file, None).expect("client TLS");
        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let url = serve(version, Some(cert.server_config(&[b"h2", b"http/1.1"]))).await;
            assert!(url.starts_with("https://"));
            let target = KithTarget::new(
                &[url],
                2,
                KithOptions {
                    tls: Some(tls.clone()),
                    ..options(version)
                },
            )
            .expect("target");
            assert_eq!(target.exec(0, &put("00000001")).await, Ok(Outcome::Done));
            assert_eq!(target.exec(1, &get("00000001")).await, Ok(Outcome::Done));
            assert_eq!(
                target.exec(0, &get("00000002")).await,
                Ok(Outcome::NotFound)
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_moves_to_the_next_endpoint() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let live = server(HttpVersion::Http1).await;
        let target =
            KithTarget::new(&[dead, live], 1, options(HttpVersion::Http1)).expect("target");
        assert_eq!(
            target.exec(0, &put("00000001")).await,
            Err(OpError::Connect)
        );
        assert_eq!(target.exec(0, &put("00000001")).await, Ok(Outcome::Done));
    }

    /// Answers every PUT with `kith-leader: <leader>` and counts the PUTs it served.
    async fn naming_server(leader: Arc<std::sync::Mutex<String>>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let puts = Arc::new(AtomicUsize::new(0));
        let served = puts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let leader = leader.clone();
                let served = served.clone();
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    served.fetch_add(1, Ordering::SeqCst);
                    let named = leader.lock().expect("leader").clone();
                    async move {
                        let response = Response::builder()
                            .header("kith-leader", named)
                            .body(Full::new(Bytes::from_static(br#"{"revision":1}"#)))
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    server1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (format!("http://{addr}"), puts)
    }

    #[tokio::test]
    async fn writes_move_to_the_endpoint_named_as_leader_unless_told_not_to() {
        for follow in [true, false] {
            let leader = Arc::new(std::sync::Mutex::new(String::new()));
            let (a, a_puts) = naming_server(leader.clone()).await;
            let (b, b_puts) = naming_server(leader.clone()).await;
            *leader.lock().expect("leader") = format!("{b}/");
            let target = KithTarget::new(
                &[a.clone(), b.clone()],
                1,
                KithOptions {
                    follow_leader: follow,
                    ..options(HttpVersion::Http1)
                },
            )
            .expect("target");
            for _ in 0..5 {
                assert_eq!(target.exec(0, &put("00000001")).await, Ok(Outcome::Done));
            }
            let (a_n, b_n) = (a_puts.load(Ordering::SeqCst), b_puts.load(Ordering::SeqCst));
            if follow {
                assert_eq!((a_n, b_n), (1, 4), "only the first write goes through a");
            } else {
                assert_eq!((a_n, b_n), (5, 0), "--route any stays on its endpoint");
            }
            // A leader that is not one of the endpoints is not followed.
            *leader.lock().expect("leader") = "http://127.0.0.1:1".into();
            target.exec(0, &put("00000001")).await.expect("put");
            target.exec(0, &put("00000001")).await.expect("put");
            let (a_n, b_n) = (a_puts.load(Ordering::SeqCst), b_puts.load(Ordering::SeqCst));
            assert_eq!((a_n, b_n), if follow { (1, 6) } else { (7, 0) });
        }
    }

    #[test]
    fn endpoints_must_be_urls_and_https_needs_a_ca() {
        let bad = |e: &str| KithTarget::new(&[e.into()], 1, options(HttpVersion::Http1)).is_err();
        assert!(bad("https://127.0.0.1:1"), "https without --ca");
        assert!(bad("127.0.0.1:1"));
        assert!(bad("http://127.0.0.1:1/v1"));
        assert!(bad("http://"));
        assert!(!bad("http://127.0.0.1:1/"));
    }
}
