//! A test cluster of real `kith serve` processes on 127.0.0.1 ephemeral ports, each with
//! its own temporary data directory. Every wait polls a condition against a deadline.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kith_client::{Client, Consistency};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::time::Instant;

pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Arguments that say how this node enters the cluster (`--peers …` or `--join …`).
    entry_args: Vec<String>,
    /// Extra environment for this node's process (test fault hooks).
    env: Vec<(String, String)>,
}

pub struct TestCluster {
    _tmp: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    extra_args: Vec<String>,
    http: reqwest::Client,
}

/// A free 127.0.0.1 port, never one this process was given before.
pub fn free_port() -> u16 {
    // The kernel may hand a just-released ephemeral port out again at once, and did: two
    // nodes of one cluster got the same port, and the second could not listen. No port is
    // handed out twice in this process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().expect("port list lock");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        // The poll interval between checks of the condition, not a wait for it: the loop
        // ends as soon as `probe` succeeds, or fails at the deadline.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestCluster {
    /// Starts `n` nodes that bootstrap one cluster with `--peers`.
    pub fn start(n: u64, extra_args: &[&str]) -> Self {
        let tmp = tempfile::TempDir::new().expect("temp dir");
        let nodes: Vec<(u64, String)> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let peers: Vec<String> = nodes.iter().map(|(id, a)| format!("{id}={a}")).collect();
        let peers = peers.join(",");
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            _tmp: tmp,
        };
        for (id, addr) in nodes {
            cluster.add_node(id, addr, vec!["--peers".into(), peers.clone()]);
        }
        cluster
    }

    /// Sets an environment variable for node `id` and restarts it with it, from its data.
    pub fn restart_with_env(&mut self, id: u64, key: &str, value: &str) {
        self.kill(id);
        self.node_mut(id)
            .env
            .push((key.to_owned(), value.to_owned()));
        self.spawn(id);
    }

    /// Forgets the environment `restart_with_env` set for node `id` (for its next start).
    pub fn clear_env(&mut self, id: u64) {
        self.node_mut(id).env.clear();
    }

    /// Waits (bounded) for node `id` to exit on its own and reaps it; returns its status.
    /// The child stays with the cluster until it has exited, so a timeout's panic still
    /// kills it when the cluster is dropped.
    pub async fn wait_for_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let node = self.node_mut(id);
        let status = wait_until(&format!("node {id} to exit"), within, || {
            let status = node
                .child
                .as_mut()
                .expect("node is running")
                .try_wait()
                .expect("try_wait");
            async move { status }
        })
        .await;
        node.child = None;
        status
    }

    /// Starts a new node `id` that joins through `via`'s URL.
    pub fn start_joining(&mut self, id: u64, via: u64) {
        let url = self.url(via);
        let addr = format!("127.0.0.1:{}", free_port());
        self.add_node(id, addr, vec!["--join".into(), url]);
    }

    fn add_node(&mut self, id: u64, addr: String, entry_args: Vec<String>) {
        let dir = self._tmp.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        self.nodes.push(TestNode {
            id,
            addr,
            dir,
            child: None,
            entry_args,
            env: Vec::new(),
        });
        self.spawn(id);
    }

    fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("known node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("known node id")
    }

    /// (Re)starts node `id` from its data directory.
    pub fn spawn(&mut self, id: u64) {
        let extra = self.extra_args.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("kith.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kith"))
            .args(["serve", "--id", &id.to_string(), "--listen", &node.addr])
            .arg("--data")
            .arg(node.dir.join("data"))
            .args(&node.entry_args)
            .args(&extra)
            .envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("KITH_TEST_LOG").unwrap_or_else(|_| "info,openraft=info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn kith serve");
        node.child = Some(child);
    }

    /// SIGKILLs node `id` (no chance to flush anything) and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        let mut child = node.child.take().expect("node is running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM to node `id` and waits (bounded) for it to exit; returns its status.
    pub async fn terminate(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let pid = self.pid(id);
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
        self.wait_for_exit(id, within).await
    }

    /// The process id of running node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        self.node(id).child.as_ref().expect("node is running").id()
    }

    /// The `--endpoints` value naming every node.
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|n| self.url(n.id)).collect();
        urls.join(",")
    }

    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.node(id).addr)
    }

    /// A client that talks to node `id` only.
    pub fn client(&self, id: u64) -> Client {
        Client::new(&[self.url(id)]).expect("client")
    }

    /// A client over the given nodes, failing over between them.
    pub fn client_over(&self, ids: &[u64]) -> Client {
        let urls: Vec<String> = ids.iter().map(|id| self.url(*id)).collect();
        Client::new(&urls).expect("client")
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

    /// A raw HTTP client for status-code checks.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Lines of each node's log shown when a test fails.
const LOG_TAIL_LINES: usize = 400;

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = std::fs::read_to_string(node.dir.join("kith.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                eprintln!("---- node {} log (last {} lines) ----", node.id, tail.len());
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
