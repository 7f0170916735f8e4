//! A node's settings. Every bound kith enforces at run time is a field here with a default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kith_core::NodeId;

/// Settings for one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The address the HTTP server binds; peers reach this node here.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Largest value a put may carry.
    pub value_bytes_max: usize,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// Build a snapshot (and compact the log) after this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind the latest snapshot, so slightly lagging followers can
    /// catch up from the log instead of a snapshot.
    pub snapshot_logs_keep: u64,
    /// How long a write or linearizable read waits for a quorum before answering 503.
    pub request_timeout: Duration,
    /// How long a request waits for a leader to be known before answering 503.
    pub leader_wait: Duration,
    /// Timeout for one peer RPC that carries no deadline of its own.
    pub peer_timeout: Duration,
    /// Change events kept for watches (older revisions answer 410).
    pub events_kept: u64,
    /// Bytes the kept change events may take; the oldest go first past it.
    pub events_bytes_kept: u64,
    /// Ledger hashes kept for lookups by index.
    pub ledger_kept: u64,
    /// How often the leader checks for keys whose TTL has run out.
    pub expiry_check_interval: Duration,
    /// Concurrent watch streams one node serves.
    pub watchers_max: usize,
    /// A watcher further behind the store than this many revisions is cut off.
    pub watch_lag_max: u64,
    /// Messages each chat room keeps (older ones are dropped). Applied by the leader.
    pub room_messages_kept: u64,
    /// Chat rooms the cluster may hold. Applied by the leader.
    pub rooms_max: u64,
    /// How long completed and cancelled jobs (and their idempotency keys) are kept.
    pub job_retention: Duration,
    /// Largest job payload, in bytes of JSON.
    pub job_payload_bytes_max: usize,
    /// URL of the `kith dev` supervisor's control server; set only for nodes `kith dev`
    /// started, and the only thing that enables the playground routes.
    pub dev_control: Option<String>,
    /// The log index whose bytes this node alters as it hashes it into its ledger (the
    /// playground's tamper). Honoured only with `dev_control`: `Node::start` refuses it
    /// on any other node.
    pub dev_ledger_tamper_index: Option<u64>,
    /// Whether `POST /internal/faults` may switch on message delay and loss on this node's
    /// outgoing peer messages (`kith serve --enable-fault-injection`, for the fault suite
    /// only). Off by default; the route answers 403 when it is off.
    pub fault_injection: bool,
    /// TLS on the node's port and towards its peers (`kith serve --tls DIR/node-N`). With it,
    /// `/internal` answers only current members' certificates (see `peer::server`).
    pub tls: Option<crate::tls::NodeTls>,
    /// Origins (`https://app.example`) whose pages may call the public API from a browser
    /// (`--cors-origin`), besides the members' own; never `/internal`.
    pub cors_origins: Vec<String>,
    /// Names clients may reach this node by (`Host`), besides its listen and advertised
    /// addresses, `localhost` on a loopback node, and its certificate's DNS names
    /// (`--host`). Anything else is refused, so a DNS name an attacker points at the node
    /// (DNS rebinding) gets nowhere.
    pub host_names: Vec<String>,
    /// The address peers and clients are told (`--advertise`); `listen` when not set.
    pub advertise: Option<SocketAddr>,
    /// Copies of each file chunk (R), capped by the member count.
    pub file_replicas: usize,
    /// Size of the chunks new uploads are cut into.
    pub file_chunk_bytes: u32,
    /// Largest file an upload may carry.
    pub file_bytes_max: u64,
    /// Concurrent uploads through this node.
    pub file_uploads_max: usize,
    /// An upload whose body stalls this long is abandoned.
    pub file_body_idle_timeout: Duration,
    /// An unreferenced chunk is kept this long before garbage collection deletes it; an
    /// upload must commit within half of it.
    pub file_gc_grace: Duration,
    /// A member that has failed every request for this long no longer counts as a holder:
    /// its chunks are copied to the next members in line.
    pub file_down_after: Duration,
    /// How often the repair and garbage-collection passes run.
    pub file_repair_interval: Duration,
    /// Bytes of stored chunks the scrubber re-hashes per second (0: off).
    pub file_scrub_bytes_per_s: u64,
    /// A floor under `peer::protocol::peer_body_bytes_max`, the most encoded bytes one
    /// AppendEntries request carries (the leader sends fewer entries rather than pass that
    /// limit, and one entry alone whatever its size).
    pub append_bytes_max: usize,
    /// The storage quota: past it, writes that add data are refused (see [`crate::quota`]).
    /// Applied by the leader to proposals, and by each node to the chunks it stores.
    pub quota_bytes: u64,
}

impl NodeConfig {
    /// Defaults suited to a LAN or loopback cluster (etcd uses 100 ms heartbeats and a 1 s
    /// election timeout; kith randomises the election timeout in [min, max]). openraft 0.9
    /// starts an election only after the leader lease (`election_timeout_ms_max`) *plus* the
    /// node's timeout have passed without a heartbeat: 900–1000 ms with these defaults.
    pub fn new(id: NodeId, listen: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            listen,
            data_dir,
            value_bytes_max: kith_core::limits::VALUE_BYTES_MAX_DEFAULT,
            heartbeat_interval_ms: 100,
            election_timeout_ms_min: 400,
            election_timeout_ms_max: 500,
            snapshot_logs_since_last: 10_000,
            snapshot_logs_keep: 1_000,
            request_timeout: Duration::from_secs(5),
            leader_wait: Duration::from_secs(3),
            peer_timeout: Duration::from_secs(5),
            events_kept: 100_000,
            events_bytes_kept: kith_storage::EVENTS_BYTES_KEPT_DEFAULT,
            ledger_kept: 10_000,
            expiry_check_interval: Duration::from_millis(200),
            watchers_max: 1024,
            watch_lag_max: 50_000,
            room_messages_kept: 10_000,
            rooms_max: 10_000,
            dev_control: None,
            dev_ledger_tamper_index: None,
            job_retention: Duration::from_secs(3600),
            job_payload_bytes_max: 256 * 1024,
            fault_injection: false,
            tls: None,
            cors_origins: Vec::new(),
            host_names: Vec::new(),
            advertise: None,
            file_replicas: 3,
            file_chunk_bytes: kith_core::files::CHUNK_BYTES_DEFAULT,
            file_bytes_max: kith_core::files::FILE_BYTES_MAX_DEFAULT,
            file_uploads_max: 16,
            file_body_idle_timeout: Duration::from_secs(30),
            file_gc_grace: Duration::from_secs(3600),
            file_down_after: Duration::from_secs(60),
            file_repair_interval: Duration::from_secs(10),
            file_scrub_bytes_per_s: 4 * 1024 * 1024,
            append_bytes_max: 1024 * 1024,
            quota_bytes: crate::quota::QUOTA_BYTES_DEFAULT,
        }
    }
}
