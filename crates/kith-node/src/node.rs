//! [`Node`]: the running node as the HTTP layer sees it.
//!
//! Any node accepts any request. A write on a follower is forwarded to the leader over the
//! peer transport ([`ForwardRequest::Write`]); the client never sees a redirect. A
//! linearizable read on a follower asks the leader for a read index
//! ([`ForwardRequest::ReadIndex`]: the leader confirms with a quorum that it is still leader),
//! waits until its own state machine has applied that index, and then reads locally — so read
//! load spreads over the cluster. A stale read is served from local state at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

use crate::batcher::ProposalBatcher;
use crate::forwarder::{ForwardWrites, Forwarder, FORWARD_COMMANDS_MAX};
use crate::peer::client::{PeerTransport, TransportError};
use crate::peer::faults::FaultLayer;
use crate::peer::protocol::{write_error, ForwardError, ForwardRequest, ForwardResponse};
use crate::read_batcher::ReadIndexBatcher;
use crate::{NodeConfig, NodeError};
use kith_core::jobs::JobCommand;
use kith_core::ledger::to_hex;
use kith_core::limits::{InvalidInput, Limits};
use kith_core::{Command, NodeId, Proposal, Response};
use kith_storage::{LogStore, StateReader, StoreConfig, TypeConfig};

/// Entries per AppendEntries RPC (openraft's `max_payload_entries`). Their bytes are bounded
/// apart from this, by the transport (`peer::protocol::peer_body_bytes_max`).
pub const APPEND_ENTRIES_MAX: u64 = 64;
/// Most claim long-polls (`POST /v1/queues/{q}/claim?wait=S`, S > 0) one node holds open at
/// once: each holds a task and an apply subscription for up to its wait.
pub const CLAIM_WAITS_MAX: usize = 1024;
/// Attempts to find and reach the leader for one request.
const LEADER_ATTEMPTS_MAX: u32 = 5;
/// How long adding a member may take, catch-up included.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout for asking another member for its status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often [`Node::raft_stopped`] looks whether the Raft core has stopped.
const RAFT_STOPPED_CHECK: Duration = Duration::from_millis(100);

/// Read consistency, as in etcd: linearizable (default) or stale (local, possibly behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// What `/v1/health` reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub node_id: NodeId,
    pub role: String,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// The last log index this node's log holds durably (fsynced). On the leader, whose
    /// fsync overlaps replication, the commit index never passes it.
    #[serde(default)]
    pub durable_index: u64,
    /// Last log index covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Log entries up to here have been compacted away.
    pub purged_index: Option<u64>,
    /// The kv store's revision on this node.
    pub revision: u64,
    /// The ledger head on this node: index of the last applied entry and the chain's hash.
    pub ledger_index: u64,
    pub ledger_hash: String,
    /// Public API requests this node has served, and how many of them were writes.
    pub requests_total: u64,
    pub writes_total: u64,
    /// Bytes of this node's data files (log, state, snapshot).
    pub disk_bytes: u64,
    /// True when the node knows a leader and belongs to the cluster, i.e. can serve.
    pub ready: bool,
    /// File chunks this node holds, and their bytes.
    #[serde(default)]
    pub file_chunks: u64,
    #[serde(default)]
    pub file_chunk_bytes: u64,
    /// This node's storage quota and how much of it is used.
    #[serde(default)]
    pub quota: crate::quota::QuotaUsage,
    /// This node's links to the other members, as its last messages found them.
    #[serde(default)]
    pub links: Vec<crate::peer::links::LinkStatus>,
    /// On the leader, how long ago a quorum last acknowledged it (openraft's clock as of
    /// its last tick); `None` on any other node.
    #[serde(default)]
    pub quorum_ack_age_ms: Option<u64>,
    /// The kith version this node runs (empty from a node too old to say).
    #[serde(default)]
    pub version: String,
}

/// One member in `/v1/cluster`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    pub reachable: bool,
    /// The member's own report, when it answered.
    pub role: Option<String>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub ledger_index: Option<u64>,
    pub ledger_hash: Option<String>,
    pub last_log_index: Option<u64>,
    pub durable_index: Option<u64>,
    pub requests_total: Option<u64>,
    pub writes_total: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub file_chunks: Option<u64>,
    pub file_chunk_bytes: Option<u64>,
    pub quota: Option<crate::quota::QuotaUsage>,
    /// The member's links to the others, as its last messages found them.
    pub links: Option<Vec<crate::peer::links::LinkStatus>>,
    /// The kith version the member runs (a rolling upgrade shows two).
    pub version: Option<String>,
    /// Highest log index the leader knows this member has (leader's view).
    pub match_index: Option<u64>,
    /// Entries this member is behind the leader's log.
    pub lag: Option<u64>,
}

