//! `kith serve`: run one node until SIGTERM or Ctrl-C.
//!
//! A planned stop, in order: a leader hands leadership to a caught-up follower; the node
//! stops taking connections and ends its long-lived answers (watch and room streams,
//! waiting claims); requests in flight finish, within [`DRAIN_WAIT`], while Raft still runs
//! (a write forwarded to the new leader still commits); Raft stops last.
//!
//! Startup order matters: the HTTP port is bound before the cluster is bootstrapped or
//! joined, so peers can reach this node as soon as it takes part in an election.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use openraft::BasicNode;
use tokio::signal::unix::{signal, SignalKind};

use kith_core::NodeId;
use kith_node::{Node, NodeConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Read the flags from this TOML file too (keys are the flags without dashes; see
    /// `crate::config`): a flag on the command line beats its `KITH_<FLAG>` environment
    /// variable, which beats the file, which beats the default.
    #[arg(long, env = "KITH_CONFIG", value_name = "FILE")]
    #[allow(dead_code)] // read before clap parses, by `crate::config`
    config: Option<PathBuf>,
    /// This node's id: a positive integer, unique in the cluster for all time.
    #[arg(long, env = "KITH_ID")]
    id: NodeId,
    /// Address to listen on (IP:PORT). Without TLS only a loopback address is allowed,
    /// unless `--insecure` is given; `0.0.0.0:PORT` needs `--advertise`.
    #[arg(long, env = "KITH_LISTEN")]
    listen: SocketAddr,
    /// The address peers and clients are told to reach this node at (IP:PORT), when it
    /// differs from `--listen` (e.g. listening on 0.0.0.0). Default: `--listen`.
    #[arg(long, env = "KITH_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Serve TLS on the one port, for clients and peers alike, with this node's directory
    /// from `kith init` (`DIR/node-N`: ca.crt, node.crt, node.key). Peers then speak only
    /// with certificates of current members of this cluster.
    #[arg(long, value_name = "DIR", env = "KITH_TLS")]
    tls: Option<PathBuf>,
    /// A web origin (`https://app.example`) whose pages may call the public API; repeatable.
    /// The members' own origins always may.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "KITH_CORS_ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Another name clients reach this node by (`NAME` or `NAME:PORT`), e.g. a load
    /// balancer's; repeatable. Requests naming anything else in `Host` get 421.
    #[arg(
        long = "host",
        value_name = "NAME",
        env = "KITH_HOST",
        value_delimiter = ','
    )]
    host_names: Vec<String>,
    /// Listen on a non-loopback address without TLS: anyone who can reach the port can
    /// then read and write the cluster's data and speak its peer protocol.
    #[arg(long, env = "KITH_INSECURE")]
    insecure: bool,
    /// Data directory (created if missing).
    #[arg(long, env = "KITH_DATA")]
    data: PathBuf,
    /// Bootstrap a new cluster with these voters: `1=HOST:PORT,2=HOST:PORT,…`.
    #[arg(long, conflicts_with = "join", env = "KITH_PEERS")]
    peers: Option<String>,
    /// Join a running cluster through any member's URL (`http://HOST:PORT`, or
    /// `https://HOST:PORT` with `--tls`).
    #[arg(long, env = "KITH_JOIN")]
    join: Option<String>,
    /// Largest value a put may carry, in bytes (at most 64 MiB, the bound every replica
    /// enforces when it applies a write).
    #[arg(long, default_value_t = kith_core::limits::VALUE_BYTES_MAX_DEFAULT, env = "KITH_VALUE_BYTES_MAX")]
    value_bytes_max: usize,
    /// Snapshot and compact the log after this many applied entries.
    #[arg(long, default_value_t = 10_000, env = "KITH_SNAPSHOT_THRESHOLD")]
    snapshot_threshold: u64,
    /// Log entries to keep behind a snapshot.
    #[arg(long, default_value_t = 1_000, env = "KITH_SNAPSHOT_KEEP")]
    snapshot_keep: u64,
    /// Change events kept for watches; older revisions answer 410.
    #[arg(long, default_value_t = 100_000, env = "KITH_EVENTS_KEPT")]
    events_kept: u64,
    /// Bytes the kept change events may take (each carries its value); past it the oldest
    /// go, and a watch from before them answers 410.
    #[arg(long, default_value_t = kith_storage::EVENTS_BYTES_KEPT_DEFAULT, env = "KITH_EVENTS_BYTES_KEPT")]
    events_bytes_kept: u64,
    /// Ledger hashes kept for lookups by index.
    #[arg(long, default_value_t = 10_000, env = "KITH_LEDGER_KEPT")]
    ledger_kept: u64,
    /// Messages each chat room keeps; older ones are dropped (the leader's setting applies).
    #[arg(long, default_value_t = 10_000, env = "KITH_ROOM_MESSAGES_KEPT")]
    room_messages_kept: u64,
    /// Chat rooms the cluster may hold (the leader's setting applies); deleting a room frees
    /// its slot.
    #[arg(long, default_value_t = 10_000, env = "KITH_ROOMS_MAX")]
    rooms_max: u64,
    /// Storage quota in bytes: past it, writes that add data answer 507 `quota_exceeded`
    /// while deletes and reads go on. Default: 2 GiB (etcd's default quota), or half the
    /// data directory's file system if that is smaller.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), env = "KITH_QUOTA_BYTES")]
    quota_bytes: Option<u64>,
    /// Seconds completed and cancelled jobs (and their idempotency keys) are kept.
    #[arg(long, default_value_t = 3600, env = "KITH_JOB_RETENTION")]
    job_retention: u64,
    /// Exit when the parent process exits (used by `kith dev` so no child outlives it).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    /// The `kith dev` supervisor's control URL; enables the playground routes.
    #[arg(long, hide = true)]
    dev_control: Option<String>,
    /// Alter the bytes of this log index as it is hashed into the ledger (the playground's
    /// tamper); refused without --dev-control.
    #[arg(long, hide = true, requires = "dev_control")]
    dev_tamper_ledger_index: Option<u64>,
    /// Let `POST /internal/faults` delay and drop this node's outgoing peer messages. For
    /// the fault suite only; without it the route answers 403.
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
    /// Copies of each file chunk (capped by the member count).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9), env = "KITH_FILE_REPLICAS")]
    file_replicas: u64,
    /// Size of the chunks uploads are cut into, in bytes.
    #[arg(long, default_value_t = kith_core::files::CHUNK_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u32).range(4096..=kith_core::files::CHUNK_BYTES_MAX as i64),
          env = "KITH_FILE_CHUNK_BYTES")]
    file_chunk_bytes: u32,
    /// Largest file an upload may carry, in bytes.
    #[arg(long, default_value_t = kith_core::files::FILE_BYTES_MAX_DEFAULT, env = "KITH_FILE_BYTES_MAX")]
    file_bytes_max: u64,
    /// Seconds an unreferenced chunk is kept before garbage collection deletes it.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..), env = "KITH_FILE_GC_GRACE_S")]
    file_gc_grace_s: u64,
    /// Seconds a member may fail every request before its chunks are copied elsewhere.
    #[arg(long, default_value_t = 60, env = "KITH_FILE_DOWN_AFTER_S")]
    file_down_after_s: u64,
    /// Milliseconds between repair and garbage-collection passes.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..), env = "KITH_FILE_REPAIR_INTERVAL_MS")]
    file_repair_interval_ms: u64,
    /// Bytes per second the scrubber re-hashes (0 turns it off).
    #[arg(long, default_value_t = 4 * 1024 * 1024, env = "KITH_FILE_SCRUB_BYTES_PER_S")]
    file_scrub_bytes_per_s: u64,
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with `timestamp`, `level`, `fields.message`, `target`) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KITH_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How long a stopping leader waits for a follower to take over.
const HAND_OVER_WAIT: Duration = Duration::from_secs(2);
/// How long requests in flight get to finish once a stopping node takes no new ones.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// The quota when `--quota-bytes` is not given: etcd's 2 GiB, capped at half the file system
/// that holds `data` (a small SD card must not fill before the alarm sounds).
fn default_quota_bytes(data: &std::path::Path) -> u64 {
    let default = kith_node::quota::QUOTA_BYTES_DEFAULT;
    // The data directory may not exist yet: ask about the nearest ancestor that does.
    let Some(existing) = data.ancestors().find(|p| p.exists()) else {
        return default;
    };
    match nix::sys::statvfs::statvfs(existing) {
        Ok(fs) => {
            let fs_bytes = fs.blocks().saturating_mul(fs.fragment_size());
            if fs_bytes == 0 {
                default
            } else {
                default.min(fs_bytes / 2)
            }
        }
        Err(_) => default,
    }
}

