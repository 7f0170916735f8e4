//! A test cluster of real `kith serve` processes on 127.0.0.1 ephemeral ports, each with
//! its own temporary data directory: `kith_fault::cluster::Cluster` (the one process
//! supervisor the tests and the fault suite share), with the tests' conveniences and
//! panics instead of errors. Every wait polls a condition against a deadline.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kith_client::{Client, Consistency};
use kith_fault::cluster::{Addresses, Cluster, NodeProc, Options};
use serde_json::Value;

pub struct TestCluster {
    inner: Cluster,
    http: reqwest::Client,
}

/// A free 127.0.0.1 port, never one this process was given before.
pub fn free_port() -> u16 {
    kith_fault::cluster::free_port(std::net::Ipv4Addr::LOCALHOST).expect("a free port")
}

/// The first of `count` consecutive free 127.0.0.1 ports (for `kith dev --base-port`),
/// reserved against every other `free_port` of this process.
pub fn free_port_run(count: u16) -> u16 {
    kith_fault::cluster::free_ports(std::net::Ipv4Addr::LOCALHOST, count).expect("free ports")
}

/// The value of gauge `name` in node `id`'s `/metrics` (`None`: no answer, or no gauge).
pub async fn gauge(cluster: &TestCluster, id: u64, name: &str) -> Option<u64> {
    let text = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(id)))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("kith_{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `probe` until it yields a value; panics once `within` has passed.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    kith_fault::cluster::wait_for(what, within, probe)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

impl TestCluster {
    /// Starts `n` nodes that bootstrap one cluster with `--peers`.
    pub fn start(n: u64, extra_args: &[&str]) -> Self {
        TestCluster::start_with(n, extra_args, false)
    }

    /// Starts `n` nodes with TLS: certificates from `kith init`, `--tls DIR/node-N`; the
    /// harness's clients trust the cluster CA.
    pub fn start_secure(n: u64, extra_args: &[&str]) -> Self {
        TestCluster::start_with(n, extra_args, true)
    }

    fn start_with(n: u64, extra_args: &[&str], tls: bool) -> Self {
        let options = Options {
            kith_bin: env!("CARGO_BIN_EXE_kith").into(),
            addresses: Addresses::Localhost,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log_filter: std::env::var("KITH_TEST_LOG")
                .unwrap_or_else(|_| "info,openraft=info".into()),
            dir_prefix: "kith-test-".into(),
            tls,
        };
        let inner = Cluster::start_with(options, n).expect("start the cluster");
        TestCluster {
            http: inner.http().clone(),
            inner,
        }
    }

    /// The underlying cluster (certificates, clients presenting a node's certificate).
    pub fn inner(&self) -> &Cluster {
        &self.inner
    }

    /// The nodes, with their ids, addresses and directories.
    pub fn nodes(&self) -> &[NodeProc] {
        &self.inner.nodes
    }

    /// Sets an environment variable for node `id` and restarts it with it, from its data.
    pub fn restart_with_env(&mut self, id: u64, key: &str, value: &str) {
        self.kill(id);
        self.inner.set_env(id, key, value);
        self.spawn(id);
    }

    /// Forgets the environment `restart_with_env` set for node `id` (for its next start).
    pub fn clear_env(&mut self, id: u64) {
        self.inner.clear_env(id);
    }

    /// Waits (bounded) for node `id` to exit on its own and reaps it; returns its status.
    pub async fn wait_for_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        assert!(self.inner.pid(id).is_some(), "node {id} is running");
        self.inner
            .wait_for_exit(id, within)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a new node `id` that joins through `via`'s URL.
    pub fn start_joining(&mut self, id: u64, via: u64) {
        self.inner.join(id, via).expect("start a joining node");
    }

    /// (Re)starts node `id` from its data directory.
    pub fn spawn(&mut self, id: u64) {
        self.inner.spawn(id).expect("spawn kith serve");
    }

    /// SIGKILLs node `id` (no chance to flush anything) and reaps it.
    pub fn kill(&mut self, id: u64) {
        assert!(self.inner.pid(id).is_some(), "node {id} is running");
        self.inner.kill(id);
    }

    /// SIGSTOPs node `id`: it keeps its sockets but answers nothing until [`Self::resume`].
    pub fn pause(&mut self, id: u64) {
        self.inner.pause(id);
    }

    /// SIGCONTs a paused node `id`.
    pub fn resume(&mut self, id: u64) {
        self.inner.resume(id);
    }

    /// Sends SIGTERM to node `id` and waits (bounded) for it to exit; returns its status.
    pub async fn terminate(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        self.inner
            .terminate(id, within)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The process id of running node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        self.inner.pid(id).expect("node is running")
    }

    /// The `--endpoints` value naming every node.
    pub fn endpoints(&self) -> String {
        self.inner.endpoints()
    }

    pub fn url(&self, id: u64) -> String {
        self.inner.url(id)
    }

    /// A client that talks to node `id` only.
    pub fn client(&self, id: u64) -> Client {
        self.client_over(&[id])
    }

    /// A client over the given nodes, failing over between them.
    pub fn client_over(&self, ids: &[u64]) -> Client {
        let urls: Vec<String> = ids.iter().map(|id| self.url(*id)).collect();
        let tls = self.inner.client_tls().expect("the cluster CA");
        Client::with_options(&urls, tls.as_ref(), self.inner.client_token()).expect("client")
    }

    pub async fn health(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/v1/health", self.url(id)))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits until one of `among` reports itself leader and every other live one in
    /// `among` agrees; returns the leader's id.
    pub async fn wait_for_leader(&self, among: &[u64], within: Duration) -> u64 {
        wait_until("a leader", within, || async {
            let mut leader = None;
            for id in among {
                let h = self.health(*id).await?;
                if h["role"] == "leader" {
                    leader = Some(*id);
                }
            }
            let leader = leader?;
            for id in among {
                let h = self.health(*id).await?;
                if h["leader_id"].as_u64() != Some(leader) {
                    return None;
                }
            }
            Some(leader)
        })
        .await
    }

    /// Waits until a stale read of `key` on node `id` returns `value`.
    pub async fn wait_for_value(&self, id: u64, key: &str, value: &[u8], within: Duration) {
        let client = self.client(id);
        wait_until(&format!("node {id} to have {key}"), within, || async {
            match client.get(key, Consistency::Stale).await {
                Ok(Some(v)) if v.value == value => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// A raw HTTP client for status-code checks (trusting the cluster CA with TLS).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Lines of each node's log shown when a test fails.
const LOG_TAIL_LINES: usize = 400;

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprint!("{}", self.inner.log_tails(LOG_TAIL_LINES));
        }
        // Dropping `inner` kills every node.
    }
}

/// A `kith serve` process, killed when dropped.
pub struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kith serve ARGS` with `env`, and no other `KITH_*` variable of this process.
pub fn serve(args: &[&str], env: &[(&str, String)], log: &Path) -> Node {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kith"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KITH_") {
            command.env_remove(name);
        }
    }
    let log = std::fs::File::create(log).expect("log file");
    let child = command
        .arg("serve")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start kith serve");
    Node(child)
}

pub fn http() -> reqwest::Client {
    kith_client::tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Waits until a node answers on `port` as the leader of its one-member cluster.
pub async fn leads_on(port: u16) {
    let http = http();
    wait_until(&format!("a leader on port {port}"), SERVE_WITHIN, || {
        let http = http.clone();
        async move {
            let health: Value = http
                .get(format!("http://127.0.0.1:{port}/v1/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (health["role"] == "leader").then_some(())
        }
    })
    .await;
}

const SERVE_WITHIN: Duration = Duration::from_secs(30);

/// Pids of the live (non-zombie) children of `parent`, read from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, …
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            out.push(pid);
        }
    }
    out
}
