//! `kith ledger verify` proves that replicas agree, and names the one that does not.

use std::process::Command;
use std::time::Duration;

use crate::harness::{wait_until, TestCluster};

/// Log index whose bytes node 3 alters as it applies it (via the test-only hook).
const CORRUPT_INDEX: u64 = 12;

fn verify(cluster: &TestCluster) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["ledger", "verify", "--endpoints", &cluster.endpoints()])
        .output()
        .expect("run kith ledger verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_healthy_cluster_and_names_a_corrupted_replica() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    cluster.restart_with_env(
        3,
        "KITH_TEST_CORRUPT_LEDGER_INDEX",
        &CORRUPT_INDEX.to_string(),
    );
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = cluster.client_over(&[1, 2, 3]);
    client.put("a", b"1", None).await.expect("put");

    // Below the corrupted index every replica agrees.
    let ok = verify(&cluster);
    assert!(
        ok.status.success(),
        "verify should pass: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("same history"));

    for i in 0..20 {
        client.put(&format!("k{i}"), b"v", None).await.expect("put");
    }
    wait_until(
        "node 3 to apply past the corrupted index",
        Duration::from_secs(10),
        || async {
            let h = cluster.health(3).await?;
            (h["ledger_index"].as_u64()? > CORRUPT_INDEX).then_some(())
        },
    )
    .await;
    let bad = verify(&cluster);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success(),
        "verify must fail when a replica diverges"
    );
    assert!(
        stderr.contains(&format!(
            "node 3 diverges from the majority at index {CORRUPT_INDEX}"
        )),
        "verify should name node 3 and index {CORRUPT_INDEX}: {stderr}"
    );
    // The data itself is intact on every node: only the proof of history differs.
    let healthy = cluster.health(1).await.expect("health");
    let corrupted = cluster.health(3).await.expect("health");
    assert_ne!(healthy["ledger_hash"], corrupted["ledger_hash"]);
}
