//! `kith dev`: a local cluster of `kith serve` child processes on 127.0.0.1, and the
//! playground that lets the dashboard break it.
//!
//! The supervisor starts N nodes, waits until they have elected a leader, prints their
//! URLs, and on Ctrl-C or SIGTERM stops every child (SIGCONT for paused ones, SIGTERM, then
//! SIGKILL after a grace period). Children run with `--exit-with-parent`, so even if the
//! supervisor is killed outright none of them is left behind.
//!
//! The playground: the supervisor also listens on an ephemeral 127.0.0.1 port for
//! `POST /nodes/{id}/{kill|pause|resume|restart|isolate|heal|add|tamper}` and passes that URL
//! to its children (`--dev-control`). A node's `/v1/dev/…` routes forward there; nodes not
//! started by `kith dev` have no such URL and refuse them with 403. `add` starts the next
//! node with `--join` (plain clusters only); `tamper` restarts a node with
//! `--dev-tamper-ledger-index`, which alters one entry's bytes as the node hashes it into its
//! ledger (a `kith serve` refuses that flag without `--dev-control`, so only the
//! playground's nodes can be made to tamper).
//!
//! Workers: `POST /workers {"count":N,"queue":Q}` stops the workers it started before and
//! starts N (at most [`WORKERS_MAX`]) `kith worker` processes on queue Q, named `worker-1`…,
//! each running one job at a time with a fixed command that works [`WORKER_JOB_WORK`] and
//! prints `{"worker": NAME}`; `count` 0 only stops them. The command is the supervisor's,
//! never the caller's: a page can choose how many workers and which queue, nothing they run.
//! Workers run with `--exit-with-parent` and stop with the cluster.
//!
//! `kith dev --secure` runs the same cluster with TLS: certificates from `kith init` kept in
//! the data directory (`certs/`), so a restart reuses them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;
use tokio::time::Instant;

const NODES_MAX: u16 = 9;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The hidden `kith serve` flag that alters one entry's bytes as the node hashes it into its
/// ledger; honoured only beside `--dev-control`.
const TAMPER_FLAG: &str = "--dev-tamper-ledger-index";
/// How far past its last log entry a tampered node's altered entry is.
const TAMPER_AHEAD: u64 = 3;
/// Most workers the playground runs at once.
pub const WORKERS_MAX: usize = 4;
/// Each playground job's work: real time spent in a real process, so that jobs shared by
/// more workers visibly finish sooner.
const WORKER_JOB_WORK: &str = "sleep 0.2";
/// How long a stopped worker gets to finish its job before it is killed.
const WORKER_STOP_GRACE: Duration = Duration::from_secs(5);
/// A worker's lease on a job: a job held by a worker that was stopped in the middle of a
/// claim goes back to the queue this soon.
const WORKER_LEASE_S: &str = "10";

/// Prints a line, ignoring a closed stdout: the supervisor must keep stopping its children
/// cleanly even when whoever read its output has gone away.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Args)]
pub struct DevArgs {
    /// Number of nodes (1–9).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Port of node 1; node N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Where the nodes keep their data (default: kith-dev-BASEPORT in the temp directory).
    /// Reused across runs, so the cluster's data survives a restart of `kith dev`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Delete the data directory first and start an empty cluster.
    #[arg(long)]
    fresh: bool,
    /// Run the same cluster with TLS: certificates from `kith init` in DATA/certs (made on
    /// first use), every node on https, peers over mutual TLS.
    #[arg(long)]
    secure: bool,
}

/// One child node and how to start it again.
struct DevNode {
    id: u16,
    url: String,
    log: PathBuf,
    args: Vec<OsString>,
    /// `None` while the node is killed.
    child: Option<Child>,
    /// Set by the playground's kill, so its exit is not reported as a crash.
    expected_exit: bool,
    /// With `--secure`: the node's certificate directory, which the playground presents to
    /// the node's own `/internal/dev/isolate` (peer routes answer only members).
    tls: Option<PathBuf>,
}

