//! A cluster of real `kith serve` processes, each on a loopback address of its own.
//!
//! Owns: [`Cluster`] — spawning nodes, SIGKILL and restart, SIGSTOP and SIGCONT, health
//! probes, the transport fault layer's settings, membership changes, and waiting for a
//! leader. Node `i` (from 1) listens on `127.0.B.(10+i)`, where block `B` is taken with an
//! exclusive lock file (`/tmp/kith-fault-block-B.lock`) so that suites running at the same
//! time — two tests in one `cargo test`, say — never share an address and never partition
//! each other. A node's peer connections bind its listen address as their source (kith-node's
//! transport does this), so nftables rules on address pairs separate exactly the nodes they
//! name.
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
}

impl NodeProc {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
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

fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddrV4::new(ip, 0))
        .with_context(|| format!("cannot bind {ip}:0"))?;
    Ok(listener.local_addr()?.port())
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
    kith_bin: PathBuf,
    tmp: Option<tempfile::TempDir>,
    pub nodes: Vec<NodeProc>,
    peers: String,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    /// Nodes the nemesis removed from the membership (still running, with their data) and
    /// has not yet seen back as voters.
    pub removed: BTreeSet<u64>,
    _block: BlockLock,
}

impl Cluster {
    /// Starts `n` nodes that bootstrap one cluster. `env` goes to every node (test hooks).
    pub fn start(kith_bin: &Path, n: u64, env: &[(String, String)]) -> anyhow::Result<Cluster> {
        assert!((1..=9).contains(&n), "1 to 9 nodes");
        let block = claim_block()?;
        let tmp = tempfile::Builder::new()
            .prefix("kith-fault-")
            .tempdir()
            .context("temp dir")?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            let ip = Ipv4Addr::new(127, 0, block.block, 10 + id as u8);
            let dir = tmp.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&dir)?;
            nodes.push(NodeProc {
                id,
                ip,
                port: free_port(ip)?,
                dir,
                child: None,
                paused: false,
            });
        }
        let peers: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr()))
            .collect();
        let mut cluster = Cluster {
            kith_bin: kith_bin.to_owned(),
            tmp: Some(tmp),
            nodes,
            peers: peers.join(","),
            env: env.to_vec(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .context("http client")?,
            removed: BTreeSet::new(),
            _block: block,
        };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        Ok(cluster)
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
        let bin = self.kith_bin.clone();
        let peers = self.peers.clone();
        let env = self.env.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("kith.log"))
            .context("node log file")?;
        let child = Command::new(&bin)
            .args(["serve", "--id", &id.to_string(), "--listen", &node.addr()])
            .arg("--data")
            .arg(node.dir.join("data"))
            .args(["--peers", &peers])
            .args(["--enable-fault-injection", "--exit-with-parent"])
            // Small chunks, so the file workload's uploads span several chunks and holders.
            .args(["--file-chunk-bytes", "16384"])
            // Frequent snapshots and a short log behind them, so every schedule builds
            // snapshots and purges the log, and a node that was down or joined late catches
            // up by installing one (with the defaults, a schedule never reaches the first).
            .args(["--snapshot-threshold", "100", "--snapshot-keep", "20"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("KITH_FAULT_NODE_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log fd")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot spawn {}", bin.display()))?;
        crate::cleanup::register_pid(child.id());
        node.child = Some(child);
        node.paused = false;
        Ok(())
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
            .http
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
            .http
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

    /// `POST /v1/cluster/members` of node `id` at its own address, through node `via`.
    pub async fn add_member(&self, via: u64, id: u64) -> anyhow::Result<()> {
        let r = self
            .http
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
    }
}