/// The address this node is reached at, after refusing a listen address that would expose
/// an unauthenticated node (without TLS, only loopback unless `--insecure`), or that peers
/// cannot be told (an unspecified IP without `--advertise`).
fn advertised_address(args: &ServeArgs) -> anyhow::Result<SocketAddr> {
    let listen = args.listen;
    let exposed_ok = args.insecure || args.tls.is_some();
    if !listen.ip().is_loopback() && !exposed_ok {
        bail!(
            "--listen {listen} is not a loopback address, and this node has no TLS: anyone who \
             can reach the port could read and write its data and speak its peer protocol. \
             Listen on a loopback address (127.0.0.1), or pass --insecure on a network you trust"
        );
    }
    match args.advertise {
        Some(advertise) if advertise.ip().is_unspecified() => {
            bail!("--advertise {advertise} is not an address peers can reach")
        }
        Some(advertise) if !advertise.ip().is_loopback() && !exposed_ok => bail!(
            "--advertise {advertise} is not a loopback address, and this node has no TLS; \
             pass --insecure on a network you trust"
        ),
        Some(advertise) => Ok(advertise),
        None if listen.ip().is_unspecified() => {
            bail!("--listen {listen} names no address peers can reach: give --advertise IP:PORT")
        }
        None => Ok(listen),
    }
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(spec: &str) -> anyhow::Result<BTreeMap<NodeId, BasicNode>> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("peer '{part}' is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .parse()
            .with_context(|| format!("peer id '{id}' is not a positive integer"))?;
        if id == 0 {
            bail!("peer ids start at 1");
        }
        addr.parse::<SocketAddr>()
            .with_context(|| format!("peer address '{addr}' is not IP:PORT"))?;
        if peers.insert(id, BasicNode::new(addr)).is_some() {
            bail!("peer id {id} is listed twice");
        }
    }
    if peers.is_empty() {
        bail!("--peers lists no peers");
    }
    Ok(peers)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything slow: a parent that dies while the node starts is still noticed.
    let parent = std::os::unix::process::parent_id();
    init_logging(args.log_format);
    if args.id == 0 {
        bail!("--id must be a positive integer");
    }
    let ceiling = kith_core::limits::VALUE_BYTES_CEILING;
    if args.value_bytes_max > ceiling {
        bail!("--value-bytes-max must be at most {ceiling}");
    }
    let advertise = advertised_address(&args)?;
    let peers = args.peers.as_deref().map(parse_peers).transpose()?;
    if let Some(peers) = &peers {
        match peers.get(&args.id) {
            None => bail!("--peers does not list this node's id {}", args.id),
            Some(n) if n.addr != advertise.to_string() => bail!(
                "--peers gives node {} the address {}, but it is reached at {} (--advertise, \
                 or --listen without it)",
                args.id,
                n.addr,
                advertise
            ),
            Some(_) => {}
        }
    }
    let tls = args
        .tls
        .as_deref()
        .map(|dir| kith_node::tls::NodeTls::load(dir, args.id))
        .transpose()
        .context("--tls")?;
    if let Some(url) = &args.join {
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        if !url.starts_with(scheme) {
            bail!(
                "--join {url}: this node {} TLS, so the URL starts with {scheme}",
                if tls.is_some() { "has" } else { "has no" }
            );
        }
    }
    let mut config = NodeConfig::new(args.id, args.listen, args.data.clone());
    config.tls = tls;
    config.cors_origins = args.cors_origins.clone();
    config.host_names = args.host_names.clone();
    config.advertise = Some(advertise);
    config.value_bytes_max = args.value_bytes_max;
    config.snapshot_logs_since_last = args.snapshot_threshold;
    config.snapshot_logs_keep = args.snapshot_keep;
    config.events_kept = args.events_kept;
    config.events_bytes_kept = args.events_bytes_kept;
    config.ledger_kept = args.ledger_kept;
    config.room_messages_kept = args.room_messages_kept;
    config.rooms_max = args.rooms_max;
    config.quota_bytes = args
        .quota_bytes
        .unwrap_or_else(|| default_quota_bytes(&args.data));
    config.dev_control = args.dev_control.clone();
    config.dev_ledger_tamper_index = args.dev_tamper_ledger_index;
    config.job_retention = Duration::from_secs(args.job_retention);
    config.fault_injection = args.enable_fault_injection;
    config.file_replicas = args.file_replicas as usize;
    config.file_chunk_bytes = args.file_chunk_bytes;
    config.file_bytes_max = args.file_bytes_max;
    config.file_gc_grace = Duration::from_secs(args.file_gc_grace_s);
    config.file_down_after = Duration::from_secs(args.file_down_after_s);
    config.file_repair_interval = Duration::from_millis(args.file_repair_interval_ms);
    config.file_scrub_bytes_per_s = args.file_scrub_bytes_per_s;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let node = Node::start(config).await.context("cannot start the node")?;
    tracing::info!(id = args.id, listen = %args.listen, advertise = %advertise, data = %args.data.display(), tls = args.tls.is_some(), "node started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(kith_api::serve(node.clone(), listener, async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));

    if let Some(peers) = peers {
        node.initialize(peers).await?;
    }
    if let Some(url) = &args.join {
        let identity = args
            .tls
            .as_deref()
            .map(kith_client::tls::TlsOptions::node_dir)
            .transpose()?;
        join(
            &node,
            url,
            identity.as_ref(),
            args.id,
            &advertise.to_string(),
        )
        .await?;
    }

    let core_stopped = tokio::select! {
        () = wait_for_stop(args.exit_with_parent.then_some(parent)) => false,
        () = node.raft_stopped() => true,
    };
    if core_stopped {
        // openraft logged why. Serving on would only answer errors: exit non-zero, so a
        // supervisor restarts the node, which recovers from its data like after a crash.
        tracing::error!("the Raft core stopped on a fatal error; exiting");
    } else {
        tracing::info!("shutting down");
        // A planned stop of the leader: let a caught-up follower take over first, so the
        // cluster moves on without waiting out an election timeout.
        node.hand_over_leadership(HAND_OVER_WAIT).await;
    }
    node.begin_stop();
    let _ = stop_tx.send(true);
    let mut server = server;
    let drained = if core_stopped {
        None
    } else {
        let started = std::time::Instant::now();
        let drained = tokio::time::timeout(DRAIN_WAIT, &mut server).await.ok();
        match &drained {
            Some(_) => tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "requests in flight finished"
            ),
            None => tracing::warn!(
                "requests still open after {} s (a download?); stopping anyway",
                DRAIN_WAIT.as_secs()
            ),
        }
        drained
    };
    node.shutdown().await;
    if core_stopped {
        bail!("the Raft core stopped on a fatal error (see the log above); restart the node");
    }
    match drained {
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e).context("http server"),
        Some(Err(e)) => Err(e).context("http server task"),
        // What stayed open was cut when Raft stopped; the stop itself is clean.
        None => {
            server.abort();
            Ok(())
        }
    }
}