/// A running node. Shared by the HTTP handlers behind an `Arc`.
pub struct Node {
    pub config: NodeConfig,
    raft: Raft<TypeConfig>,
    log: LogStore,
    state: StateReader,
    transport: PeerTransport,
    /// Groups the writes this node proposes as leader into few log entries (group commit).
    batcher: ProposalBatcher,
    /// Shares one leadership confirmation between concurrent linearizable reads.
    read_batcher: ReadIndexBatcher,
    /// Sends the writes this node receives as a follower to the leader together.
    forwarder: Forwarder,
    /// Test-only delay and loss on outgoing peer messages; shared with `transport`.
    faults: Arc<FaultLayer>,
    /// The TTL expiry driver; aborted by [`Node::shutdown`].
    expiry_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bounds concurrent watch streams (`watchers_max`).
    pub watchers: Arc<tokio::sync::Semaphore>,
    /// Bounds open claim long-polls ([`CLAIM_WAITS_MAX`]); a permit lives as long as the
    /// poll.
    pub claim_waits: Arc<tokio::sync::Semaphore>,
    /// Request counters, written by the HTTP layer, read by `/v1/health` and `/metrics`.
    pub stats: Stats,
    /// This node's chunk store and files background work (see [`crate::files`]).
    pub files: crate::files::Blobs,
    /// The storage quota's measure and check (see [`crate::quota`]).
    pub quota: Arc<crate::quota::Quota>,
    /// Set once this leader is handing leadership over before it stops: it takes no new
    /// writes, so a follower can hold its whole log and win the election it is asked to
    /// start.
    stepping_down: std::sync::atomic::AtomicBool,
    /// Set once the node has begun a planned stop: long-lived answers (watch and room
    /// streams, waiting claims) end, so in-flight requests finish and the server drains.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// Counters a node keeps about the requests it served.
#[derive(Debug, Default)]
pub struct Stats {
    /// Public API requests received by this node.
    pub requests: std::sync::atomic::AtomicU64,
    /// Of those, requests that change state (any method but GET/HEAD).
    pub writes: std::sync::atomic::AtomicU64,
}

/// Milliseconds since the Unix epoch on this machine's clock. Read on the leader to stamp
/// proposals, and by a node judging a share link's expiry; state machines never call it.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Opens the data directory and starts the Raft core. The node recovers its vote, log
    /// and applied state from disk; a fresh node waits to be initialized or joined.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, NodeError> {
        if config.dev_ledger_tamper_index.is_some() && config.dev_control.is_none() {
            return Err(NodeError::Internal(
                "altering the ledger is for nodes started by `kith dev` only".into(),
            ));
        }
        let store_config = StoreConfig {
            events_kept: config.events_kept,
            events_bytes_kept: config.events_bytes_kept,
            ledger_kept: config.ledger_kept,
            ledger_tamper_index: config.dev_ledger_tamper_index,
        };
        let kith_storage::NodeStores {
            log,
            state_machine: sm,
            log_gate,
        } = kith_storage::open(&config.data_dir, config.id, store_config)?;
        let state = sm.reader();
        let raft_config = openraft::Config {
            cluster_name: "kith".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_ms_min,
            election_timeout_max: config.election_timeout_ms_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: config.snapshot_logs_keep,
            max_payload_entries: APPEND_ENTRIES_MAX,
            snapshot_max_chunk_size: crate::peer::protocol::SNAPSHOT_CHUNK_BYTES_MAX as u64,
            install_snapshot_timeout: 2_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Internal(format!("raft config: {e}")))?;
        let files = crate::files::Blobs::open(&config)?;
        let quota =
            crate::quota::Quota::start(config.quota_bytes, state.clone(), files.store.clone())
                .await;
        let faults = Arc::new(FaultLayer::new(config.fault_injection));
        // The leader's fsync overlaps replication, behind the gates of
        // `kith_storage::durability`; `log_gate` is the transport's.
        let transport = PeerTransport::new(
            log_gate,
            config.listen,
            config.peer_timeout,
            crate::peer::protocol::peer_body_bytes_max(&config),
            faults.clone(),
            config.tls.as_ref(),
        )
        .map_err(|e| NodeError::Internal(format!("peer transport: {e}")))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            transport.clone(),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| NodeError::Internal(format!("raft start: {e}")))?;
        let expiry = tokio::spawn(drive_expiry(
            raft.clone(),
            state.clone(),
            config.expiry_check_interval,
            config.request_timeout,
        ));
        let batcher = ProposalBatcher::start(
            raft.clone(),
            log.clone(),
            config.request_timeout,
            crate::peer::protocol::proposal_bytes_max(&config),
        );
        let read_batcher = ReadIndexBatcher::start(raft.clone(), config.request_timeout);
        let node = Arc::new_cyclic(|node| Node {
            files,
            quota,
            stepping_down: std::sync::atomic::AtomicBool::new(false),
            stopping: tokio::sync::watch::Sender::new(false),
            batcher,
            read_batcher,
            forwarder: Forwarder::start(node.clone()),
            watchers: Arc::new(tokio::sync::Semaphore::new(config.watchers_max)),
            claim_waits: Arc::new(tokio::sync::Semaphore::new(CLAIM_WAITS_MAX)),
            stats: Stats::default(),
            config,
            raft,
            log,
            state,
            transport,
            faults,
            expiry_task: std::sync::Mutex::new(Some(expiry)),
        });
        node.start_file_tasks();
        Ok(node)
    }

    /// Dev playground: cut this node off from its peers (outgoing peer messages fail, incoming
    /// ones are refused by `peer::server`), or heal it.
    pub fn set_isolated(&self, isolated: bool) {
        self.transport.set_isolated(isolated);
    }

    pub fn is_isolated(&self) -> bool {
        self.transport.is_isolated()
    }

    /// The applied state, for this crate's own passes. Callers outside it read through
    /// [`Node::read`], which runs the barrier first.
    pub(crate) fn state(&self) -> &StateReader {
        &self.state
    }

    /// The peer transport, whose pooled client also carries file chunks.
    pub(crate) fn transport(&self) -> &PeerTransport {
        &self.transport
    }

    /// The fault layer on outgoing peer messages, for `/internal/faults`.
    pub fn faults(&self) -> &FaultLayer {
        &self.faults
    }

    /// The openraft handle, for the peer RPC routes.
    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Whether `id` is in the membership this node knows (voter or learner): a restarted
    /// member need not ask to join again.
    pub fn knows_member(&self, id: NodeId) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// Whether `peer` may speak the peer protocol (`/internal`) to this node.
    ///
    /// Without TLS everyone may: the node then listens on loopback only, or its operator
    /// said `--insecure`. With TLS, only a certificate the cluster CA signed, naming this
    /// cluster and a node id in the membership this node knows (voters and learners, as
    /// soon as a change is in its log). A node that knows no membership yet — fresh, waiting
    /// to be initialized or joined — admits any certificate of its cluster, since the
    /// leader that will add it is not yet known to it. So a removed member's certificate
    /// stops working on each node as soon as that node has the change that removed it.
    pub fn admits_peer(&self, peer: Option<&crate::tls::Peer>) -> Result<(), String> {
        let Some(tls) = &self.config.tls else {
            return Ok(());
        };
        let Some(cert) = peer.and_then(|p| p.cert.as_ref()) else {
            return Err("the peer routes answer only members of this cluster, \
                        and this connection presented no node certificate"
                .into());
        };
        if !tls.same_cluster(cert) {
            return Err(format!(
                "the certificate belongs to cluster {}, not to this one",
                cert.cluster_id
            ));
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&cert.node_id).is_some() || membership.nodes().next().is_none() {
            return Ok(());
        }
        Err(format!(
            "node {} is not a member of this cluster",
            cert.node_id
        ))
    }

    /// Whether `host` (a request's `Host`, `NAME` or `NAME:PORT`) names this node: its listen
    /// or advertised address, `localhost` and the loopback addresses when it listens on
    /// loopback (or everywhere), its certificate's DNS names and `--host` names (those two
    /// with or without the node's port).
    pub fn accepts_host(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let listen = self.config.listen;
        let advertise = self.config.advertise.unwrap_or(listen);
        let ports = [listen.port(), advertise.port()];
        if host == listen.to_string() || host == advertise.to_string() {
            return true;
        }
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') && !port.contains(']') => {
                (name.to_owned(), port.parse::<u16>().ok())
            }
            _ => (host.clone(), None),
        };
        let port_ok = port.is_none_or(|p| ports.contains(&p));
        let local = listen.ip().is_loopback() || listen.ip().is_unspecified();
        if local && port_ok && ["localhost", "127.0.0.1", "[::1]"].contains(&name.as_str()) {
            return true;
        }
        let named = self
            .config
            .host_names
            .iter()
            .chain(self.config.tls.iter().flat_map(|t| t.dns_names()))
            .any(|n| n.eq_ignore_ascii_case(&name) || n.eq_ignore_ascii_case(&host));
        named && port_ok
    }

    /// Whether `origin` (`http://ADDR` or `https://ADDR`) is a member's own web origin.
    pub fn is_member_origin(&self, origin: &str) -> bool {
        let Some(addr) = origin.strip_prefix(&format!("{}://", self.transport.scheme())) else {
            return false;
        };
        let m = self.raft.metrics();
        let m = m.borrow();
        let found = m
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| n.addr == addr);
        found
    }

    /// The current Raft term as this node knows it.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The current leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is a voter in the membership it knows.
    pub fn is_voter(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.config.id);
        voter
    }

    /// The cluster's id, where TLS names one (`kith init`).
    pub fn cluster_name(&self) -> Option<String> {
        self.config.tls.as_ref().map(|t| t.cluster_id().to_owned())
    }

    /// Whether public requests must carry a token: on wherever TLS is on (see
    /// `kith_api::access`).
    pub fn auth_required(&self) -> bool {
        self.config.tls.is_some()
    }

    /// The token record `token` (`ID.SECRET`) names, if its secret matches and it is live.
    /// The first administrator's token (`admin.SECRET`, from `kith init`) is known by the
    /// hash in the node's TLS directory until a revocation of id `admin` is applied.
    pub fn authenticate(&self, token: &str) -> Result<kith_core::auth::TokenRecord, String> {
        use kith_core::auth::{split_token, Role, TokenRecord, BOOTSTRAP_ID};
        let unknown = || "unknown, expired or revoked token".to_owned();
        let (id, secret) = split_token(token).ok_or_else(unknown)?;
        let stored = self
            .state
            .token(id)
            .map_err(|e| format!("cannot read the token table: {e}"))?;
        let record = match stored {
            Some(record) => record,
            None if id == BOOTSTRAP_ID => {
                let hash = self
                    .config
                    .tls
                    .as_ref()
                    .and_then(|t| t.admin_hash())
                    .ok_or_else(unknown)?;
                TokenRecord {
                    id: BOOTSTRAP_ID.into(),
                    name: "the first administrator (kith init)".into(),
                    role: Role::Admin,
                    grants: Vec::new(),
                    hash,
                    created_ms: 0,
                    expires_ms: None,
                    revoked_ms: None,
                }
            }
            None => return Err(unknown()),
        };
        if !record.matches(secret)
            || record.revoked_ms.is_some()
            || record.expires_ms.is_some_and(|at| wall_clock_ms() >= at)
        {
            return Err(unknown());
        }
        Ok(record)
    }

    /// Every token record (revoked ones too), at most `limit`.
    pub fn tokens(&self, limit: usize) -> Result<Vec<kith_core::auth::TokenRecord>, NodeError> {
        Ok(self.state.token_list(limit)?)
    }

    /// Whether `peer` may change the membership. Without TLS anyone may (as every public
    /// route). With TLS, only with a certificate of this cluster: a current member's, or —
    /// to add itself, as `kith serve --join` does — the certificate of the node being added.
    pub fn may_change_membership(
        &self,
        peer: Option<&crate::tls::Peer>,
        adding: Option<NodeId>,
    ) -> Result<(), String> {
        let Some(tls) = &self.config.tls else {
            return Ok(());
        };
        let cert = peer.and_then(|p| p.cert.as_ref());
        let Some(cert) = cert.filter(|c| tls.same_cluster(c)) else {
            return Err(
                "changing the membership of a cluster with TLS takes a node \
                        certificate of this cluster (kith --tls DIR/node-N)"
                    .into(),
            );
        };
        if adding == Some(cert.node_id) || self.knows_member(cert.node_id) {
            return Ok(());
        }
        Err(format!(
            "node {}'s certificate may add only node {} itself, and it is not a member",
            cert.node_id, cert.node_id
        ))
    }

    /// Bootstraps a fresh cluster with `members` as its voters. Safe to call on every
    /// initial member with the same set, and on restart: an already-initialized node
    /// ignores it.
    pub async fn initialize(&self, members: BTreeMap<NodeId, BasicNode>) -> Result<(), NodeError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(NodeError::Internal(format!("initialize: {e}"))),
        }
    }

    /// Starts an election now (a stopping leader's request; see `hand_over_leadership`).
    pub async fn stand_for_election(&self) -> Result<(), String> {
        self.raft.trigger().elect().await.map_err(|e| e.to_string())
    }

    /// Before a planned stop: if this node leads, stops taking writes, waits (at most
    /// `within`) until a voter holds its whole log, asks that voter to stand for election at
    /// once, and waits (at most `within`) until another node leads. The others then need
    /// not wait out an election timeout first, as after a crash. A voter missing entries
    /// is never asked (it would lose and only cost a term). True when another node took
    /// over.
    pub async fn hand_over_leadership(&self, within: Duration) -> bool {
        if self.raft.metrics().borrow().current_leader != Some(self.config.id) {
            return false;
        }
        // No new writes from here: the followers catch up with a log that stops growing.
        self.stepping_down
            .store(true, std::sync::atomic::Ordering::Release);
        let mut metrics = self.raft.metrics();
        let me = self.config.id;
        let caught_up = timeout(
            within,
            metrics.wait_for(|m| {
                let voters: BTreeSet<NodeId> =
                    m.membership_config.membership().voter_ids().collect();
                m.replication.as_ref().is_some_and(|replication| {
                    replication.iter().any(|(id, matched)| {
                        *id != me
                            && voters.contains(id)
                            && matched.map(|l| l.index) == m.last_log_index
                    })
                })
            }),
        )
        .await;
        let Ok(Ok(m)) = caught_up.map(|r| r.map(|m| m.clone())) else {
            return false;
        };
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let Some(heir) = m.replication.as_ref().and_then(|replication| {
            replication
                .iter()
                .filter(|(id, matched)| {
                    **id != me
                        && voters.contains(id)
                        && matched.map(|l| l.index) == m.last_log_index
                })
                .map(|(id, _)| *id)
                .next()
        }) else {
            return false;
        };
        let Some(addr) = self.member_addr(heir) else {
            return false;
        };
        let asked: Result<(), _> = self
            .transport
            .call(
                &addr,
                crate::peer::links::MessageKind::Vote,
                crate::peer::route::ELECT,
                &(),
                Some(within),
            )
            .await;
        if let Err(e) = asked {
            tracing::warn!(heir, error = %e, "could not hand leadership over");
            return false;
        }
        let moved = timeout(
            within,
            metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != me)),
        )
        .await;
        let moved = matches!(moved, Ok(Ok(_)));
        tracing::info!(heir, moved, "handed leadership over before stopping");
        moved
    }

    /// Stops the Raft core; in-flight requests fail with `ShuttingDown`.
    /// Begins a planned stop: every [`Node::stop_signal`] resolves. Raft keeps running, so
    /// requests already in flight still commit (see `kith serve`'s stop order).
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Node::begin_stop`] has been called: what a long-lived answer waits on
    /// to end early.
    pub fn stop_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    }

    pub async fn shutdown(&self) {
        if let Some(task) = self.expiry_task.lock().expect("expiry task lock").take() {
            task.abort();
        }
        self.files.stop();
        self.quota.stop();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }

    pub fn health(&self) -> Health {
        let m = self.raft.metrics().borrow().clone();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.config.id)
            .is_some();
        let head = self.state.ledger_head().unwrap_or_default();
        let revision = self.state.kv_meta().map_or(0, |k| k.revision);
        // Read after the commit index: on the leader it only grows, so the pair as reported
        // keeps `commit_index <= durable_index`.
        let commit_index = self.log.committed_index();
        let durable_index = *self.log.durable_index().borrow();
        Health {
            node_id: self.config.id,
            role: role_name(m.state).into(),
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            durable_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            revision,
            ledger_index: head.index,
            ledger_hash: to_hex(&head.hash),
            requests_total: self
                .stats
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            writes_total: self.stats.writes.load(std::sync::atomic::Ordering::Relaxed),
            disk_bytes: self.log.disk_bytes()
                + ["state.redb", "snapshot.bin"]
                    .iter()
                    .filter_map(|f| std::fs::metadata(self.config.data_dir.join(f)).ok())
                    .map(|m| m.len())
                    .sum::<u64>(),
            ready: m.current_leader.is_some() && member && m.state != ServerState::Shutdown,
            quorum_ack_age_ms: m.millis_since_quorum_ack,
            file_chunks: self.files.store.usage().0,
            file_chunk_bytes: self.files.store.usage().1,
            quota: self.quota.usage(),
            links: self.transport.links().to(&m
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.config.id)
                .map(|(_, n)| n.addr.clone())
                .collect::<Vec<_>>()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Proposes `command` and waits until it is committed by a quorum and applied.
    pub async fn write(&self, command: Command) -> Result<Response, NodeError> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader.is_some_and(|l| l != self.config.id) {
            return self.forwarder.write(command).await;
        }
        match self
            .on_leader(ForwardRequest::Write(command), self.config.request_timeout)
            .await?
        {
            ForwardResponse::Written(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// For a linearizable read: obtain the leader's read index and wait until this node has
    /// applied it (ReadIndex). Every write acknowledged before the read started has an index
    /// at or below the read index, so the local read sees it. Outside this crate the only way
    /// to it is [`Node::read`], which hands out the state once it returned.
    pub(crate) async fn read_barrier(&self, consistency: Consistency) -> Result<(), NodeError> {
        if consistency == Consistency::Stale || test_bug_stale_reads() {
            return Ok(());
        }
        let index = match self
            .on_leader(ForwardRequest::ReadIndex, self.config.request_timeout)
            .await?
        {
            ForwardResponse::ReadIndex(i) => i,
            other => return Err(unexpected(other)),
        };
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|_| NodeError::Timeout {
                what: "this node to apply the read index",
                ms: self.config.request_timeout.as_millis() as u64,
            })?;
        Ok(())
    }

    /// Adds node `id` at `addr`: as a learner first, then as a voter once it has caught up.
    pub async fn add_member(&self, id: NodeId, addr: String) -> Result<(), NodeError> {
        self.on_leader(ForwardRequest::AddMember { id, addr }, MEMBERSHIP_TIMEOUT)
            .await
            .map(drop)
    }

    /// Removes node `id` from the cluster; it stops counting toward the quorum.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        self.on_leader(ForwardRequest::RemoveMember { id }, MEMBERSHIP_TIMEOUT)
            .await
            .map(drop)
    }

    /// Every member with its own report (when reachable) and the leader's replication view.
    pub async fn cluster(&self) -> Vec<MemberStatus> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication: BTreeMap<NodeId, Option<u64>> = match timeout(
            STATUS_TIMEOUT * 2,
            self.on_leader(ForwardRequest::Replication, STATUS_TIMEOUT),
        )
        .await
        {
            Ok(Ok(ForwardResponse::Replication(r))) => r.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        let leader_last = replication
            .values()
            .flatten()
            .max()
            .copied()
            .unwrap_or_default();
        let members: Vec<(NodeId, String)> = membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let reports = futures::future::join_all(members.iter().map(|(id, addr)| async move {
            if *id == self.config.id {
                Some(self.health())
            } else {
                self.transport
                    .get_json::<Health>(addr, "/v1/health", STATUS_TIMEOUT)
                    .await
                    .ok()
            }
        }))
        .await;
        members
            .into_iter()
            .zip(reports)
            .map(|((id, addr), report)| {
                let match_index = replication.get(&id).copied().flatten();
                MemberStatus {
                    id,
                    addr,
                    voter: voters.contains(&id),
                    reachable: report.is_some(),
                    role: report.as_ref().map(|h| h.role.clone()),
                    term: report.as_ref().map(|h| h.term),
                    commit_index: report.as_ref().map(|h| h.commit_index),
                    durable_index: report.as_ref().map(|h| h.durable_index),
                    applied_index: report.as_ref().map(|h| h.applied_index),
                    ledger_index: report.as_ref().map(|h| h.ledger_index),
                    ledger_hash: report.as_ref().map(|h| h.ledger_hash.clone()),
                    last_log_index: report.as_ref().map(|h| h.last_log_index),
                    requests_total: report.as_ref().map(|h| h.requests_total),
                    writes_total: report.as_ref().map(|h| h.writes_total),
                    disk_bytes: report.as_ref().map(|h| h.disk_bytes),
                    file_chunks: report.as_ref().map(|h| h.file_chunks),
                    file_chunk_bytes: report.as_ref().map(|h| h.file_chunk_bytes),
                    quota: report.as_ref().map(|h| h.quota),
                    links: report.as_ref().map(|h| h.links.clone()),
                    version: report.as_ref().map(|h| h.version.clone()),
                    match_index,
                    lag: match_index.map(|i| leader_last.saturating_sub(i)),
                }
            })
            .collect()
    }

    /// Runs `request` on the leader: here if this node leads, otherwise over the peer
    /// transport. Follows leader changes a bounded number of times.
    async fn on_leader(
        &self,
        request: ForwardRequest,
        request_timeout: Duration,
    ) -> Result<ForwardResponse, NodeError> {
        let mut last_error = NodeError::NoLeader;
        for _ in 0..LEADER_ATTEMPTS_MAX {
            let leader = self.wait_for_leader(None).await?;
            let outcome = if leader == self.config.id {
                self.serve_forwarded(request.clone()).await
            } else {
                let Some(addr) = self.member_addr(leader) else {
                    // The leader this node last heard from has been removed from the cluster
                    // (it steps down once its removal commits): wait for its successor.
                    self.wait_for_leader(Some(leader)).await?;
                    continue;
                };
                match self
                    .transport
                    .forward(&addr, &request, request_timeout + Duration::from_secs(1))
                    .await
                {
                    Ok(outcome) => outcome,
                    // Not delivered: safe to retry once the cluster names a new leader.
                    Err(e @ TransportError::Connect { .. }) => {
                        last_error = NodeError::LeaderUnreachable {
                            leader_id: leader,
                            message: e.to_string(),
                        };
                        self.wait_for_leader(Some(leader)).await?;
                        continue;
                    }
                    // Possibly delivered: the outcome is unknown, never retry a write here.
                    Err(TransportError::Timeout { .. }) => {
                        return Err(NodeError::Timeout {
                            what: "the leader",
                            ms: request_timeout.as_millis() as u64,
                        })
                    }
                    Err(e) => {
                        return Err(NodeError::LeaderUnreachable {
                            leader_id: leader,
                            message: e.to_string(),
                        })
                    }
                }
            };
            match outcome {
                Ok(response) => return Ok(response),
                Err(ForwardError::NotLeader { .. }) => {
                    last_error = NodeError::NoLeader;
                    self.wait_for_leader(Some(leader)).await?;
                }
                Err(e) => return Err(final_error(e)),
            }
        }
        Err(last_error)
    }

    /// Waits (bounded by `leader_wait`) until a leader is known — one other than `not`, when
    /// given, so a caller that found the old leader gone waits for its successor.
    async fn wait_for_leader(&self, not: Option<NodeId>) -> Result<NodeId, NodeError> {
        // Fast path, taken by nearly every request: read the leader under the borrow
        // (openraft's `Wait` clones the whole `RaftMetrics` to test it).
        let known = self.raft.metrics().borrow().current_leader;
        if let Some(leader) = known.filter(|l| Some(*l) != not) {
            return Ok(leader);
        }
        let wait = self.raft.wait(Some(self.config.leader_wait));
        let metrics = wait
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != not,
                "leader known",
            )
            .await
            .map_err(|_| NodeError::NoLeader)?;
        metrics.current_leader.ok_or(NodeError::NoLeader)
    }

    /// Resolves when openraft's core has stopped: after [`Node::shutdown`], or on its own
    /// after a fatal error (a storage failure, or an openraft bug), from which it does not
    /// recover. A node in that state answers every request with an error forever, so
    /// `kith serve` exits instead and lets its supervisor restart it from its data.
    ///
    /// The core's metrics channel closes when it stops. That is checked on a timer, not by
    /// waiting for the channel's next change: the metrics change several times per write,
    /// and waking a waiter for each cost every write a thread wake-up.
    pub async fn raft_stopped(&self) {
        let metrics = self.raft.metrics();
        let mut tick = tokio::time::interval(RAFT_STOPPED_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if metrics.has_changed().is_err() {
                return;
            }
        }
    }

    /// Why the Raft core stopped, if it did (`None` while it runs).
    pub fn raft_stop_reason(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// The current leader's address as a URL (`http://ADDR`, `https://` with TLS), when this
    /// node knows one.
    /// Members serve the public API on the address they are known by to their peers.
    pub fn leader_url(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.member_addr(leader)
            .map(|addr| format!("{}://{addr}", self.transport.scheme()))
    }

    fn member_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// The input bounds this node enforces, from its configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            value_bytes_max: self.config.value_bytes_max,
            job_payload_bytes_max: self.config.job_payload_bytes_max,
            file_bytes_max: self.config.file_bytes_max,
        }
    }

    /// Proposes one command on this node (the leader) and waits until it is applied.
    ///
    /// Every command is validated here, whatever path it came by (a public route on this
    /// node, or a peer's forward), so nothing the public API would refuse reaches the log.
    async fn propose(&self, mut command: Command, now_ms: u64) -> Result<Response, ForwardError> {
        command.validate(&self.limits()).map_err(invalid)?;
        // Cluster-wide bounds are the leader's to set, so every replica applies the same ones.
        let retention_ms = self.config.job_retention.as_millis() as u64;
        match &mut command {
            Command::Post(post) => {
                post.keep = self.config.room_messages_kept;
                post.rooms_max = self.config.rooms_max;
            }
            Command::Job(JobCommand::Enqueue(e)) => e.retention_ms = retention_ms,
            Command::Job(JobCommand::Complete {
                retention_ms: r, ..
            })
            | Command::Job(JobCommand::Cancel {
                retention_ms: r, ..
            }) => *r = retention_ms,
            _ => {}
        }
        // The leader's quota decides, before anything reaches the log.
        self.quota
            .admit(&command)
            .map_err(ForwardError::QuotaExceeded)?;
        // The leader's clock, read once when the request reached it, is the time every
        // replica applies.
        let proposal = Proposal { now_ms, command };
        let limit = self.config.request_timeout;
        match timeout(limit, self.batcher.write(proposal)).await {
            Err(_) => Err(ForwardError::Timeout {
                what: "commit".into(),
                ms: limit.as_millis() as u64,
            }),
            Ok(answer) => answer,
        }
    }

    /// Serves a request that needs the leader, on this node. Answers `NotLeader` when this
    /// node is not (or no longer) the leader.
    pub async fn serve_forwarded(
        &self,
        request: ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        let limit = self.config.request_timeout;
        let changes = matches!(
            request,
            ForwardRequest::Write(_)
                | ForwardRequest::Writes(_)
                | ForwardRequest::AddMember { .. }
                | ForwardRequest::RemoveMember { .. }
        );
        if changes
            && self
                .stepping_down
                .load(std::sync::atomic::Ordering::Acquire)
        {
            // The asker waits for the successor and sends it there.
            return Err(ForwardError::NotLeader { leader_id: None });
        }
        match request {
            ForwardRequest::Write(command) => self
                .propose(command, wall_clock_ms())
                .await
                .map(ForwardResponse::Written),
            ForwardRequest::Writes(commands) => self.propose_each(commands).await,
            ForwardRequest::ReadIndex => match timeout(limit, self.read_batcher.read_index()).await
            {
                Err(_) => Err(timed_out("read index", limit)),
                Ok(answer) => answer.map(ForwardResponse::ReadIndex),
            },
            ForwardRequest::AddMember { id, addr } => self.add_voter(id, addr).await,
            ForwardRequest::RemoveMember { id } => self.remove_from_membership(id).await,
            ForwardRequest::Replication => {
                let m = self.raft.metrics().borrow().clone();
                match (m.state, m.replication) {
                    (ServerState::Leader, Some(r)) => Ok(ForwardResponse::Replication(
                        r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect(),
                    )),
                    _ => Err(ForwardError::NotLeader {
                        leader_id: m.current_leader,
                    }),
                }
            }
        }
    }

    /// A follower's batch of writes: one answer per command, in order.
    async fn propose_each(&self, commands: Vec<Command>) -> Result<ForwardResponse, ForwardError> {
        if commands.len() > FORWARD_COMMANDS_MAX {
            return Err(ForwardError::Internal(format!(
                "{} forwarded writes in one request; at most {FORWARD_COMMANDS_MAX}",
                commands.len()
            )));
        }
        // All are proposed at once, so the batcher can put them in one entry.
        let now_ms = wall_clock_ms();
        let results =
            futures::future::join_all(commands.into_iter().map(|c| self.propose(c, now_ms))).await;
        // Not the leader for any of them: let the sender find the leader and retry.
        if results
            .iter()
            .all(|r| matches!(r, Err(ForwardError::NotLeader { .. })))
        {
            if let Some(Err(e)) = results.into_iter().next() {
                return Err(e);
            }
            return Ok(ForwardResponse::WrittenEach(Vec::new()));
        }
        Ok(ForwardResponse::WrittenEach(results))
    }

    /// Adds `id` as a learner, waits for it to catch up, then makes it a voter.
    async fn add_voter(&self, id: NodeId, addr: String) -> Result<ForwardResponse, ForwardError> {
        kith_core::limits::validate_member(id, &addr).map_err(invalid)?;
        let node = BasicNode::new(addr);
        match timeout(MEMBERSHIP_TIMEOUT, self.raft.add_learner(id, node, true)).await {
            Err(_) => return Err(timed_out("the new member to catch up", MEMBERSHIP_TIMEOUT)),
            Ok(Err(e)) => return Err(write_error(e)),
            Ok(Ok(_)) => {}
        }
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        self.change_membership(change).await
    }

    /// Removes `id` (a voter or a learner); never the last voter.
    async fn remove_from_membership(&self, id: NodeId) -> Result<ForwardResponse, ForwardError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            return Err(ForwardError::Membership(format!(
                "node {id} is not a member"
            )));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ForwardError::Membership(
                    "cannot remove the last voter".into(),
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change_membership(change).await
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<ForwardResponse, ForwardError> {
        let limit = self.config.request_timeout;
        // retain = false: a removed voter leaves the cluster instead of staying on as a
        // learner.
        match timeout(limit, self.raft.change_membership(change, false)).await {
            Err(_) => Err(timed_out("membership change", limit)),
            Ok(Err(e)) => Err(write_error(e)),
            Ok(Ok(_)) => Ok(ForwardResponse::MembershipChanged),
        }
    }

    /// The newest `count` entries of this node's own log, oldest first, as
    /// `(index, term, kind)` with kind `blank`, `normal` or `membership`: what the lessons
    /// page draws as one row per node. Reads whole entries, so callers keep `count` small.
    /// Entries compacted away are not listed, and a read that races compaction lists none.
    pub async fn recent_log_entries(&self, count: u64) -> Vec<(u64, u64, &'static str)> {
        use openraft::{EntryPayload, RaftLogReader};
        let m = self.raft.metrics().borrow().clone();
        let Some(last) = m.last_log_index else {
            return Vec::new();
        };
        let first_kept = m.purged.map_or(0, |p| p.index + 1);
        let from = last.saturating_sub(count.saturating_sub(1)).max(first_kept);
        let mut reader = self.log.clone();
        match reader.try_get_log_entries(from..=last).await {
            Ok(entries) => entries
                .iter()
                .map(|e| {
                    let kind = match e.payload {
                        EntryPayload::Blank => "blank",
                        EntryPayload::Normal(_) => "normal",
                        EntryPayload::Membership(_) => "membership",
                    };
                    (e.log_id.index, e.log_id.leader_id.term, kind)
                })
                .collect(),
            Err(e) => {
                tracing::debug!("recent log entries unreadable: {e}");
                Vec::new()
            }
        }
    }
}

