//! The sending half of the peer protocol.
//!
//! Every peer message is an HTTP/1.1 POST with a postcard body to the target's
//! `/internal/…` route, with `TCP_NODELAY` on. When the node listens on a specific IP its
//! outgoing connections are bound to that IP, so a packet's source address names the node
//! that sent it (the fault suite partitions nodes by address).
//!
//! Two kinds of connection carry them:
//! - Raft RPCs go over a connection each [`PeerConnection`] owns, one per replication stream
//!   and kept for its life: those RPCs are sequential per stream, and a lone write waits on
//!   two of them (the entries, then the commit index), so the path is kept as short as hyper
//!   allows.
//! - Forwarded client requests, file chunks and status reads, which run many at once, share
//!   one pooled `reqwest` client.
//!
//! Size: no message leaves larger than the peer body limit every node accepts
//! ([`crate::peer::protocol::peer_body_bytes_max`]); encoding stops as soon as a message would
//! pass it, so an over-large one costs at most that many bytes of work. An AppendEntries
//! request that would pass it answers openraft with `PayloadTooLarge` and the number of its
//! entries that fit; openraft's replication stream sends that many at once and keeps to
//! the hint for its next RPCs. A follower behind by gigabytes so catches up in requests it
//! accepts, one entry at least (no entry is larger than the limit: see `protocol`).
//!
//! Retries: openraft re-sends Raft RPCs itself (with backoff on `Unreachable`), so this layer
//! never retries one that may have been delivered; the only exception is a request hyper
//! hands back unsent because its kept connection had closed, which goes once more on a fresh
//! one. Forwarded client requests are retried by [`crate::Node`] only when the connection
//! could not be made, i.e. when the request certainly was not delivered.
//!
//! Every outgoing message passes the node's [`FaultLayer`] (inert unless the fault suite
//! set it).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};

use super::faults::FaultLayer;
use super::links::MessageKind;
use super::protocol::{ForwardError, ForwardRequest, ForwardResponse};
use super::route;
use kith_core::NodeId;
use kith_storage::{LogGate, TypeConfig};

/// Content type of postcard bodies on the peer path.
pub const POSTCARD: &str = "application/x-kith-postcard";

/// Idle keep-alive connections kept per peer. An HTTP/1.1 connection carries one request at
/// a time, so a follower forwarding N writes at once holds N connections to the leader; with
/// fewer idle slots than that, every burst closes and reopens connections (a TCP handshake,
/// a teardown and a fresh server-side connection task per forwarded write). 256 covers the
/// concurrency kith's benchmarks drive.
const IDLE_CONNECTIONS_PER_PEER_MAX: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A failure to exchange one message with a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection could not be made: the request was certainly not delivered.
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("timed out talking to {addr}")]
    Timeout { addr: String },
    /// The message would pass the peer body limit; it was not sent.
    #[error("a message to {addr} would pass the peer body limit of {bytes_max} bytes")]
    TooLarge { addr: String, bytes_max: usize },
    #[error("peer {addr}: {message}")]
    Other { addr: String, message: String },
}

/// Shared peer client; cheap to clone.
#[derive(Clone)]
pub struct PeerTransport {
    http: reqwest::Client,
    /// Default per-request timeout when the caller has none.
    timeout: Duration,
    /// Dev playground fault: while set, every outgoing peer message fails as if the network
    /// were cut. Only `kith dev` can set it (see `Node::set_isolated`).
    isolated: Arc<AtomicBool>,
    /// Test-only delay and loss, inert unless the node allows fault injection.
    faults: Arc<FaultLayer>,
    /// The address outgoing connections are bound to, when the node listens on one.
    local_ip: Option<IpAddr>,
    /// Largest encoded message sent (`peer::protocol::peer_body_bytes_max`, what peers accept).
    body_bytes_max: usize,
    /// This node's log's durable index, which AppendEntries waits on (see
    /// `kith_storage::durability`).
    log_gate: LogGate,
    /// With TLS: the handshake for Raft connections (the pool has its own copy of the
    /// configuration). Both present this node's certificate and trust only the cluster CA.
    tls: Option<tokio_rustls::TlsConnector>,
    /// `http` or `https`, for the pooled client's URLs.
    scheme: &'static str,
    /// What the last messages to each peer found.
    links: Arc<super::links::Links>,
}