type Nodes = Arc<Mutex<Vec<DevNode>>>;

/// What the playground needs to act on nodes, and to start new ones.
#[derive(Clone)]
struct Playground {
    nodes: Nodes,
    exe: PathBuf,
    /// Node N listens on `base_port + N - 1`.
    base_port: u16,
    data: PathBuf,
    control_url: String,
    /// Set with `--secure`: joining takes a cluster certificate the playground does not
    /// hand out, so it adds nodes only to a plain cluster.
    secure: bool,
    /// The workers `POST /workers` started; replaced whole by the next such request, and
    /// stopped with the cluster.
    workers: Workers,
    /// What the workers connect with: every node's URL, and with `--secure` the cluster's
    /// CA and admin token.
    worker_env: Vec<(&'static str, String)>,
}

type Workers = Arc<Mutex<Vec<Child>>>;

fn spawn(exe: &std::path::Path, node: &mut DevNode) -> anyhow::Result<()> {
    spawn_with_args(exe, node, &[])
}

/// [`spawn`] with extra arguments for this start only.
fn spawn_with_args(
    exe: &std::path::Path,
    node: &mut DevNode,
    extra: &[String],
) -> anyhow::Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("cannot open {}", node.log.display()))?;
    let mut command = Command::new(exe);
    // A user's `KITH_TLS`, `KITH_CONFIG`, … are for their own commands: `kith serve` would
    // read them as its flags (`crate::config`), and kith dev's nodes take only its own.
    for name in crate::config::settings_in_environment() {
        command.env_remove(name);
    }
    let child = command
        .args(&node.args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start node {}", node.id))?;
    node.child = Some(child);
    node.expected_exit = false;
    Ok(())
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > NODES_MAX {
        bail!("--nodes must be between 1 and {NODES_MAX}");
    }
    if args.base_port.checked_add(args.nodes - 1).is_none() || args.base_port < 1024 {
        bail!(
            "--base-port must leave room for {} ports at or above 1024",
            args.nodes
        );
    }
    let data = args
        .data
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kith-dev-{}", args.base_port)));
    if args.fresh && data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot delete {}", data.display()))?;
    }
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let exe = std::env::current_exe().context("cannot find the kith binary")?;

    // The playground's control server, reachable from this machine only.
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open the playground's control port")?;
    let control_url = format!("http://{}", control.local_addr()?);

    let addr = |i: u16| format!("127.0.0.1:{}", args.base_port + i - 1);
    let certs = data.join("certs");
    if args.secure {
        dev_certificates(&certs, args.nodes)?;
    }
    let scheme = if args.secure { "https" } else { "http" };
    let peers: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={}", addr(i)))
        .collect();
    let peers = peers.join(",");
    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        let dir = data.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut node_args: Vec<OsString> = ["serve", "--id", &i.to_string(), "--listen", &addr(i)]
            .iter()
            .map(OsString::from)
            .collect();
        node_args.extend([OsString::from("--data"), dir.clone().into_os_string()]);
        for a in [
            "--peers",
            &peers,
            "--exit-with-parent",
            "--dev-control",
            &control_url,
        ] {
            node_args.push(a.into());
        }
        let tls = args.secure.then(|| certs.join(format!("node-{i}")));
        if let Some(tls) = &tls {
            node_args.extend([OsString::from("--tls"), tls.clone().into_os_string()]);
        }
        let mut node = DevNode {
            id: i,
            url: format!("{scheme}://{}", addr(i)),
            log: dir.join("kith.log"),
            args: node_args,
            child: None,
            expected_exit: false,
            tls,
        };
        spawn(&exe, &mut node)?;
        nodes.push(node);
    }
    let mut worker_env = vec![(
        "KITH_ENDPOINTS",
        nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )];
    if args.secure {
        let token = std::fs::read_to_string(certs.join(crate::init::ADMIN_TOKEN_FILE))
            .context("cannot read the cluster's admin token")?;
        worker_env.push(("KITH_TOKEN", token.trim().to_owned()));
        worker_env.push(("KITH_CA", certs.join("ca.crt").display().to_string()));
    }
    let nodes: Nodes = Arc::new(Mutex::new(nodes));
    let workers: Workers = Arc::default();
    let playground = axum::Router::new()
        .route(
            "/nodes/{id}/{action}",
            axum::routing::post(playground_action),
        )
        .route("/workers", axum::routing::post(workers_action))
        .with_state(Playground {
            nodes: nodes.clone(),
            exe: exe.clone(),
            base_port: args.base_port,
            data: data.clone(),
            control_url: control_url.clone(),
            secure: args.secure,
            workers: workers.clone(),
            worker_env,
        });
    let control_server = tokio::spawn(async move {
        if let Err(e) = axum::serve(control, playground).await {
            say!("kith dev: playground control server stopped: {e}");
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let client_tls = args
        .secure
        .then(|| kith_client::tls::TlsOptions::trusting(&certs.join("ca.crt")))
        .transpose()?;
    let ready = tokio::select! {
        r = wait_for_leader(&nodes, client_tls.as_ref()) => r,
        _ = term.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = int.recv() => Err(anyhow::anyhow!("interrupted")),
    };
    let leader = match ready {
        Ok(leader) => leader,
        Err(e) => {
            stop_all(&nodes, &workers).await;
            return Err(e);
        }
    };

    {
        let nodes = nodes.lock().await;
        say!(
            "kith dev: {} nodes, data in {}",
            nodes.len(),
            data.display()
        );
        for n in nodes.iter() {
            let role = if n.id as u64 == leader {
                " (leader)"
            } else {
                ""
            };
            say!(
                "  node {}: {}{role}   log: {}",
                n.id,
                n.url,
                n.log.display()
            );
        }
        let url = &nodes[0].url;
        say!("  dashboard: {url}/   chat: {url}/chat   jobs: {url}/jobs   files: {url}/files");
        if args.secure {
            let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
            let ca = certs.join("ca.crt");
            say!(
                "  TLS:       on; peers speak only with this cluster's certificates ({})",
                certs.display()
            );
            let token_file = certs.join(crate::init::ADMIN_TOKEN_FILE);
            let token = std::fs::read_to_string(&token_file).unwrap_or_default();
            say!(
                "  tokens:    on; every request but /v1/health needs one (admin: {})",
                token_file.display()
            );
            say!(
                "  try:       export KITH_ENDPOINTS={} KITH_CA={} KITH_TOKEN=$(cat {})",
                urls.join(","),
                ca.display(),
                token_file.display()
            );
            say!("             kith kv put hello world && kith kv get hello");
            say!("  log in:    {url}/login#token={}", token.trim());
            say!(
                "  browser:   the certificates come from this cluster's own CA: import {} \
                 into the browser, or accept its warning once per node",
                ca.display()
            );
        } else {
            say!("  try:       kith kv put hello world && kith kv get hello");
            say!(
                "  plain HTTP on 127.0.0.1: anyone on this machine can use it \
                 (kith dev --secure runs it with TLS)"
            );
        }
    }
    say!("Ctrl-C stops the cluster.");

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = watch_children(&nodes) => {}
    }
    say!("kith dev: stopping");
    control_server.abort();
    stop_all(&nodes, &workers).await;
    Ok(())
}

/// What `POST /workers` asks for.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkersRequest {
    count: usize,
    queue: Option<String>,
}

