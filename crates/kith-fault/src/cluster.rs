//! A cluster of real `kith serve` processes: the one way kith's cluster tests
//! (`crates/kith/tests/it/harness.rs`) and the fault suite run nodes.
//!
//! Owns: [`Cluster`] — spawning nodes (bootstrapped together with `--peers`, or joining
//! later with `--join`), SIGKILL, SIGTERM and restart, SIGSTOP and SIGCONT, per-node
//! environment, health probes, the transport fault layer's settings, membership changes,
//! and waiting for a leader. Where nodes listen is [`Addresses`]: on 127.0.0.1, each on an
//! ephemeral port of its own, or each on a loopback address of its own, `127.0.B.(10+i)`,
//! where block `B` is taken with an exclusive lock file (`/tmp/kith-fault-block-B.lock`) so
//! that suites running at the same time — two tests in one `cargo test`, say — never share
//! an address and never partition each other. A node's peer connections bind its listen
//! address as their source (kith-node's transport does this), so nftables rules on address
//! pairs separate exactly the nodes they name.
//!
//! Refuses: sleeping as a condition — every wait polls a condition against a deadline — and
//! leaving processes behind: children are killed on drop and by [`crate::cleanup`] on
//! signals, and run with `--exit-with-parent` for the rest.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use kith_client::tls::TlsOptions;
use kith_core::FaultSettings;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::time::Instant;

/// Address blocks tried (the third octet of 127.0.B.x).
const BLOCKS_MAX: u8 = 250;
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Membership changes wait for a learner to catch up, so they get longer than other calls.
const MEMBERSHIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One `kith serve` process.
pub struct NodeProc {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// How this node enters the cluster (`--peers …` or `--join …`).
    entry_args: Vec<String>,
    /// `http` or, in a cluster with TLS, `https`.
    scheme: &'static str,
    /// Environment for this node alone, on top of the cluster's (test hooks).
    env: Vec<(String, String)>,
}

impl NodeProc {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr())
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// An exclusive claim on an address block, released when the lock file closes.
struct BlockLock {
    _file: File,
    block: u8,
}

fn claim_block() -> anyhow::Result<BlockLock> {
    for block in 0..BLOCKS_MAX {
        let path = std::env::temp_dir().join(format!("kith-fault-block-{block}.lock"));
        let file = File::create(&path).with_context(|| format!("open {}", path.display()))?;
        if file.try_lock().is_ok() {
            return Ok(BlockLock { _file: file, block });
        }
    }
    bail!("all {BLOCKS_MAX} loopback address blocks are in use")
}

/// A free port on `ip`, never one this process was given before: the kernel may hand a
/// just-released ephemeral port out again at once, and two nodes of one cluster then got
/// the same port.
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    free_ports(ip, 1)
}

/// The first of `count` consecutive free ports on `ip` (for `kith dev --base-port`), none
/// of them given before, and all of them recorded as given: a test running beside it must
/// not get one of the ports `kith dev` is about to bind.
pub fn free_ports(ip: Ipv4Addr, count: u16) -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<(Ipv4Addr, u16)>> = std::sync::Mutex::new(Vec::new());
    const ATTEMPTS_MAX: usize = 1000;
    for _ in 0..ATTEMPTS_MAX {
        let listener = std::net::TcpListener::bind(SocketAddrV4::new(ip, 0))
            .with_context(|| format!("cannot bind {ip}:0"))?;
        let base = listener.local_addr()?.port();
        drop(listener);
        if base.checked_add(count).is_none() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        let run = || (0..count).map(|i| (ip, base + i));
        let usable = run().all(|(ip, port)| {
            !given.contains(&(ip, port))
                && std::net::TcpListener::bind(SocketAddrV4::new(ip, port)).is_ok()
        });
        if usable {
            given.extend(run());
            return Ok(base);
        }
    }
    anyhow::bail!("no run of {count} free ports on {ip}")
}

/// Where a cluster's nodes listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// 127.0.0.1, each node on an ephemeral port of its own.
    Localhost,
    /// One loopback address per node, `127.0.B.(10+i)`, for suites that partition nodes.
    OwnPerNode,
}

/// How a cluster starts its nodes.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `kith` binary.
    pub kith_bin: PathBuf,
    pub addresses: Addresses,
    /// Arguments every node gets after `serve --id --listen --data` and its entry arguments.
    pub args: Vec<String>,
    /// Environment every node gets (test hooks).
    pub env: Vec<(String, String)>,
    /// The nodes' `RUST_LOG`.
    pub log_filter: String,
    /// The prefix of the temporary directory holding every node's data and log.
    pub dir_prefix: String,
    /// Run the nodes with TLS: certificates from `kith init` (and `kith init add-node` for
    /// nodes that join later), `--tls DIR/node-N`, and clients that trust the cluster CA.
    pub tls: bool,
}

