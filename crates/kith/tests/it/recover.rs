//! After losing a quorum: `kith recover --force-new-cluster` makes a survivor the one member
//! of a new cluster with every write it had applied, which takes writes again and admits a
//! fresh node.

use std::process::Command;
use std::time::Duration;

use kith_client::Consistency;

use crate::harness::{wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);

fn recover(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("recover")
        .args(args)
        .output()
        .expect("run kith recover")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_quorum_becomes_a_working_cluster_with_its_data() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let client = cluster.client_over(&[1, 2, 3]);
    for i in 0..20 {
        client
            .put(&format!("k{i}"), format!("v{i}").as_bytes(), None)
            .await
            .expect("put");
    }
    // The survivor has applied every acknowledged write before the others die.
    let survivor = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster
        .wait_for_value(survivor, "k19", b"v19", WITHIN)
        .await;
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.kill(id);
    }
    cluster.terminate(survivor, WITHIN).await;
    let data = cluster.nodes()[survivor as usize - 1].dir.join("data");
    let data = data.to_str().expect("a UTF-8 path");

    // Without the flag it only says what it would do.
    let asked = recover(&["--data", data]);
    assert!(!asked.status.success());
    assert!(
        String::from_utf8_lossy(&asked.stderr).contains("--force-new-cluster"),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );

    let done = recover(&["--data", data, "--force-new-cluster"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    cluster.spawn(survivor);
    assert_eq!(cluster.wait_for_leader(&[survivor], WITHIN).await, survivor);
    let alone = cluster.client(survivor);
    for i in 0..20 {
        let got = alone
            .get(&format!("k{i}"), Consistency::Linearizable)
            .await
            .expect("get")
            .expect("an acknowledged write survived");
        assert_eq!(got.value, format!("v{i}").as_bytes());
    }
    alone
        .put("after", b"recovery", None)
        .await
        .expect("a new write");

    // A fresh node joins the new cluster and becomes a voter.
    cluster.start_joining(4, survivor);
    wait_until("node 4 to become a voter", WITHIN, || async {
        let status = alone.cluster().await.ok()?;
        let members = status["members"].as_array()?;
        let voters = members.iter().filter(|m| m["voter"] == true).count();
        (members.len() == 2 && voters == 2).then_some(())
    })
    .await;
    cluster
        .wait_for_value(4, "after", b"recovery", WITHIN)
        .await;
}