fn playground_error(status: StatusCode, message: String) -> (StatusCode, Json<serde_json::Value>) {
    (
        status,
        Json(json!({"error": {"code": "playground", "message": message}})),
    )
}

/// Stops the workers started before, then starts `count` on `queue`.
async fn workers_action(
    State(playground): State<Playground>,
    body: Result<Json<WorkersRequest>, axum::extract::rejection::JsonRejection>,
) -> impl IntoResponse {
    let Ok(Json(request)) = body else {
        return playground_error(
            StatusCode::BAD_REQUEST,
            "the body must be {\"count\": N, \"queue\": Q}".into(),
        );
    };
    if request.count > WORKERS_MAX {
        return playground_error(
            StatusCode::BAD_REQUEST,
            format!("count must be 0 to {WORKERS_MAX}"),
        );
    }
    let queue = match (request.count, request.queue) {
        (0, _) => None,
        (_, Some(q)) if kith_core::limits::validate_room(&q).is_ok() => Some(q),
        _ => {
            return playground_error(
                StatusCode::BAD_REQUEST,
                "queue must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
            )
        }
    };
    let mut workers = playground.workers.lock().await;
    stop_workers(&mut workers).await;
    let mut names = Vec::new();
    if let Some(queue) = &queue {
        for i in 1..=request.count {
            match spawn_worker(&playground, queue, i) {
                Ok(child) => workers.push(child),
                Err(e) => {
                    stop_workers(&mut workers).await;
                    return playground_error(StatusCode::CONFLICT, e.to_string());
                }
            }
            names.push(format!("worker-{i}"));
        }
        say!(
            "kith dev: playground: {} worker(s) on queue '{queue}'",
            request.count
        );
    }
    (
        StatusCode::OK,
        Json(json!({"workers": names, "queue": queue})),
    )
}