impl Options {
    /// The fault suite's nodes: own addresses (so partitions can name them), the fault
    /// layer enabled, and settings that make every schedule exercise snapshots and chunks.
    pub fn fault_suite(kith_bin: &Path, env: &[(String, String)]) -> Options {
        let args = [
            "--enable-fault-injection",
            "--exit-with-parent",
            // Small chunks, so the file workload's uploads span several chunks and holders.
            "--file-chunk-bytes",
            "16384",
            // Frequent snapshots and a short log behind them, so every schedule builds
            // snapshots and purges the log, and a node that was down or joined late catches
            // up by installing one (with the defaults, a schedule never reaches the first).
            "--snapshot-threshold",
            "100",
            "--snapshot-keep",
            "20",
        ];
        Options {
            kith_bin: kith_bin.to_owned(),
            addresses: Addresses::OwnPerNode,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.to_vec(),
            log_filter: std::env::var("KITH_FAULT_NODE_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".into()),
            dir_prefix: "kith-fault-".into(),
            tls: false,
        }
    }
}

/// Polls `probe` every 50 ms until it yields a value or `within` passes.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A running test cluster.
pub struct Cluster {
    options: Options,
    tmp: Option<tempfile::TempDir>,
    pub nodes: Vec<NodeProc>,
    http: reqwest::Client,
    /// With TLS: per node, a client presenting that node's certificate (the peer routes and
    /// membership changes answer only members' certificates).
    as_node: std::collections::BTreeMap<u64, reqwest::Client>,
    /// With TLS: the first administrator's token (`kith init`'s `admin.token`), which every
    /// client of the harness presents.
    token: Option<String>,
    /// Nodes the nemesis removed from the membership (still running, with their data) and
    /// has not yet seen back as voters.
    pub removed: BTreeSet<u64>,
    block: Option<BlockLock>,
}

impl Cluster {
    /// Starts `n` fault-suite nodes that bootstrap one cluster (see
    /// [`Options::fault_suite`]). `env` goes to every node (test hooks).
    pub fn start(kith_bin: &Path, n: u64, env: &[(String, String)]) -> anyhow::Result<Cluster> {
        Cluster::start_with(Options::fault_suite(kith_bin, env), n)
    }