impl PeerTransport {
    pub fn new(
        log_gate: LogGate,
        listen: SocketAddr,
        timeout: Duration,
        body_bytes_max: usize,
        faults: Arc<FaultLayer>,
        tls: Option<&crate::tls::NodeTls>,
    ) -> Result<Self, TransportError> {
        let config_error = |message: String| TransportError::Other {
            addr: "this node's TLS configuration".into(),
            message,
        };
        kith_client::tls::install_default_provider();
        let mut protocol = reqwest::header::HeaderMap::new();
        protocol.insert(
            super::protocol::PROTOCOL_HEADER,
            reqwest::header::HeaderValue::from(super::protocol::protocol_version()),
        );
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .default_headers(protocol)
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_PEER_MAX);
        let local_ip = (!listen.ip().is_unspecified()).then_some(listen.ip());
        if let Some(ip) = local_ip {
            builder = builder.local_address(ip);
        }
        let mut connector = None;
        if let Some(tls) = tls {
            let options = tls.client_options();
            let pooled = options
                .client_config(&[b"http/1.1"])
                .map_err(|e| config_error(e.to_string()))?;
            builder = builder.tls_backend_preconfigured(pooled);
            let raft = options
                .client_config(&[b"http/1.1"])
                .map_err(|e| config_error(e.to_string()))?;
            connector = Some(tokio_rustls::TlsConnector::from(Arc::new(raft)));
        }
        Ok(PeerTransport {
            http: builder.build().map_err(|e| config_error(e.to_string()))?,
            scheme: if connector.is_some() { "https" } else { "http" },
            links: Arc::new(super::links::Links::new(connector.is_some())),
            tls: connector,
            timeout,
            isolated: Arc::new(AtomicBool::new(false)),
            faults,
            local_ip,
            body_bytes_max,
            log_gate,
        })
    }

    /// Waits (at most `ttl`) until this node's log holds `index` durably.
    async fn log_holds(&self, index: u64, ttl: Duration) -> Result<(), TransportError> {
        if self.log_gate.holds(index, ttl).await {
            return Ok(());
        }
        Err(TransportError::Other {
            addr: "this node's log".into(),
            message: format!("index {index} not durable within {} ms", ttl.as_millis()),
        })
    }

    /// Cuts (or restores) this node's outgoing peer traffic.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Relaxed);
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    /// The checks every outgoing peer message passes (the playground's cut, the fault
    /// layer), then its postcard encoding, at most `body_bytes_max` bytes. `Err` means the
    /// message was not sent.
    async fn admit<Req: Serialize>(
        &self,
        addr: &str,
        body: &Req,
    ) -> Result<Vec<u8>, TransportError> {
        if self.is_isolated() {
            return Err(TransportError::Connect {
                addr: addr.to_owned(),
                message: "this node is cut off from its peers (dev playground)".into(),
            });
        }
        let capped = CappedVec {
            bytes: Vec::new(),
            bytes_max: self.body_bytes_max,
        };
        let bytes = postcard::serialize_with_flavor(body, capped).map_err(|e| match e {
            postcard::Error::SerializeBufferFull => TransportError::TooLarge {
                addr: addr.to_owned(),
                bytes_max: self.body_bytes_max,
            },
            e => TransportError::Other {
                addr: addr.to_owned(),
                message: e.to_string(),
            },
        })?;
        if self.faults.disturb().await.is_err() {
            // A dropped message was certainly not delivered, like a connection never made.
            return Err(TransportError::Connect {
                addr: addr.to_owned(),
                message: "dropped by fault injection".into(),
            });
        }
        Ok(bytes)
    }

    /// A new HTTP/1.1 connection to `addr`, bound to this node's address like the pool's.
    async fn open_link(&self, addr: &str) -> Result<Link, TransportError> {
        let connect = |message: String| TransportError::Connect {
            addr: addr.to_owned(),
            message,
        };
        let open = async {
            let target = tokio::net::lookup_host(addr)
                .await
                .map_err(|e| connect(e.to_string()))?
                .next()
                .ok_or_else(|| connect("the address resolves to nothing".into()))?;
            let socket = if target.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(|e| connect(e.to_string()))?;
            if let Some(ip) = self.local_ip {
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|e| connect(e.to_string()))?;
            }
            let stream = socket
                .connect(target)
                .await
                .map_err(|e| connect(e.to_string()))?;
            stream
                .set_nodelay(true)
                .map_err(|e| connect(e.to_string()))?;
            let Some(tls) = &self.tls else {
                return handshake(stream).await.map_err(connect);
            };
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
                .map_err(|e| connect(format!("not a server name: {e}")))?
                .to_owned();
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|e| connect(format!("TLS handshake: {e}")))?;
            handshake(stream).await.map_err(connect)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .unwrap_or_else(|_| Err(connect("connect timed out".into())))
    }

    /// POSTs `body` to `addr` + `path` and decodes the postcard answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        kind: MessageKind,
        path: &str,
        body: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, TransportError> {
        let bytes = self.admit(addr, body).await?;
        let answer = async {
            let response = self
                .http
                .post(format!("{}://{addr}{path}", self.scheme))
                .header(reqwest::header::CONTENT_TYPE, POSTCARD)
                .timeout(timeout.unwrap_or(self.timeout))
                .body(bytes)
                .send()
                .await
                .map_err(|e| classify(addr, e))?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| classify(addr, e))?;
            decode_answer(addr, status, &bytes)
        }
        .await;
        self.links.note(
            addr,
            kind,
            answer.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        );
        answer
    }

    /// Sends a request to the leader at `addr`.
    pub async fn forward(
        &self,
        addr: &str,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<Result<ForwardResponse, ForwardError>, TransportError> {
        let kind = match request {
            ForwardRequest::Write(_) | ForwardRequest::Writes(_) => MessageKind::Forward,
            _ => MessageKind::Query,
        };
        self.call(addr, kind, route::FORWARD, request, Some(timeout))
            .await
    }

    /// What the last messages to each peer found.
    pub fn links(&self) -> &super::links::Links {
        &self.links
    }

    /// `http` or `https`: the scheme of this node's peers' URLs.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The pooled client itself, for peer traffic that is not a postcard RPC (file chunks).
    /// Callers check [`PeerTransport::is_isolated`] first, as [`PeerTransport::call`] does.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A GET of a JSON document, for gathering other members' status.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, TransportError> {
        let response = self
            .http
            .get(format!("{}://{addr}{path}", self.scheme))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(addr, e))?;
        response.json().await.map_err(|e| classify(addr, e))
    }
}