/// Starts `kith worker` number `i` on `queue`, logging to `DATA/workers.log`.
fn spawn_worker(playground: &Playground, queue: &str, i: usize) -> anyhow::Result<Child> {
    let log = playground.data.join("workers.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let work = format!("{WORKER_JOB_WORK}; printf '{{\"worker\":\"%s\"}}' \"${{KITH_WORKER%/*}}\"");
    let child = Command::new(&playground.exe)
        .args(["worker", "--queue", queue, "--name", &format!("worker-{i}")])
        .args([
            "--lease",
            WORKER_LEASE_S,
            "--grace",
            "2",
            "--exit-with-parent",
        ])
        .args(["--", "sh", "-c", &work])
        .envs(playground.worker_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start a worker")?;
    Ok(child)
}

/// SIGTERM every worker, wait for them, SIGKILL any that outlive [`WORKER_STOP_GRACE`].
async fn stop_workers(workers: &mut Vec<Child>) {
    for w in workers.iter() {
        if let Some(pid) = w.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + WORKER_STOP_GRACE;
    for mut w in workers.drain(..) {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, w.wait()).await.is_err() {
            let _ = w.kill().await;
        }
    }
}

/// Carries out one playground action on node `id`; `add` starts node `id` as a new member.
async fn playground_action(
    State(playground): State<Playground>,
    Path((id, action)): Path<(u16, String)>,
) -> impl IntoResponse {
    let exe = &playground.exe;
    let mut nodes = playground.nodes.lock().await;
    if action == "add" {
        return match add_node(&playground, &mut nodes, id) {
            Ok(()) => {
                say!("kith dev: playground: node {id} started, joining the cluster");
                (
                    StatusCode::OK,
                    Json(json!({"node": id, "action": action, "done": "started"})),
                )
            }
            Err(e) => (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": "playground", "message": e.to_string()}})),
            ),
        };
    }
    let Some(node) = nodes.iter_mut().find(|n| n.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": format!("no node {id}")}})),
        );
    };
    let pid = node
        .child
        .as_ref()
        .and_then(|c| c.id())
        .map(|p| Pid::from_raw(p as i32));
    let result: anyhow::Result<&str> = async {
        match (action.as_str(), pid) {
            ("kill", Some(pid)) => {
                node.expected_exit = true;
                let _ = kill(pid, Signal::SIGCONT);
                kill(pid, Signal::SIGKILL)?;
                if let Some(mut child) = node.child.take() {
                    child.wait().await?;
                }
                Ok("killed")
            }
            ("pause", Some(pid)) => {
                kill(pid, Signal::SIGSTOP)?;
                Ok("paused")
            }
            ("resume", Some(pid)) => {
                kill(pid, Signal::SIGCONT)?;
                Ok("resumed")
            }
            ("restart", pid) => {
                if let Some(pid) = pid {
                    node.expected_exit = true;
                    let _ = kill(pid, Signal::SIGCONT);
                    kill(pid, Signal::SIGKILL)?;
                    if let Some(mut child) = node.child.take() {
                        child.wait().await?;
                    }
                }
                spawn(exe, node)?;
                Ok("restarted")
            }
            ("tamper", Some(pid)) => {
                if node.tls.is_some() {
                    bail!("tampering needs a plain `kith dev` (without --secure)");
                }
                // Restarts the node altering an entry a few past its log, so the next entries
                // it applies extend its hash chain over altered bytes.
                let client = kith_client::Client::with_tls(&[node.url.as_str()], None)?;
                let health = client.health_of(&node.url).await?;
                let last = health["last_log_index"].as_u64().context("no log index")?;
                let index = last + TAMPER_AHEAD;
                node.expected_exit = true;
                let _ = kill(pid, Signal::SIGCONT);
                kill(pid, Signal::SIGKILL)?;
                if let Some(mut child) = node.child.take() {
                    child.wait().await?;
                }
                spawn_with_args(exe, node, &[TAMPER_FLAG.into(), index.to_string()])?;
                Ok("restarted with its ledger altered")
            }
            ("isolate" | "heal", Some(_)) => {
                let isolated = action == "isolate";
                let mut http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(3));
                if let Some(dir) = &node.tls {
                    let tls = kith_client::tls::TlsOptions::node_dir(dir)?;
                    http = http.tls_backend_preconfigured(tls.client_config(&[b"http/1.1"])?);
                }
                let answer = http
                    .build()?
                    .post(format!("{}/internal/dev/isolate", node.url))
                    .json(&json!({ "isolated": isolated }))
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    bail!("node answered {}", answer.status());
                }
                Ok(if isolated { "cut off" } else { "healed" })
            }
            ("kill" | "pause" | "resume" | "isolate" | "heal" | "tamper", None) => {
                bail!("node {id} is not running; restart it first")
            }
            (other, _) => bail!("unknown action '{other}'"),
        }
    }
    .await;
    match result {
        Ok(done) => {
            say!("kith dev: playground: node {id} {done}");
            (
                StatusCode::OK,
                Json(json!({"node": id, "action": action, "done": done})),
            )
        }
        Err(e) => (
            StatusCode::CONFLICT,
            Json(json!({"error": {"code": "playground", "message": e.to_string()}})),
        ),
    }
}