    /// Starts `n` nodes that bootstrap one cluster with `--peers`.
    pub fn start_with(options: Options, n: u64) -> anyhow::Result<Cluster> {
        assert!((1..=9).contains(&n), "1 to 9 nodes");
        let block = match options.addresses {
            Addresses::OwnPerNode => Some(claim_block()?),
            Addresses::Localhost => None,
        };
        let tmp = tempfile::Builder::new()
            .prefix(&options.dir_prefix)
            .tempdir()
            .context("temp dir")?;
        let mut cluster = Cluster {
            options,
            tmp: Some(tmp),
            nodes: Vec::new(),
            http: http_client(None, None)?,
            as_node: Default::default(),
            token: None,
            removed: BTreeSet::new(),
            block,
        };
        for id in 1..=n {
            cluster.place(id, Vec::new())?;
        }
        if cluster.options.tls {
            let nodes: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.id, n.addr()))
                .collect();
            cluster.kith_init(&["init", "--no-profile", "--nodes", &nodes.join(",")])?;
            let token = std::fs::read_to_string(cluster.certs_dir()?.join("admin.token"))
                .context("admin.token")?;
            cluster.token = Some(token.trim().to_owned());
            cluster.http = http_client(
                Some(&TlsOptions::trusting(&cluster.certs_dir()?.join("ca.crt"))?),
                cluster.token.as_deref(),
            )?;
            for id in 1..=n {
                cluster.trust_node(id)?;
            }
        }
        let peers: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr()))
            .collect();
        let peers = peers.join(",");
        for node in &mut cluster.nodes {
            node.entry_args
                .splice(0..0, ["--peers".to_owned(), peers.clone()]);
        }
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts a new node `id` that joins the cluster through node `via`'s URL.
    pub fn join(&mut self, id: u64, via: u64) -> anyhow::Result<()> {
        let url = self.node(via).url();
        self.place(id, vec!["--join".into(), url])?;
        if self.options.tls {
            let node = format!("{id}={}", self.node(id).addr());
            self.kith_init(&["init", "add-node", "--node", &node])?;
            self.trust_node(id)?;
        }
        self.spawn(id)
    }

    /// Where `kith init` wrote this cluster's certificates (with TLS).
    pub fn certs_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .tmp
            .as_ref()
            .context("the cluster's files were kept")?
            .path()
            .join("certs"))
    }

    /// What a client of this cluster needs to trust it: `None` without TLS.
    pub fn client_tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        if !self.options.tls {
            return Ok(None);
        }
        Ok(Some(TlsOptions::trusting(
            &self.certs_dir()?.join("ca.crt"),
        )?))
    }

    /// The token clients of this cluster present (with TLS).
    pub fn client_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Runs `kith ARGS… --out CERTS`.
    fn kith_init(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(&self.options.kith_bin)
            .args(args)
            .arg("--out")
            .arg(self.certs_dir()?)
            .output()
            .with_context(|| format!("cannot run {}", self.options.kith_bin.display()))?;
        if !out.status.success() {
            bail!(
                "kith {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Gives node `id` its `--tls` directory and this harness a client presenting its
    /// certificate.
    fn trust_node(&mut self, id: u64) -> anyhow::Result<()> {
        let dir = self.certs_dir()?.join(format!("node-{id}"));
        let client = http_client(Some(&TlsOptions::node_dir(&dir)?), self.token.as_deref())?;
        self.as_node.insert(id, client);
        let node = self.node_mut(id);
        node.scheme = "https";
        node.entry_args.push("--tls".into());
        node.entry_args.push(dir.display().to_string());
        Ok(())
    }

    /// A client presenting node `id`'s certificate with TLS; the plain client without.
    pub fn http_as(&self, id: u64) -> &reqwest::Client {
        self.as_node.get(&id).unwrap_or(&self.http)
    }

    /// Gives node `id` an address, a port and a data directory (not yet started).
    fn place(&mut self, id: u64, entry_args: Vec<String>) -> anyhow::Result<()> {
        assert!(
            self.nodes.iter().all(|n| n.id != id),
            "node {id} already exists"
        );
        let ip = match &self.block {
            Some(block) => Ipv4Addr::new(127, 0, block.block, 10 + id as u8),
            None => Ipv4Addr::LOCALHOST,
        };
        let dir = self
            .tmp
            .as_ref()
            .map(|t| t.path().to_owned())
            .context("the cluster's files were kept")?
            .join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)?;
        self.nodes.push(NodeProc {
            id,
            ip,
            port: free_port(ip)?,
            dir,
            child: None,
            paused: false,
            entry_args,
            scheme: "http",
            env: Vec::new(),
        });
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("known node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("known node id")
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// (Re)starts node `id` from its data directory, with the same command line.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let options = self.options.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("kith.log"))
            .context("node log file")?;
        let mut command = Command::new(&options.kith_bin);
        // `kith serve` reads a `KITH_<FLAG>` variable for every flag it is not given (and
        // `KITH_CONFIG`): none of the caller's may leak into a test node. Test hooks are
        // set below, on purpose.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("KITH_") && !name_text.starts_with("KITH_TEST_") {
                command.env_remove(&name);
            }
        }
        let child = command
            .args(["serve", "--id", &id.to_string(), "--listen", &node.addr()])
            .arg("--data")
            .arg(node.dir.join("data"))
            .args(&node.entry_args)
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", &options.log_filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log fd")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot spawn {}", options.kith_bin.display()))?;
        crate::cleanup::register_pid(child.id());
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Sets an environment variable for node `id`'s next start.
    pub fn set_env(&mut self, id: u64, key: &str, value: &str) {
        self.node_mut(id)
            .env
            .push((key.to_owned(), value.to_owned()));
    }

    /// Forgets the environment `set_env` gave node `id` (for its next start).
    pub fn clear_env(&mut self, id: u64) {
        self.node_mut(id).env.clear();
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(|c| c.id())
    }

    /// Waits (at most `within`) for running node `id` to exit on its own, and reaps it. The
    /// child stays with the cluster until it has exited, so a timeout still kills it when
    /// the cluster is dropped.
    pub async fn wait_for_exit(
        &mut self,
        id: u64,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let node = self.node_mut(id);
        let status = wait_for(&format!("node {id} to exit"), within, || {
            let status = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            async move { status }
        })
        .await?;
        if let Some(child) = node.child.take() {
            crate::cleanup::unregister_pid(child.id());
        }
        Ok(status)
    }

    /// Sends SIGTERM to running node `id` and waits (at most `within`) for it to exit.
    pub async fn terminate(
        &mut self,
        id: u64,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).context("SIGTERM")?;
        self.wait_for_exit(id, within).await
    }

    /// Node `id`'s base URL.
    pub fn url(&self, id: u64) -> String {
        self.node(id).url()
    }

    /// Every node's URL, comma-separated (an `--endpoints` value).
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        urls.join(",")
    }

    /// SIGKILLs node `id` (nothing gets flushed) and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        let Some(mut child) = node.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
        crate::cleanup::unregister_pid(child.id());
        node.paused = false;
    }

    /// SIGSTOPs node `id`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(child) = &node.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGSTOP);
            node.paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(child) = &node.child {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        node.paused = false;
    }

    /// Resumes paused nodes and restarts dead ones.
    ///
    /// A node whose process exited on its own (`kith serve` exits when its Raft core stops
    /// on a fatal error) is restarted too, as a supervisor would; each such restart is
    /// returned as a note, so the run reports it.
    pub fn revive_all(&mut self) -> anyhow::Result<Vec<String>> {
        let mut notes = Vec::new();
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id);
            }
            let node = self.node_mut(id);
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                node.child = None;
                notes.push(format!("n{id} had exited on its own ({status}); restarted"));
            }
            if !self.node(id).is_running() {
                self.spawn(id)?;
            }
        }
        Ok(notes)
    }

    /// Node `id`'s `/v1/health` document (also when it answers 503), if it answers at all.
    pub async fn health(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/v1/health", self.node(id).url()))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The leader that every node in `among` that answers agrees on, once one of them says
    /// it leads; at least a majority of `among` must answer.
    pub async fn agreed_leader(&self, among: &[u64]) -> Option<u64> {
        let reports = futures::future::join_all(
            among
                .iter()
                .map(|id| async { (*id, self.health(*id).await) }),
        )
        .await;
        let answered: Vec<(u64, Value)> = reports
            .into_iter()
            .filter_map(|(id, h)| Some((id, h?)))
            .collect();
        if answered.len() * 2 <= among.len() {
            return None;
        }
        let leader = answered
            .iter()
            .find(|(_, h)| h["role"] == "leader")
            .map(|(id, _)| *id)?;
        answered
            .iter()
            .all(|(_, h)| h["leader_id"].as_u64() == Some(leader))
            .then_some(leader)
    }

    pub async fn wait_for_leader(&self, among: &[u64], within: Duration) -> anyhow::Result<u64> {
        wait_for("an agreed leader", within, || self.agreed_leader(among)).await
    }

    /// Sets the transport fault layer on node `id`.
    pub async fn set_faults(&self, id: u64, settings: FaultSettings) -> anyhow::Result<()> {
        let r = self
            .http_as(id)
            .post(format!("{}/internal/faults", self.node(id).url()))
            .timeout(Duration::from_secs(2))
            .json(&settings)
            .send()
            .await
            .with_context(|| format!("POST /internal/faults to node {id}"))?;
        if !r.status().is_success() {
            bail!("node {id} refused fault settings: {}", r.status());
        }
        Ok(())
    }

    /// Whether node `id` is a voter, as node `via` sees the membership (`GET /v1/cluster`);
    /// `None` when `via` does not answer.
    pub async fn is_voter(&self, via: u64, id: u64) -> Option<bool> {
        let r = self
            .http
            .get(format!("{}/v1/cluster", self.node(via).url()))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let members = v["members"].as_array()?;
        Some(
            members
                .iter()
                .any(|m| m["id"].as_u64() == Some(id) && m["voter"] == true),
        )
    }

    /// `DELETE /v1/cluster/members/{id}` through node `via` (which forwards to the leader).
    pub async fn remove_member(&self, via: u64, id: u64) -> anyhow::Result<()> {
        let r = self
            .http_as(via)
            .delete(format!("{}/v1/cluster/members/{id}", self.node(via).url()))
            .timeout(MEMBERSHIP_REQUEST_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("DELETE member {id} through node {via}"))?;
        if !r.status().is_success() {
            let status = r.status();
            bail!(
                "removing node {id}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// `POST /v1/cluster/members` of node `id` at its own address, through node `via`. With
    /// TLS the request presents node `id`'s certificate, as `kith serve --join` does.
    pub async fn add_member(&self, via: u64, id: u64) -> anyhow::Result<()> {
        let r = self
            .http_as(id)
            .post(format!("{}/v1/cluster/members", self.node(via).url()))
            .timeout(MEMBERSHIP_REQUEST_TIMEOUT)
            .json(&serde_json::json!({"id": id, "addr": self.node(id).addr()}))
            .send()
            .await
            .with_context(|| format!("POST member {id} through node {via}"))?;
        if !r.status().is_success() {
            let status = r.status();
            bail!(
                "adding node {id}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Keeps the data directories (and node logs) after the cluster is dropped; returns where.
    pub fn keep_files(&mut self) -> Option<PathBuf> {
        self.tmp.take().map(|t| t.keep())
    }

    /// The last `lines` lines of every node's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = std::fs::read_to_string(node.dir.join("kith.log")).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            out.push_str(&format!("---- node {} log ----\n", node.id));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The harness's HTTP client: plain, or trusting the cluster CA (and presenting a node's
/// certificate when `tls` has one, and `token` on every request).
fn http_client(tls: Option<&TlsOptions>, token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    kith_client::tls::install_default_provider();
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls.client_config(&[b"http/1.1"])?);
    }
    builder.build().context("http client")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
    }
}