/// Asks the cluster at `url` to add this node, unless it already is a member (a restart).
/// With TLS the request carries this node's certificate, which is how the cluster knows the
/// node asking is the one its certificate names.
async fn join(
    node: &Node,
    url: &str,
    tls: Option<&kith_client::tls::TlsOptions>,
    id: NodeId,
    addr: &str,
) -> anyhow::Result<()> {
    if node.knows_member(id) {
        tracing::info!("already a member; not joining again");
        return Ok(());
    }
    let client = kith_client::Client::with_tls(&[url], tls)?;
    // The leader adds us as a learner, waits until we have caught up, then promotes us.
    const ATTEMPTS_MAX: u32 = 30;
    let mut last = None;
    for _ in 0..ATTEMPTS_MAX {
        match client.add_member(id, addr).await {
            Ok(()) => {
                tracing::info!(%url, "joined the cluster");
                return Ok(());
            }
            Err(e @ kith_client::ClientError::Api { status: 400, .. }) => {
                bail!("the cluster refused to add this node: {e}")
            }
            Err(e) => {
                tracing::warn!("join through {url} failed: {e}; retrying");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    bail!(
        "could not join through {url}: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )
}

/// Resolves on SIGTERM, SIGINT, or — given the parent process id read at start — when
/// that parent has gone (this process was re-parented, or already was at start).
async fn wait_for_stop(exit_with_parent: Option<u32>) {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let orphaned = async move {
        let Some(parent) = exit_with_parent else {
            return std::future::pending().await;
        };
        loop {
            let now = std::os::unix::process::parent_id();
            if now != parent || now == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = orphaned => tracing::warn!("parent process exited"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}
