//! `kith recover --force-new-cluster`: after two of three members are lost for good, the
//! survivor's data becomes a one-member cluster holding every write it had, which a fresh
//! node then joins.

use std::process::Command;
use std::time::Duration;

use kith_client::Consistency;

use crate::harness::{wait_until, TestCluster};

const WRITES: usize = 40;

fn recover(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("recover")
        .args(args)
        .output()
        .expect("run kith recover")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_becomes_a_one_member_cluster_that_others_join() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let survivor = if leader == 3 { 2 } else { 3 };
    let client = cluster.client_over(&[1, 2, 3]);
    for i in 0..WRITES {
        client
            .put(&format!("k{i}"), format!("v{i}").as_bytes(), None)
            .await
            .expect("acknowledged write");
    }
    // What recovery keeps is what the survivor holds; wait until it holds everything.
    let last = WRITES - 1;
    cluster
        .wait_for_value(
            survivor,
            &format!("k{last}"),
            format!("v{last}").as_bytes(),
            Duration::from_secs(20),
        )
        .await;
    let data = cluster.inner().node(survivor).dir.join("data");
    let data = data.to_str().expect("utf-8 path");

    let running = recover(&["--data", data, "--force-new-cluster"]);
    assert!(!running.status.success(), "refused while the node runs");
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(stderr.contains("in use"), "{stderr}");

    for id in [1, 2, 3].into_iter().filter(|id| *id != survivor) {
        cluster.kill(id);
    }
    cluster.terminate(survivor, Duration::from_secs(30)).await;

    let dry = recover(&["--data", data]);
    assert!(!dry.status.success());
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(
        stderr.contains(&format!("would make node {survivor}"))
            && stderr.contains("--force-new-cluster"),
        "{stderr}"
    );

    let done = recover(&["--data", data, "--force-new-cluster"]);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.contains(&format!("recovered node {survivor}")),
        "{stdout}"
    );
    assert!(stdout.contains("membership entry at index"), "{stdout}");
    assert!(stdout.contains("wipe every other old member"), "{stdout}");

    cluster.spawn(survivor);
    let leader = cluster
        .wait_for_leader(&[survivor], Duration::from_secs(30))
        .await;
    assert_eq!(leader, survivor);
    let alone = cluster.client(survivor);
    for i in 0..WRITES {
        let got = alone
            .get(&format!("k{i}"), Consistency::Linearizable)
            .await
            .expect("linearizable read")
            .unwrap_or_else(|| panic!("acknowledged k{i} kept"));
        assert_eq!(got.value, format!("v{i}").as_bytes());
    }
    alone
        .put("after", b"1", None)
        .await
        .expect("a new write commits");

    cluster.start_joining(4, survivor);
    let voters = wait_until(
        "node 4 to become a voter",
        Duration::from_secs(60),
        || async {
            let status = alone.cluster().await.ok()?;
            let voters: Vec<u64> = status["members"]
                .as_array()?
                .iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect();
            voters.contains(&4).then_some(voters)
        },
    )
    .await;
    let mut expected = vec![survivor, 4];
    expected.sort_unstable();
    assert_eq!(
        voters, expected,
        "two voters: the survivor and the new node"
    );
    cluster
        .wait_for_value(4, "after", b"1", Duration::from_secs(20))
        .await;
}
