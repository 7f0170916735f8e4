//! The job queue with real workers: every job done, none lost or completed twice, through
//! worker and leader crashes; fencing, delays, priorities, dead letters, idempotency.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kith_client::{Client, ClientError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::harness::{wait_until, TestCluster};

/// A `kith worker` process; killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(endpoints: &str, queue: &str, lease_s: u64, script: &str) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["worker", "--queue", queue, "--concurrency", "4"])
        .args(["--lease", &lease_s.to_string(), "--grace", "2"])
        .args(["--endpoints", endpoints, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kith worker");
    Worker(child)
}

/// A queue's counts, or `Null` while no node can answer (e.g. during an election).
async fn queue(client: &Client, name: &str) -> Value {
    let Ok(queues) = client.queues().await else {
        return Value::Null;
    };
    queues["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == name).cloned())
        .unwrap_or(json!({}))
}

async fn enqueue_all(client: Arc<Client>, queue: &str, n: u64) -> Vec<u64> {
    let mut tasks = Vec::new();
    for chunk in 0..8u64 {
        let (client, queue) = (client.clone(), queue.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (chunk..n).step_by(8) {
                let job = json!({"payload": {"n": i}, "idempotency_key": format!("{queue}-{i}")});
                let id = wait_until(
                    &format!("job {i} to be enqueued"),
                    Duration::from_secs(30),
                    || {
                        let (client, job, queue) = (client.clone(), job.clone(), queue.clone());
                        async move { client.enqueue(&queue, &job).await.ok() }
                    },
                )
                .await;
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("enqueue task"));
    }
    ids.sort_unstable();
    ids
}

fn ran(file: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_through_three_workers_survive_a_worker_and_a_leader_crash() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = Arc::new(cluster.client_over(&[1, 2, 3]));
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let log = tmp.path().join("ran.txt");
    let script = format!("echo $KITH_JOB_ID >> {}", log.display());
    let ids = enqueue_all(client.clone(), "bulk", 1000).await;
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 1000);

    // One worker per node, each talking to every node (so they survive the leader's death).
    let endpoints = cluster.endpoints();
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| worker(&endpoints, "bulk", 3, &script))
        .collect();
    wait_until("work to start", Duration::from_secs(30), || async {
        (ran(&log).len() >= 100).then_some(())
    })
    .await;
    // A worker dies mid-job: whatever it held comes back after its lease.
    let victim = workers.remove(0);
    kill(Pid::from_raw(victim.0.id() as i32), Signal::SIGKILL).expect("SIGKILL worker");
    drop(victim);
    wait_until("more work", Duration::from_secs(30), || async {
        (ran(&log).len() >= 400).then_some(())
    })
    .await;
    // The leader dies while the others work.
    cluster.kill(leader);
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let observer = cluster.client_over(&survivors);
    wait_until(
        "every job to complete",
        Duration::from_secs(240),
        || async {
            let q = queue(&observer, "bulk").await;
            (q["completed_total"] == 1000).then_some(())
        },
    )
    .await;
    let q = queue(&observer, "bulk").await;
    assert_eq!(
        (
            q["ready"].as_u64(),
            q["leased"].as_u64(),
            q["dead"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{q}"
    );
    // Completed exactly once each (the count above counts completions), and every job's
    // command ran at least once (more is allowed: at-least-once delivery).
    let ran: BTreeSet<u64> = ran(&log).into_iter().collect();
    assert_eq!(ran, ids.iter().copied().collect::<BTreeSet<_>>());
    for id in [ids[0], ids[500], ids[999]] {
        let job = observer.job(id).await.expect("job");
        assert_eq!(job["state"], "completed", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_delays_priorities_dead_letters_and_idempotency() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let client = cluster.client(1);

    // Idempotent enqueue: the same key twice is one job.
    let a = client
        .enqueue("q", &json!({"payload": 1, "idempotency_key": "once"}))
        .await
        .unwrap();
    let b = client
        .enqueue("q", &json!({"payload": 1, "idempotency_key": "once"}))
        .await
        .unwrap();
    assert_eq!(a, b);

    // Priorities: the highest first, FIFO within one.
    let low = client
        .enqueue("p", &json!({"payload": "low", "priority": 1}))
        .await
        .unwrap();
    let high = client
        .enqueue("p", &json!({"payload": "high", "priority": 9}))
        .await
        .unwrap();
    let mid1 = client
        .enqueue("p", &json!({"payload": "mid1"}))
        .await
        .unwrap();
    let mid2 = client
        .enqueue("p", &json!({"payload": "mid2"}))
        .await
        .unwrap();
    let mut order = Vec::new();
    while let Some(job) = client.claim("p", 30, 0, "t").await.unwrap() {
        order.push(job.id);
    }
    assert_eq!(order, vec![high, mid1, mid2, low]);

    // Delayed jobs do not start early.
    let delayed = client
        .enqueue("d", &json!({"payload": 0, "delay_s": 2}))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        client.claim("d", 30, 1, "t").await.unwrap().is_none(),
        "claimed before its delay"
    );
    let job = client
        .claim("d", 30, 5, "t")
        .await
        .unwrap()
        .expect("claimed after its delay");
    assert_eq!(job.id, delayed);
    assert!(started.elapsed() >= Duration::from_millis(1900));

    // Fencing: once a lease expires, the old attempt's report is refused with 409.
    let f = client.enqueue("f", &json!({"payload": 0})).await.unwrap();
    let first = client.claim("f", 1, 0, "t").await.unwrap().expect("claim");
    let second = wait_until(
        "the job to be claimable again",
        Duration::from_secs(15),
        || async { client.claim("f", 30, 1, "t").await.ok().flatten() },
    )
    .await;
    assert_eq!((second.id, second.attempt), (f, 2));
    let late = client.report(f, "complete", first.attempt, json!({})).await;
    assert!(
        matches!(late, Err(ClientError::Api { status: 409, .. })),
        "{late:?}"
    );
    client
        .report(f, "complete", second.attempt, json!({"result": "ok"}))
        .await
        .unwrap();
    let again = client
        .report(f, "complete", second.attempt, json!({}))
        .await;
    assert!(
        matches!(again, Err(ClientError::Api { status: 409, .. })),
        "completes once"
    );

    // A job that always fails lands in dead letters with its last error; retry revives it.
    let bad = client
        .enqueue("x", &json!({"payload": 0, "max_attempts": 2}))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let job = wait_until("the failing job", Duration::from_secs(15), || async {
            client.claim("x", 30, 1, "t").await.ok().flatten()
        })
        .await;
        assert_eq!((job.id, job.attempt), (bad, attempt));
        client
            .report(
                bad,
                "fail",
                attempt,
                json!({"error": format!("boom {attempt}")}),
            )
            .await
            .unwrap();
    }
    let dead = client.dead_letters("x").await.unwrap();
    assert_eq!(dead["jobs"][0]["id"], bad);
    assert_eq!(dead["jobs"][0]["last_error"], "attempt 2: boom 2");
    client.retry_job(bad).await.unwrap();
    let revived = client
        .claim("x", 30, 0, "t")
        .await
        .unwrap()
        .expect("ready again");
    assert_eq!((revived.id, revived.attempt), (bad, 1));

    // Bad input changes nothing.
    let http = cluster.http();
    for (path, body) in [
        ("/v1/queues/bad%20q/jobs", json!({"payload": 1})),
        ("/v1/queues/q/jobs", json!({"payload": 1, "priority": 10})),
        (
            "/v1/queues/q/jobs",
            json!({"payload": 1, "max_attempts": 0}),
        ),
        (
            "/v1/queues/q/jobs",
            json!({"payload": 1, "delay_s": 1, "run_at": 5}),
        ),
        (
            "/v1/queues/q/jobs",
            json!({"payload": "x".repeat(300 * 1024)}),
        ),
        ("/v1/queues/q/jobs", json!({"nope": 1})),
        ("/v1/jobs/abc/complete", json!({"attempt": 1})),
        ("/v1/jobs/999999/complete", json!({"attempt": 1})),
    ] {
        let r = http
            .post(format!("{}{path}", cluster.url(1)))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    for path in [
        "/v1/queues/q/claim?lease=0",
        "/v1/queues/q/claim?wait=999",
        "/v1/queues/q/claim?lease=-1",
    ] {
        let r = http
            .post(format!("{}{path}", cluster.url(1)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    let q = queue(&client, "q").await;
    assert_eq!(
        q["enqueued_total"], 1,
        "refused requests enqueued nothing: {q}"
    );
}
