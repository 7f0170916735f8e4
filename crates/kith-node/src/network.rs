//! The client half of the peer transport.
//!
//! Every peer message is an HTTP/1.1 POST with a postcard body to the target's
//! `/internal/…` route, on one shared `reqwest` client: connections are pooled and kept
//! alive, `TCP_NODELAY` is on, and when the node listens on a specific IP its outgoing
//! connections are bound to that IP, so a packet's source address names the node that sent
//! it (the fault suite partitions nodes by address).
//!
//! Retries: openraft re-sends Raft RPCs itself (with backoff on `Unreachable`), so this layer
//! never retries them. Forwarded client requests are retried by [`crate::Node`] only when the
//! connection could not be made, i.e. when the request certainly was not delivered.
//!
//! [`FaultLayer`] is the fault suite's (`crates/kith-fault`) way to delay or drop outgoing
//! peer messages, since the test kernel has no netem. It is compiled in but inert: only a
//! node started with `--enable-fault-injection` accepts settings for it (through
//! `POST /internal/faults`), and with both knobs at zero it costs one atomic load per message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};

use crate::protocol::{route, ForwardError, ForwardRequest, ForwardResponse};
use kith_core::NodeId;
use kith_storage::TypeConfig;

/// Content type of postcard bodies on the peer path.
pub const POSTCARD: &str = "application/x-kith-postcard";

/// Idle keep-alive connections kept per peer. An HTTP/1.1 connection carries one request at
/// a time, so a follower forwarding N writes at once holds N connections to the leader; with
/// fewer idle slots than that, every burst closed and reopened connections (a TCP handshake,
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
    #[error("peer {addr}: {message}")]
    Other { addr: String, message: String },
}

/// Settings of the [`FaultLayer`], as `POST /internal/faults` carries them (JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultSettings {
    /// Each outgoing peer message waits a uniformly random 0..=`delay_ms` before it is sent.
    pub delay_ms: u64,
    /// Each outgoing peer message is dropped (not sent; the caller sees a connect failure, as
    /// for a lost SYN) with this probability, in parts per million.
    pub drop_per_million: u32,
}

/// Test-only message delay and loss on this node's outgoing peer messages.
///
/// Written only by the `/internal/faults` handler (which refuses unless `enabled`), read by
/// every [`PeerTransport::call`]. Randomness comes from a SplitMix64 counter rather than a
/// crate: it only decides which test messages to disturb and never reaches a state machine.
#[derive(Debug, Default)]
pub struct FaultLayer {
    /// Fixed at start from `NodeConfig::fault_injection`; nothing can switch it on later.
    enabled: bool,
    /// Fast path: false while both knobs are zero.
    active: AtomicBool,
    delay_ms: AtomicU64,
    drop_per_million: AtomicU32,
    random_state: AtomicU64,
}

impl FaultLayer {
    pub fn new(enabled: bool) -> Self {
        FaultLayer {
            enabled,
            random_state: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            ..Default::default()
        }
    }

    /// Whether this node was started with fault injection allowed.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Applies `settings`; returns false (and changes nothing) unless enabled.
    pub fn set(&self, settings: FaultSettings) -> bool {
        if !self.enabled {
            return false;
        }
        self.delay_ms.store(settings.delay_ms, Ordering::Relaxed);
        self.drop_per_million
            .store(settings.drop_per_million.min(1_000_000), Ordering::Relaxed);
        let active = settings.delay_ms > 0 || settings.drop_per_million > 0;
        self.active.store(active, Ordering::Release);
        true
    }

    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            drop_per_million: self.drop_per_million.load(Ordering::Relaxed),
        }
    }

    /// SplitMix64 over a shared counter: uniform enough for choosing test faults.
    fn next_random(&self) -> u64 {
        let mut z = self
            .random_state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Delays and possibly drops one outgoing message; `Err` means "dropped".
    async fn disturb(&self) -> Result<(), ()> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let settings = self.settings();
        if settings.delay_ms > 0 {
            let ms = self.next_random() % (settings.delay_ms + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if (self.next_random() % 1_000_000) < u64::from(settings.drop_per_million) {
            return Err(());
        }
        Ok(())
    }
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
}

impl PeerTransport {
    pub fn new(
        listen: SocketAddr,
        timeout: Duration,
        faults: Arc<FaultLayer>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_PEER_MAX);
        if !listen.ip().is_unspecified() {
            builder = builder.local_address(listen.ip());
        }
        Ok(PeerTransport {
            http: builder.build()?,
            timeout,
            isolated: Arc::new(AtomicBool::new(false)),
            faults,
        })
    }

    /// Cuts (or restores) this node's outgoing peer traffic.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Relaxed);
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    /// POSTs `body` to `addr` + `path` and decodes the postcard answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, TransportError> {
        let other = |message: String| TransportError::Other {
            addr: addr.to_owned(),
            message,
        };
        if self.is_isolated() {
            return Err(TransportError::Connect {
                addr: addr.to_owned(),
                message: "this node is cut off from its peers (dev playground)".into(),
            });
        }
        let bytes = postcard::to_allocvec(body).map_err(|e| other(e.to_string()))?;
        if self.faults.disturb().await.is_err() {
            // A dropped message was certainly not delivered, like a connection never made.
            return Err(TransportError::Connect {
                addr: addr.to_owned(),
                message: "dropped by fault injection".into(),
            });
        }
        let response = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .timeout(timeout.unwrap_or(self.timeout))
            .body(bytes)
            .send()
            .await
            .map_err(|e| classify(addr, e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| classify(addr, e))?;
        if !status.is_success() {
            return Err(other(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )));
        }
        postcard::from_bytes(&bytes).map_err(|e| other(format!("undecodable answer: {e}")))
    }

    /// Sends a request to the leader at `addr`.
    pub async fn forward(
        &self,
        addr: &str,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<Result<ForwardResponse, ForwardError>, TransportError> {
        self.call(addr, route::FORWARD, request, Some(timeout))
            .await
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
            .get(format!("http://{addr}{path}"))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(addr, e))?;
        response.json().await.map_err(|e| classify(addr, e))
    }
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
        }
    }
}

/// openraft's view of the link to one peer.
pub struct PeerConnection {
    transport: PeerTransport,
    target: NodeId,
    addr: String,
}

impl PeerConnection {
    async fn rpc<Req, Resp, E>(
        &self,
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
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .transport
            .call(&self.addr, path, request, Some(option.hard_ttl()))
            .await
            .map_err(|e| match e {
                TransportError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                    action,
                    id: 0,
                    target: self.target,
                    timeout: option.hard_ttl(),
                }),
                TransportError::Other { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(
            route::APPEND,
            &rpc,
            &option,
            openraft::RPCTypes::AppendEntries,
        )
        .await
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
        self.rpc(route::VOTE, &rpc, &option, openraft::RPCTypes::Vote)
            .await
    }
}