/// An HTTP/1.1 client connection over `stream`; its I/O runs on its own task and ends when
/// the returned link is dropped.
async fn handshake<S>(stream: S) -> Result<Link, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (link, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(link)
}

/// postcard output that refuses to grow past `bytes_max`: a message too large to send is
/// found after encoding at most that many bytes of it, and never held whole.
struct CappedVec {
    bytes: Vec<u8>,
    bytes_max: usize,
}

impl postcard::ser_flavors::Flavor for CappedVec {
    type Output = Vec<u8>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.bytes_max - self.bytes.len() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.bytes)
    }
}

/// How many of `request`'s entries, from the first, fit in a request of `bytes_max`
/// encoded bytes; at least one. Measured only once a request has turned out too large.
fn entries_fitting(request: &AppendEntriesRequest<TypeConfig>, bytes_max: usize) -> u64 {
    let header = AppendEntriesRequest::<TypeConfig> {
        vote: request.vote,
        prev_log_id: request.prev_log_id,
        leader_commit: request.leader_commit,
        entries: Vec::new(),
    };
    // postcard writes the entry count as a varint: 7 bits a byte. The empty request holds a
    // one-byte count.
    let count_bytes = |n: u64| (64 - n.leading_zeros()).div_ceil(7).max(1) as usize;
    let header = postcard::experimental::serialized_size(&header)
        .map_or(0, |b| b.saturating_sub(count_bytes(0)));
    let mut entries_bytes = 0usize;
    let mut fitting = 0u64;
    for entry in &request.entries {
        let entry_bytes = postcard::experimental::serialized_size(entry).unwrap_or(usize::MAX / 4);
        entries_bytes = entries_bytes.saturating_add(entry_bytes);
        if header + count_bytes(fitting + 1) + entries_bytes > bytes_max {
            break;
        }
        fitting += 1;
    }
    fitting.max(1)
}

