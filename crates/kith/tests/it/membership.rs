//! Joining and removing members.

use std::time::Duration;

use kith_client::Consistency;

use crate::harness::{wait_until, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_node_votes_and_serves_and_removed_nodes_stop_counting() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = cluster.client_over(&[1, 2, 3]);
    client.put("before-join", b"1", None).await.expect("put");

    cluster.start_joining(4, 2);
    wait_until(
        "node 4 to become a voter",
        Duration::from_secs(30),
        || async {
            let status = client.cluster().await.ok()?;
            let members = status["members"].as_array()?;
            members
                .iter()
                .any(|m| m["id"] == 4 && m["voter"] == true)
                .then_some(())
        },
    )
    .await;

    // The new member serves reads: its own state (stale) and linearizable ones.
    cluster
        .wait_for_value(4, "before-join", b"1", Duration::from_secs(10))
        .await;
    client.put("after-join", b"2", None).await.expect("put");
    let got = cluster
        .client(4)
        .get("after-join", Consistency::Linearizable)
        .await
        .expect("linearizable read on node 4")
        .expect("after-join present");
    assert_eq!(got.value, b"2");

    // With voters {1,2,3,4} a quorum is 3. Remove 3 and 4 and stop them: if they still
    // counted, nodes 1 and 2 alone could not commit anything.
    client.remove_member(4).await.expect("remove 4");
    client.remove_member(3).await.expect("remove 3");
    cluster.kill(3);
    cluster.kill(4);
    let survivors = cluster.client_over(&[1, 2]);
    let revision = survivors
        .put("after-remove", b"3", None)
        .await
        .expect("write with only the remaining voters");
    assert!(revision > 0);
    let status = survivors.cluster().await.expect("cluster status");
    let ids: Vec<u64> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1, 2]);
}