/// Starts node `id`, the next after the highest, with `--join` through a running node
/// (any member forwards the request to the leader): it joins as a learner, catches up,
/// and becomes a voter. At most [`NODES_MAX`] nodes.
fn add_node(playground: &Playground, nodes: &mut Vec<DevNode>, id: u16) -> anyhow::Result<()> {
    if playground.secure {
        bail!("adding nodes from the playground needs a plain `kith dev` (without --secure)");
    }
    let next = nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    if id != next {
        bail!("the next node is {next}, not {id}");
    }
    if id > NODES_MAX {
        bail!("kith dev runs at most {NODES_MAX} nodes");
    }
    let port = playground
        .base_port
        .checked_add(id - 1)
        .context("no port left for another node")?;
    let addr = format!("127.0.0.1:{port}");
    let via = nodes
        .iter()
        .find(|n| n.child.is_some())
        .map(|n| n.url.clone())
        .context("no running node to join through")?;
    let dir = playground.data.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut args: Vec<OsString> = ["serve", "--id", &id.to_string(), "--listen", &addr]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend([OsString::from("--data"), dir.clone().into_os_string()]);
    for a in [
        "--join",
        &via,
        "--exit-with-parent",
        "--dev-control",
        &playground.control_url,
    ] {
        args.push(a.into());
    }
    let mut node = DevNode {
        id,
        url: format!("http://{addr}"),
        log: dir.join("kith.log"),
        args,
        child: None,
        expected_exit: false,
        tls: None,
    };
    spawn(&playground.exe, &mut node)?;
    nodes.push(node);
    Ok(())
}

