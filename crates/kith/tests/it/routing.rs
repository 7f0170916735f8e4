//! Where writes go: every node names the leader in its answer to a write (`kith-leader`),
//! and kith's client sends its next writes there instead of through a follower.

use std::time::Duration;

use crate::harness::{wait_until, TestCluster};

/// `writes_total` of node `id`: the writes its public API received.
async fn writes_received(cluster: &TestCluster, id: u64) -> u64 {
    let h = cluster.health(id).await.expect("health");
    h["writes_total"].as_u64().expect("writes_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_leader_the_cluster_names_and_a_new_one_after_failover() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let third = (1..=3)
        .find(|id| *id != leader && *id != follower)
        .expect("a third node");

    // A follower and the leader both name the leader; a read's answer does not.
    for id in [follower, leader] {
        let answer = cluster
            .http()
            .put(format!("{}/v1/kv/named", cluster.url(id)))
            .body("x")
            .send()
            .await
            .expect("put");
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.headers()["kith-leader"],
            cluster.url(leader).as_str(),
            "the answer of node {id}"
        );
    }
    let read = cluster
        .http()
        .get(format!("{}/v1/kv/named", cluster.url(follower)))
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), 200);
    assert!(read.headers().get("kith-leader").is_none());

    // The client starts at the follower; after the first answer it writes to the leader.
    let client = cluster.client_over(&[follower, third, leader]);
    let before = (
        writes_received(&cluster, follower).await,
        writes_received(&cluster, leader).await,
    );
    for i in 0..20 {
        client.put(&format!("k{i}"), b"v", None).await.expect("put");
    }
    let after = (
        writes_received(&cluster, follower).await,
        writes_received(&cluster, leader).await,
    );
    assert_eq!(
        after.0 - before.0,
        1,
        "only the first write went to the follower"
    );
    assert_eq!(
        after.1 - before.1,
        19,
        "the rest went straight to the leader"
    );

    // The leader dies: the client's writes find the new leader and go there.
    cluster.kill(leader);
    let successor = cluster
        .wait_for_leader(&[follower, third], Duration::from_secs(20))
        .await;
    wait_until(
        "a write after failover",
        Duration::from_secs(20),
        || async { client.put("after", b"v", None).await.ok() },
    )
    .await;
    let before = writes_received(&cluster, successor).await;
    for i in 0..10 {
        client.put(&format!("n{i}"), b"v", None).await.expect("put");
    }
    assert_eq!(writes_received(&cluster, successor).await - before, 10);
}
