//! `kith bench` works end to end against a real cluster: a few hundred puts, then gets of
//! the keys they wrote, each reported in the JSON with the right count and no errors.
//! Likewise `kith bench jobs`: every job enqueued, claimed and completed, with the `put`
//! baseline beside it. And against a cluster with TLS, over HTTP/1.1 and HTTP/2 (ALPN),
//! trusting the cluster CA and presenting a token (files included). No figure is asserted: this is a smoke test, not a timed one.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::TestCluster;

/// Runs `kith bench WORKLOAD --total 300 …` as a process and returns its JSON report.
fn bench(cluster: &TestCluster, workload: &str, extra: &[&str], json: &std::path::Path) -> Value {
    let mut args = vec![workload, "--total", "300", "--warmup", "20"];
    args.extend(["--clients", "8", "--conns", "4", "--key-space", "50"]);
    args.extend(["--sequential-keys"]);
    args.extend(extra);
    run_bench(cluster, &args, json)
}

/// Runs `kith bench ARGS… --quiet --proc-name kith` against `cluster`; returns the JSON.
fn run_bench(cluster: &TestCluster, args: &[&str], json: &std::path::Path) -> Value {
    let workload = args[0];
    let out = Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("bench")
        .args(args)
        .args(["--quiet", "--proc-name", "kith"])
        .args(["--endpoints", &cluster.endpoints()])
        .arg("--json")
        .arg(json)
        .output()
        .expect("run kith bench");
    assert!(
        out.status.success(),
        "kith bench {workload} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let report = std::fs::read(json).expect("the --json report");
    serde_json::from_slice(&report).expect("the report is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_put_and_get_report_every_operation_and_no_error() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let dir = tempfile::TempDir::new().expect("temp dir");

    let put = bench(&cluster, "put", &[], &dir.path().join("put.json"));
    assert_eq!(put["ops"], 300, "{put:#}");
    assert_eq!(put["errors"], 0, "{put:#}");
    assert_eq!(put["config"]["workload"], "put");
    assert!(put["latency"]["p99_us"].as_u64().expect("p99") > 0);
    // The three nodes were found by name and port, and their CPU time was read.
    assert_eq!(
        put["processes"].as_array().expect("processes").len(),
        3,
        "{put:#}"
    );

    // Sequential keys over a 50-key space: the puts wrote every key, so no get misses.
    let get = bench(&cluster, "get", &[], &dir.path().join("get.json"));
    assert_eq!(get["ops"], 300, "{get:#}");
    assert_eq!(get["errors"], 0, "{get:#}");
    assert_eq!(get["not_found"], 0, "{get:#}");

    let stale = bench(
        &cluster,
        "get",
        &["--consistency", "stale"],
        &dir.path().join("stale.json"),
    );
    assert_eq!(stale["ops"], 300, "{stale:#}");
    assert_eq!(stale["errors"], 0, "{stale:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_jobs_completes_every_job_and_reports_the_put_baseline() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let dir = tempfile::TempDir::new().expect("temp dir");

    let args = [
        "jobs",
        "--total",
        "100",
        "--producers",
        "2",
        "--workers",
        "4",
    ];
    let jobs = run_bench(&cluster, &args, &dir.path().join("jobs.json"));
    assert_eq!(jobs["config"]["workload"], "jobs");
    assert_eq!(jobs["ops"], 100, "{jobs:#}");
    assert_eq!(jobs["errors"], 0, "{jobs:#}");
    let j = &jobs["jobs"];
    assert_eq!(j["enqueued"], 100, "{jobs:#}");
    assert_eq!(j["completed"], 100, "{jobs:#}");
    assert!(j["enqueue_to_claim"]["p99_us"].as_u64().expect("p99") > 0);
    assert!(j["jobs_per_s"].as_f64().expect("jobs/s") > 0.0);
    // The put baseline ran first with as many clients: 3 puts per job, none failed.
    assert_eq!(j["put"]["clients"], 6, "{jobs:#}");
    assert_eq!(j["put"]["ops"], 300, "{jobs:#}");
    assert_eq!(j["put"]["errors"], 0, "{jobs:#}");
    assert!(j["ratio_to_put_per_3"].as_f64().expect("ratio") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reaches_a_cluster_with_tls_over_http1_and_http2() {
    let cluster = TestCluster::start_secure(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    assert!(cluster.endpoints().starts_with("https://"));
    let dir = tempfile::TempDir::new().expect("temp dir");
    let certs = cluster.inner().certs_dir().expect("certificates");
    let ca = certs.join("ca.crt");
    let ca = ca.to_str().expect("a UTF-8 path");

    // Without the CA, https endpoints are refused before any connection.
    let refused = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["bench", "put", "--total", "10", "--quiet"])
        .args(["--endpoints", &cluster.endpoints()])
        .env_remove("KITH_CA")
        .output()
        .expect("run kith bench");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--ca"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A cluster with TLS asks every request for a token.
    let token = cluster
        .inner()
        .client_token()
        .expect("admin token")
        .to_owned();

    for http in ["1", "2"] {
        let put = bench(
            &cluster,
            "put",
            &["--http", http, "--ca", ca, "--token", &token],
            &dir.path().join(format!("put-{http}.json")),
        );
        assert_eq!(put["ops"], 300, "{put:#}");
        assert_eq!(put["errors"], 0, "{put:#}");
        let get = bench(
            &cluster,
            "get",
            &["--http", http, "--ca", ca, "--token", &token],
            &dir.path().join(format!("get-{http}.json")),
        );
        assert_eq!(get["ops"], 300, "{get:#}");
        assert_eq!(get["errors"], 0, "{get:#}");
        assert_eq!(get["not_found"], 0, "{get:#}");
    }

    // The files workload presents the token too: its upload, download and delete pass.
    let files = run_bench(
        &cluster,
        &["files", "--bytes", "2000000", "--ca", ca, "--token", &token],
        &dir.path().join("files.json"),
    );
    assert_eq!(files["bytes"], 2_000_000, "{files:#}");
    assert!(files["download_mb_s"].as_f64().expect("download") > 0.0);
}