/// Polls the nodes until one reports itself ready with a leader; returns the leader's id.
async fn wait_for_leader(
    nodes: &Nodes,
    tls: Option<&kith_client::tls::TlsOptions>,
) -> anyhow::Result<u64> {
    let urls: Vec<(u16, String, PathBuf)> = {
        let nodes = nodes.lock().await;
        nodes
            .iter()
            .map(|n| (n.id, n.url.clone(), n.log.clone()))
            .collect()
    };
    let client = kith_client::Client::with_tls(&[urls[0].1.as_str()], tls)?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        {
            let mut nodes = nodes.lock().await;
            for n in nodes.iter_mut() {
                if let Some(status) = n
                    .child
                    .as_mut()
                    .map(|c| c.try_wait())
                    .transpose()?
                    .flatten()
                {
                    bail!(
                        "node {} exited during startup ({status}); see {}",
                        n.id,
                        n.log.display()
                    );
                }
            }
        }
        for (_, url, _) in &urls {
            if let Ok(h) = client.health_of(url).await {
                if h["ready"].as_bool() == Some(true) {
                    if let Some(leader) = h["leader_id"].as_u64() {
                        return Ok(leader);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "no leader was elected within {} s",
        STARTUP_TIMEOUT.as_secs()
    )
}

/// The certificates of a `--secure` cluster: made with `kith init` on first use, and one
/// more node certificate for each node a later run adds (`--nodes`).
fn dev_certificates(certs: &std::path::Path, nodes: u16) -> anyhow::Result<()> {
    let host = "127.0.0.1".to_owned();
    if !certs.join("ca.key").exists() {
        let all: Vec<(u64, String)> = (1..=nodes).map(|i| (u64::from(i), host.clone())).collect();
        crate::init::create(certs, &all)?;
        return Ok(());
    }
    for i in 1..=nodes {
        if !certs.join(format!("node-{i}")).exists() {
            crate::init::issue(certs, u64::from(i), &host)?;
        }
    }
    Ok(())
}

/// Reports children that exit on their own (not by the playground). Never returns: the
/// cluster keeps running, with whatever nodes are left, until Ctrl-C.
async fn watch_children(nodes: &Nodes) {
    loop {
        {
            let mut nodes = nodes.lock().await;
            for n in nodes.iter_mut() {
                let exited = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    if !n.expected_exit {
                        say!(
                            "kith dev: node {} exited ({status}); see {}",
                            n.id,
                            n.log.display()
                        );
                    }
                    n.child = None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stops the workers, then SIGCONT and SIGTERM every node, wait for them, SIGKILL any that
/// outlive the grace period.
async fn stop_all(nodes: &Nodes, workers: &Workers) {
    stop_workers(&mut *workers.lock().await).await;
    let mut nodes = nodes.lock().await;
    for n in nodes.iter() {
        if let Some(pid) = n.child.as_ref().and_then(|c| c.id()) {
            let pid = Pid::from_raw(pid as i32);
            // A paused node cannot handle SIGTERM until it runs again.
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for n in nodes.iter_mut() {
        let Some(child) = n.child.as_mut() else {
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, child.wait()).await.is_err() {
            say!("kith dev: node {} did not stop in time; killing it", n.id);
            let _ = child.kill().await;
        }
    }
}
