//! The probes a load balancer or Kubernetes uses: `/livez` answers while the process serves;
//! `/readyz` answers 200 only while the node knows a leader a quorum follows (and has applied what it saw
//! committed, and is within its quota: the quota case is in quota.rs), and says which
//! check failed otherwise. And what an operator reads: `--log-format json` logs, and
//! `kith cluster status` with each node's version, quota use and alarm.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);

/// `/readyz` of node `id`: its status and error code (`None` when it answered 200).
async fn readyz(cluster: &TestCluster, id: u64) -> Option<(StatusCode, Option<String>)> {
    let answer = cluster
        .http()
        .get(format!("{}/readyz", cluster.url(id)))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = answer.status();
    let body: Value = answer.json().await.ok()?;
    let code = body["error"]["code"].as_str().map(str::to_owned);
    Some((status, code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_with_a_leader_and_503_no_leader_without_quorum() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    for id in 1..=3 {
        wait_until(&format!("node {id} ready"), WITHIN, || async {
            (readyz(&cluster, id).await? == (StatusCode::OK, None)).then_some(())
        })
        .await;
        let live = cluster
            .http()
            .get(format!("{}/livez", cluster.url(id)))
            .send()
            .await
            .expect("livez answers");
        assert_eq!(live.status(), StatusCode::OK);
    }

    // Both followers frozen: the leader still calls itself leader, but no quorum answers it,
    // so it is not ready either; once they wake, it is.
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        cluster.pause(*id);
    }
    wait_until("the cut-off leader to say no_leader", WITHIN, || async {
        let (status, code) = readyz(&cluster, leader).await?;
        (status == StatusCode::SERVICE_UNAVAILABLE && code.as_deref() == Some("no_leader"))
            .then_some(())
    })
    .await;
    for id in &followers {
        cluster.resume(*id);
    }
    for id in 1..=3 {
        wait_until(
            &format!("node {id} ready after the pause"),
            WITHIN,
            || async { (readyz(&cluster, id).await? == (StatusCode::OK, None)).then_some(()) },
        )
        .await;
    }

    // Two of three gone: the survivor loses its leader and cannot elect one.
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let survivor = (1..=3).find(|id| *id != leader).expect("a follower");
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.kill(id);
    }
    wait_until("the survivor to say no_leader", WITHIN, || async {
        let (status, code) = readyz(&cluster, survivor).await?;
        (status == StatusCode::SERVICE_UNAVAILABLE && code.as_deref() == Some("no_leader"))
            .then_some(())
    })
    .await;
    // It still lives: only readiness failed.
    let live = cluster
        .http()
        .get(format!("{}/livez", cluster.url(survivor)))
        .send()
        .await
        .expect("livez answers");
    assert_eq!(live.status(), StatusCode::OK);

    // Quorum back: ready again, everywhere.
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        wait_until(&format!("node {id} ready again"), WITHIN, || async {
            (readyz(&cluster, id).await? == (StatusCode::OK, None)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    let cluster = TestCluster::start(1, &["--log-format", "json"]);
    cluster.wait_for_leader(&[1], WITHIN).await;
    let log = cluster.nodes()[0].dir.join("kith.log");
    // "node started" is logged once the node serves; every line before and after it is JSON.
    let lines = wait_until("the node's first log lines", WITHIN, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("node started").then_some(text)
    })
    .await;
    let mut count = 0;
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
        count += 1;
    }
    assert!(count > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_each_nodes_version_quota_and_alarm() {
    let cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let status = |output: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
            .args(["cluster", "status", "-o", output, "--endpoints"])
            .arg(cluster.endpoints())
            .env_remove("KITH_PROFILE")
            .output()
            .expect("run kith cluster status")
    };
    // Every node reachable, each with its version and quota (wait: a node may still be
    // starting to answer its peers).
    let json: Value = wait_until("every member's report", WITHIN, || async {
        let out = status("json");
        let json: Value = serde_json::from_slice(&out.stdout).ok()?;
        let members = json["members"].as_array()?;
        (members.len() == 3 && members.iter().all(|m| m["reachable"] == true)).then_some(json)
    })
    .await;
    for m in json["members"].as_array().unwrap() {
        assert_eq!(m["version"], env!("CARGO_PKG_VERSION"), "{m}");
        assert!(m["quota"]["quota_bytes"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["quota"]["exceeded"], false, "{m}");
    }
    let table = String::from_utf8(status("table").stdout).expect("UTF-8");
    assert!(
        table.contains("VERSION") && table.contains("QUOTA"),
        "{table}"
    );
    assert!(table.contains(env!("CARGO_PKG_VERSION")), "{table}");
}