/// The fault suite's planted bug: with the `test-hooks` feature (enabled only in binaries
/// built for kith's own tests) and `KITH_TEST_BUG=stale_reads`, linearizable reads skip the
/// read index and serve local state — so the suite can show that it catches stale reads.
#[cfg(feature = "test-hooks")]
fn test_bug_stale_reads() -> bool {
    static STALE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STALE.get_or_init(|| std::env::var("KITH_TEST_BUG").is_ok_and(|v| v == "stale_reads"))
}

#[cfg(not(feature = "test-hooks"))]
fn test_bug_stale_reads() -> bool {
    false
}

/// The forwarder's batches go to the leader as one `ForwardRequest::Writes`.
impl ForwardWrites for Node {
    async fn forward_writes(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Response, NodeError>>, NodeError> {
        let count = commands.len();
        match self
            .on_leader(
                ForwardRequest::Writes(commands),
                self.config.request_timeout,
            )
            .await?
        {
            ForwardResponse::WrittenEach(results) if results.len() == count => Ok(results
                .into_iter()
                .map(|r| r.map_err(final_error))
                .collect()),
            other => Err(unexpected(other)),
        }
    }
}

/// A wait on the leader that ran out: the outcome is unknown to the asker.
fn timed_out(what: &str, d: Duration) -> ForwardError {
    ForwardError::Timeout {
        what: what.into(),
        ms: d.as_millis() as u64,
    }
}

/// What a leader's refusal means to the client, once retrying elsewhere is not the answer.
fn final_error(e: ForwardError) -> NodeError {
    match e {
        ForwardError::NotLeader { .. } | ForwardError::NoQuorum => NodeError::NoLeader,
        ForwardError::Timeout { ms, .. } => NodeError::Timeout {
            what: "a quorum to commit",
            ms,
        },
        ForwardError::Membership(m) => NodeError::Membership(m),
        ForwardError::Internal(m) => NodeError::Internal(m),
        ForwardError::Invalid { message, too_large } => {
            NodeError::InvalidInput(InvalidInput::Refused { message, too_large })
        }
        ForwardError::QuotaExceeded(usage) => NodeError::QuotaExceeded(usage),
    }
}

/// A refused input as the leader answers it (to itself or to a forwarding peer).
fn invalid(e: InvalidInput) -> ForwardError {
    ForwardError::Invalid {
        too_large: e.is_too_large(),
        message: e.to_string(),
    }
}

fn unexpected(r: ForwardResponse) -> NodeError {
    NodeError::Internal(format!("unexpected answer from the leader: {r:?}"))
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// On the leader, proposes [`Command::Expire`] whenever a timer is due (a key's TTL, a
/// delayed job, a job lease), so time-driven changes happen even when no other write carries
/// the leader's clock. Every node runs this loop;
/// only the current leader proposes. Runs until aborted.
async fn drive_expiry(
    raft: openraft::Raft<TypeConfig>,
    state: StateReader,
    interval: Duration,
    request_timeout: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        let now_ms = wall_clock_ms();
        let due = matches!(state.next_timer_ms(), Ok(Some(at)) if at <= now_ms);
        if !due {
            continue;
        }
        let proposal = Proposal {
            now_ms,
            command: Command::Expire,
        };
        match timeout(request_timeout, raft.client_write(vec![proposal])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("expiry proposal refused: {e}"),
            Err(_) => tracing::warn!("expiry proposal timed out"),
        }
    }
}
