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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Idle keep-alive connections kept per peer.
const IDLE_CONNECTIONS_PER_PEER_MAX: usize = 16;
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

/// Shared peer client; cheap to clone.
#[derive(Clone)]
pub struct PeerTransport {
    http: reqwest::Client,
    /// Default per-request timeout when the caller has none.
    timeout: Duration,
    /// Dev playground fault: while set, every outgoing peer message fails as if the network
    /// were cut. Only `kith dev` can set it (see `Node::set_isolated`).
    isolated: Arc<AtomicBool>,
}

impl PeerTransport {
    pub fn new(listen: SocketAddr, timeout: Duration) -> Result<Self, reqwest::Error> {
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
