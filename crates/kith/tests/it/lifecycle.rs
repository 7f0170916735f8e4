//! Process lifecycle: `kith serve` stops cleanly on SIGTERM, and exits when its Raft core
//! stops on a fatal error; `kith dev` leaves no child behind, whether it is asked to stop or
//! killed outright.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{children_of, free_port_run, wait_until, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_cleanly_on_sigterm_and_restarts_with_its_data() {
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let revision = cluster.client(1).put("k", b"v", None).await.expect("put");
    let status = cluster.terminate(1, Duration::from_secs(15)).await;
    assert!(status.success(), "kith serve exited with {status}");
    cluster.spawn(1);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let got = cluster
        .client(1)
        .get("k", kith_client::Consistency::Linearizable)
        .await
        .expect("get")
        .expect("k survives a clean restart");
    assert_eq!(got.revision, revision);
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A running `kith dev`. Dropping it (as a failing test does) SIGKILLs the supervisor, whose
/// nodes then exit by themselves, so no process outlives the test.
struct Dev {
    child: Child,
    base_port: u16,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for Dev {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Dev {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// Starts `kith dev` and returns it once it has printed that the cluster is up.
fn start_dev(data: &std::path::Path) -> (Dev, Vec<u32>) {
    let (dev, children, _) = start_dev_with(data, &[]);
    (dev, children)
}

/// `start_dev` with more arguments; also returns what it printed.
fn start_dev_with(data: &std::path::Path, extra: &[&str]) -> (Dev, Vec<u32>, String) {
    let base = free_port_run(3);
    let child = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["dev", "--nodes", "3", "--base-port", &base.to_string()])
        .args(extra)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kith dev");
    let mut dev = Dev {
        child,
        base_port: base,
    };
    let stdout = dev.stdout.take().expect("stdout");
    // Reading blocks; `kith dev` bounds its own startup (30 s) and exits on failure, which
    // ends this loop too.
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read dev output");
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C stops the cluster") {
            break;
        }
    }
    assert!(
        printed.contains("(leader)"),
        "kith dev did not report a leader:\n{printed}"
    );
    let children = children_of(dev.id());
    assert_eq!(
        children.len(),
        3,
        "kith dev should run three nodes: {children:?}"
    );
    (dev, children, printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_secure_runs_the_cluster_with_tls_and_says_how_to_reach_it() {
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (mut dev, _, printed) = start_dev_with(tmp.path(), &["--secure"]);
    let ca = tmp.path().join("certs/ca.crt");
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("https://127.0.0.1:{}", dev.base_port + i))
        .collect();
    let endpoints = endpoints.join(",");
    assert!(
        printed.contains(&format!("KITH_ENDPOINTS={endpoints}"))
            && printed.contains(&format!("KITH_CA={}", ca.display())),
        "kith dev --secure must print how to reach it:\n{printed}"
    );
    let token = std::fs::read_to_string(tmp.path().join("certs/admin.token")).expect("token");
    let token = token.trim();
    assert!(
        printed.contains(&format!("/login#token={token}")),
        "kith dev --secure must print a one-click login link:\n{printed}"
    );
    let kith = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kith"))
            .args(args)
            .env("KITH_ENDPOINTS", &endpoints)
            .env("KITH_CA", &ca)
            .env("KITH_TOKEN", token)
            .output()
            .expect("run kith")
    };
    let refused = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["kv", "get", "secure"])
        .env("KITH_ENDPOINTS", &endpoints)
        .env("KITH_CA", &ca)
        .env_remove("KITH_TOKEN")
        .output()
        .expect("run kith");
    assert!(
        !refused.status.success(),
        "a request without a token must fail"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let put = kith(&["kv", "put", "secure", "yes"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = kith(&["kv", "get", "secure"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "yes");

    // The playground still works: the supervisor presents the node's own certificate to
    // its `/internal/dev/isolate`, which answers nobody without one.
    let tls = kith_client::tls::TlsOptions::trusting(&ca).expect("CA");
    kith_client::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls.client_config(&[b"http/1.1"]).expect("TLS"))
        .build()
        .expect("http");
    let node2 = format!("https://127.0.0.1:{}", dev.base_port + 1);
    for action in ["isolate", "heal"] {
        let r = http
            .post(format!("{node2}/v1/dev/nodes/2/{action}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("node 2 answers");
        assert!(r.status().is_success(), "{action}: {}", r.status());
    }
    let forged = http
        .post(format!("{node2}/internal/dev/isolate"))
        .json(&serde_json::json!({"isolated": true}))
        .send()
        .await
        .expect("node 2 answers");
    assert_eq!(forged.status(), 403);

    kill(Pid::from_raw(dev.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait_until("kith dev to exit", Duration::from_secs(20), || {
        let s = dev.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    assert!(status.success(), "kith dev exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stops_every_node_on_sigterm() {
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (mut dev, children) = start_dev(tmp.path());
    kill(Pid::from_raw(dev.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let status = wait_until("kith dev to exit", Duration::from_secs(20), || {
        let s = dev.try_wait().expect("try_wait");
        async move { s }
    })
    .await;
    assert!(status.success(), "kith dev exited with {status}");
    for pid in children {
        assert!(!alive(pid), "node process {pid} outlived kith dev");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_nodes_exit_when_the_supervisor_is_killed() {
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (mut dev, children) = start_dev(tmp.path());
    kill(Pid::from_raw(dev.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    dev.wait().expect("reap kith dev");
    for pid in children {
        wait_until(
            &format!("orphaned node {pid} to exit"),
            Duration::from_secs(20),
            || async move { (!alive(pid)).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_breaks_dev_nodes_and_is_refused_elsewhere() {
    // Nodes not started by `kith dev` refuse the playground.
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let http = cluster.http();
    for (path, body) in [
        ("/v1/dev/nodes/1/kill", None),
        (
            "/v1/dev/workers",
            Some(serde_json::json!({"count": 1, "queue": "q"})),
        ),
        (
            "/internal/dev/isolate",
            Some(serde_json::json!({"isolated": true})),
        ),
    ] {
        let mut request = http.post(format!("{}{path}", cluster.url(1)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 403, "{path}");
    }
    assert!(cluster.health(1).await.is_some(), "the node is untouched");

    // Under `kith dev` the same routes pause, resume, cut off and heal real nodes.
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (mut dev, _children) = start_dev(tmp.path());
    let base = dev.base_port;
    let url = |n: u16| format!("http://127.0.0.1:{}", base + n - 1);
    let act = |n: u16, action: &str| {
        let (http, u) = (http.clone(), url(1));
        let action = action.to_owned();
        async move {
            http.post(format!("{u}/v1/dev/nodes/{n}/{action}"))
                .send()
                .await
                .expect("playground request")
                .status()
        }
    };
    let answers = |n: u16| {
        let (http, u) = (http.clone(), url(n));
        async move {
            http.get(format!("{u}/v1/health"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok()
        }
    };
    assert_eq!(act(3, "pause").await, 200);
    assert!(!answers(3).await, "a paused node does not answer");
    assert_eq!(act(3, "resume").await, 200);
    wait_until(
        "node 3 to answer again",
        Duration::from_secs(10),
        || async { answers(3).await.then_some(()) },
    )
    .await;
    assert_eq!(act(2, "isolate").await, 200);
    let dev_state: serde_json::Value = http
        .get(format!("{}/v1/dev", url(2)))
        .send()
        .await
        .expect("dev status")
        .json()
        .await
        .expect("json");
    assert_eq!(dev_state["isolated"], true);
    assert_eq!(act(2, "heal").await, 200);
    assert_eq!(act(9, "kill").await, 404);

    kill(Pid::from_raw(dev.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    dev.wait().expect("reap kith dev");
}

/// A node whose Raft core stops on a fatal error (here a failing apply, as a broken disk
/// would cause) exits non-zero instead of answering errors forever, and a restart from its
/// data brings it back with everything the cluster wrote meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_core_stops_exits_and_recovers_when_restarted() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    let applied = cluster.health(victim).await.expect("health")["applied_index"]
        .as_u64()
        .expect("applied_index");
    cluster.restart_with_env(
        victim,
        "KITH_TEST_FAIL_APPLY_INDEX",
        &(applied + 5).to_string(),
    );
    let client = cluster.client_over(&others);
    for i in 0..20 {
        client.put(&format!("k{i}"), b"v", None).await.expect("put");
    }
    let status = cluster.wait_for_exit(victim, Duration::from_secs(20)).await;
    assert!(
        !status.success(),
        "a stopped core is an error exit: {status}"
    );

    cluster.clear_env(victim);
    cluster.spawn(victim);
    cluster
        .wait_for_value(victim, "k19", b"v", Duration::from_secs(20))
        .await;
}

/// Runs `kith serve` with `args` (each case refuses before it binds anything) and returns
/// its exit status and standard error.
fn serve_refusal(args: &[&str]) -> (std::process::ExitStatus, String) {
    let data = tempfile::TempDir::new().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["serve", "--id", "1", "--data"])
        .arg(data.path().join("data"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run kith serve");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Without TLS a node listens only on loopback: another address, or one peers cannot be told,
/// is refused before anything is bound, with a message naming the way out.
#[test]
fn serve_refuses_to_listen_off_loopback_without_insecure() {
    let cases: [(&[&str], &str); 4] = [
        (&["--listen", "0.0.0.0:7001"], "--insecure"),
        (
            &["--listen", "127.0.0.1:7001", "--advertise", "10.0.0.1:7001"],
            "--insecure",
        ),
        (&["--listen", "0.0.0.0:7001", "--insecure"], "--advertise"),
        (
            &["--listen", "127.0.0.1:7001", "--peers", "1=127.0.0.2:7001"],
            "--advertise",
        ),
    ];
    for (args, names) in cases {
        let (status, stderr) = serve_refusal(args);
        assert!(!status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(names),
            "{args:?}: the refusal does not name {names}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_workers_are_real_processes_that_work_and_die_with_the_supervisor() {
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (mut dev, nodes) = start_dev(tmp.path());
    let url = format!("http://127.0.0.1:{}", dev.base_port);
    kith_client::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    let workers = |count: u64| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http
                .post(format!("{url}/v1/dev/workers"))
                .json(&serde_json::json!({"count": count, "queue": "dev-lifecycle"}))
                .send()
                .await
                .expect("node 1 answers");
            assert!(answer.status().is_success(), "{}", answer.status());
            answer.json::<serde_json::Value>().await.expect("json")
        }
    };
    let extra = |dev_pid: u32| {
        let nodes = nodes.clone();
        move || -> Vec<u32> {
            children_of(dev_pid)
                .into_iter()
                .filter(|p| !nodes.contains(p))
                .collect()
        }
    };
    let workers_now = extra(dev.id());

    let started = workers(2).await;
    assert_eq!(
        started["workers"],
        serde_json::json!(["worker-1", "worker-2"])
    );
    assert_eq!(workers_now().len(), 2, "two worker processes");
    // They work: a job put on their queue is done, and its result names its worker.
    // Through the client, as a user would: it retries while the cluster elects a leader (a
    // loaded machine can starve a node long enough for one), which the key makes safe.
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", dev.base_port + i))
        .collect();
    let client = kith_client::Client::new(&endpoints).expect("client");
    let id = client
        .enqueue(
            "dev-lifecycle",
            &serde_json::json!({"payload": {"n": 1}, "idempotency_key": "lifecycle-1"}),
        )
        .await
        .expect("enqueue");
    let done = wait_until(
        "a dev worker to finish the job",
        Duration::from_secs(30),
        || {
            let client = &client;
            async move {
                let job = client.job(id).await.ok()?;
                (job["state"] == "completed").then_some(job)
            }
        },
    )
    .await;
    let by = done["result"]["worker"]
        .as_str()
        .expect("the worker's name");
    assert!(["worker-1", "worker-2"].contains(&by), "{done}");

    // A new request replaces them; count 0 stops them all.
    workers(3).await;
    assert_eq!(workers_now().len(), 3, "three worker processes");
    workers(0).await;
    assert_eq!(workers_now().len(), 0, "every worker stopped");

    // Killed outright, kith dev takes its workers with it.
    workers(2).await;
    let pids = workers_now();
    assert_eq!(pids.len(), 2);
    kill(Pid::from_raw(dev.id() as i32), Signal::SIGKILL).expect("SIGKILL");
    dev.wait().expect("reap kith dev");
    for pid in pids.into_iter().chain(nodes) {
        wait_until(
            &format!("orphaned process {pid} to exit"),
            Duration::from_secs(20),
            || async move { (!alive(pid)).then_some(()) },
        )
        .await;
    }
}