/// A peer's answer: its postcard body when the status is a success, else the status and
/// the start of the body as the error.
fn decode_answer<Resp: DeserializeOwned>(
    addr: &str,
    status: hyper::StatusCode,
    bytes: &[u8],
) -> Result<Resp, TransportError> {
    let other = |message: String| TransportError::Other {
        addr: addr.to_owned(),
        message,
    };
    if !status.is_success() {
        return Err(other(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )));
    }
    postcard::from_bytes(bytes).map_err(|e| other(format!("undecodable answer: {e}")))
}

fn classify(addr: &str, e: reqwest::Error) -> TransportError {
    let addr = addr.to_owned();
    if e.is_connect() {
        TransportError::Connect {
            addr,
            message: e.to_string(),
        }
    } else if e.is_timeout() {
        TransportError::Timeout { addr }
    } else {
        TransportError::Other {
            addr,
            message: e.to_string(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerTransport {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            transport: self.clone(),
            target,
            addr: node.addr.clone(),
            link: None,
        }
    }
}

/// openraft's view of the link to one peer.
///
/// openraft makes one of these per replication stream (and one per election), and calls it
/// one RPC at a time, so it owns a single HTTP/1.1 connection outright instead of checking
/// one out of `reqwest`'s pool per message: on a lone write's path the pool checkout, URL
/// parsing and per-request timer cost more than the follower's own work. The connection is
/// dropped on any failure and made again for the next message.
pub struct PeerConnection {
    transport: PeerTransport,
    target: NodeId,
    addr: String,
    link: Option<Link>,
}

type Link = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl PeerConnection {
    async fn rpc<Req, Resp, E>(
        &mut self,
        kind: MessageKind,
        path: &str,
        request: &Req,
        option: &RPCOption,
        action: openraft::RPCTypes,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .exchange(kind, path, request, ttl)
            .await
            .map_err(|e| self.rpc_error(e, action, ttl))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// openraft's name for a transport failure.
    fn rpc_error<E: std::error::Error>(
        &self,
        e: TransportError,
        action: openraft::RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, BasicNode, E> {
        match e {
            TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: 0,
                target: self.target,
                timeout: ttl,
            }),
            TransportError::TooLarge { .. } | TransportError::Other { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }

    /// One request and its answer over this peer's own connection, within `ttl`.
    async fn exchange<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: MessageKind,
        path: &str,
        body: &Req,
        ttl: Duration,
    ) -> Result<Resp, TransportError> {
        let bytes = match self.transport.admit(&self.addr, body).await {
            Ok(bytes) => bytes,
            Err(e) => {
                if matches!(e, TransportError::Connect { .. }) {
                    self.transport.links.note(&self.addr, kind, Some(&e));
                }
                return Err(e);
            }
        };
        let result = tokio::time::timeout(ttl, self.round_trip(path, bytes)).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(_) => Err(TransportError::Timeout {
                addr: self.addr.clone(),
            }),
        };
        let failure = match &outcome {
            Err(e) => Some(e.to_string()),
            // The peer answered but will not take part: it does not admit this node (403),
            // it is cut off or overloaded (503), or it refused for another reason.
            Ok((status, _)) if *status == hyper::StatusCode::FORBIDDEN => Some(format!(
                "{}: refused (403): not a member in its view",
                self.addr
            )),
            Ok((status, _)) if *status == hyper::StatusCode::SERVICE_UNAVAILABLE => {
                Some(format!("{}: unavailable (503)", self.addr))
            }
            // Any other refusal says why in its body (426: another protocol version).
            Ok((status, bytes)) if !status.is_success() => Some(format!(
                "{}: refused ({status}): {}",
                self.addr,
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )),
            Ok(_) => None,
        };
        self.transport.links.note(
            &self.addr,
            kind,
            failure.as_ref().map(|f| f as &dyn std::fmt::Display),
        );
        if outcome.is_err() {
            // Whatever state the connection is in (half-written request, unread answer),
            // it cannot carry the next message.
            self.link = None;
        }
        let (status, bytes) = outcome?;
        decode_answer(&self.addr, status, &bytes)
    }

    async fn round_trip(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Bytes), TransportError> {
        let other = |message: String| TransportError::Other {
            addr: self.addr.clone(),
            message,
        };
        let mut request = self.request(path, Bytes::from(body));
        // A kept connection may have been closed by the peer (a restart) since its last
        // message. hyper hands a request back when it was certainly not sent; only then is
        // it sent again, once, on a fresh connection.
        for attempt in 0..2 {
            let link = match self.link.as_mut() {
                Some(link) if !link.is_closed() => link,
                _ => self
                    .link
                    .insert(self.transport.open_link(&self.addr).await?),
            };
            if link.ready().await.is_err() {
                self.link = None;
                continue;
            }
            match link.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| other(format!("reading the answer: {e}")))?
                        .to_bytes();
                    return Ok((status, bytes));
                }
                Err(mut failed) => {
                    self.link = None;
                    match failed.take_message() {
                        Some(unsent) if attempt == 0 => request = unsent,
                        _ => return Err(other(failed.into_error().to_string())),
                    }
                }
            }
        }
        Err(other(
            "the connection closed before the message was sent".into(),
        ))
    }

    fn request(&self, path: &str, body: Bytes) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = hyper::Uri::try_from(path).unwrap_or_default();
        let headers = request.headers_mut();
        if let Ok(host) = hyper::header::HeaderValue::from_str(&self.addr) {
            headers.insert(hyper::header::HOST, host);
        }
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(POSTCARD),
        );
        headers.insert(
            super::protocol::PROTOCOL_HEADER,
            hyper::header::HeaderValue::from(super::protocol::protocol_version()),
        );
        request
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // The transport's gate: the commit index sent and the acknowledgement returned wait
        // until this node's log holds them durably (see `kith_storage::durability`).
        let ttl = option.hard_ttl();
        let gate = |e: TransportError| RPCError::Network(NetworkError::new(&e));
        let commit = rpc.leader_commit.map_or(0, |l| l.index);
        self.transport.log_holds(commit, ttl).await.map_err(gate)?;
        let acked = rpc
            .entries
            .last()
            .map(|e| e.log_id.index)
            .or(rpc.prev_log_id.map(|l| l.index))
            .unwrap_or(0);
        let kind = if rpc.entries.is_empty() {
            MessageKind::Heartbeat
        } else {
            MessageKind::Append
        };
        let sent: Result<Result<_, RaftError<NodeId>>, _> =
            self.exchange(kind, route::APPEND, &rpc, ttl).await;
        let answer = match sent {
            // Fewer entries fit: openraft sends that many at once, and keeps to the hint for
            // its next few requests. A lone entry never passes the limit (see `protocol`);
            // if one did, it fails below as a network error, and never goes out.
            Err(TransportError::TooLarge { bytes_max, .. }) if rpc.entries.len() > 1 => {
                let hint = entries_fitting(&rpc, bytes_max);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ));
            }
            outcome => outcome
                .map_err(|e| self.rpc_error(e, openraft::RPCTypes::AppendEntries, ttl))?
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))?,
        };
        let holds = match &answer {
            AppendEntriesResponse::Success => Some(acked),
            AppendEntriesResponse::PartialSuccess(upto) => upto.map(|l| l.index),
            AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => None,
        };
        if let Some(index) = holds {
            self.transport.log_holds(index, ttl).await.map_err(gate)?;
        }
        Ok(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(
            MessageKind::Snapshot,
            route::SNAPSHOT,
            &rpc,
            &option,
            openraft::RPCTypes::InstallSnapshot,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(
            MessageKind::Vote,
            route::VOTE,
            &rpc,
            &option,
            openraft::RPCTypes::Vote,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_core::{Command, Proposal};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    fn entry(index: u64, value_bytes: usize) -> Entry<TypeConfig> {
        let put = Command::Put {
            key: format!("k{index}"),
            value: vec![7; value_bytes],
            if_revision: None,
            ttl_ms: None,
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(vec![Proposal {
                now_ms: 1,
                command: put,
            }]),
        }
    }

    fn request(value_bytes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 0)),
            leader_commit: None,
            entries: (1..).zip(value_bytes).map(|(i, b)| entry(i, *b)).collect(),
        }
    }

    fn encoded(request: &AppendEntriesRequest<TypeConfig>) -> usize {
        postcard::to_allocvec(request).expect("encodes").len()
    }

    /// A transport that never gets as far as connecting: every message goes to a port
    /// nothing listens on (1), so only what happens before sending can succeed.
    fn connection(body_bytes_max: usize) -> PeerConnection {
        let listen = "127.0.0.1:0".parse().expect("address");
        let faults = Arc::new(FaultLayer::new(false));
        let dir = tempfile::TempDir::new().expect("temp dir");
        let stores = kith_storage::open(dir.path(), 1, Default::default()).expect("stores");
        let transport = PeerTransport::new(
            stores.log_gate,
            listen,
            Duration::from_secs(1),
            body_bytes_max,
            faults,
            None,
        )
        .expect("client");
        PeerConnection {
            transport,
            target: 2,
            addr: "127.0.0.1:1".into(),
            link: None,
        }
    }

    #[test]
    fn capped_encoding_stops_at_the_bound() {
        let request = request(&[1000, 1000]);
        let exact = encoded(&request);
        let fits = CappedVec {
            bytes: Vec::new(),
            bytes_max: exact,
        };
        let bytes = postcard::serialize_with_flavor(&request, fits).expect("fits exactly");
        assert_eq!(bytes, postcard::to_allocvec(&request).expect("encodes"));
        let short = CappedVec {
            bytes: Vec::new(),
            bytes_max: exact - 1,
        };
        assert_eq!(
            postcard::serialize_with_flavor(&request, short).unwrap_err(),
            postcard::Error::SerializeBufferFull
        );
    }

    #[test]
    fn the_hint_names_the_most_entries_that_fit() {
        let sizes = [3000, 5000, 1000, 4000];
        let whole = request(&sizes);
        for n in 1..=sizes.len() {
            let first_n = encoded(&request(&sizes[..n]));
            assert_eq!(entries_fitting(&whole, first_n) as usize, n, "{n} entries");
            if n > 1 {
                assert_eq!(entries_fitting(&whole, first_n - 1) as usize, n - 1);
            }
        }
        // A first entry larger than the bound alone: still one (a request carries one).
        assert_eq!(entries_fitting(&whole, 10), 1);
    }

    #[tokio::test]
    async fn an_append_too_large_to_send_asks_openraft_for_fewer_entries() {
        let sizes = [3000, 5000, 1000, 4000];
        let bytes_max = encoded(&request(&sizes[..2]));
        let mut peer = connection(bytes_max);
        let option = RPCOption::new(Duration::from_secs(1));
        match peer.append_entries(request(&sizes), option.clone()).await {
            Err(RPCError::PayloadTooLarge(e)) => assert_eq!(e.entries_hint(), 2),
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        // One entry alone is never split further: it fails (without being sent).
        let mut peer = connection(10);
        match peer
            .append_entries(request(&sizes[..1]), option.clone())
            .await
        {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("peer body limit")),
            other => panic!("expected a network error, got {other:?}"),
        }
        // Within the bound the request goes out (and finds nobody listening).
        let mut peer = connection(bytes_max);
        match peer.append_entries(request(&sizes[..2]), option).await {
            Err(RPCError::Unreachable(_)) => {}
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
