//! TTL keys expire on every replica at the same revision, across a leader change.

use std::time::Duration;

use kith_client::{Consistency, PutOptions, WatchControl};

use crate::harness::{wait_until, TestCluster};

/// The revision at which each of `keys` expired, as node `id`'s own history tells it.
async fn expiry_revisions(cluster: &TestCluster, id: u64, keys: &[&str]) -> Vec<u64> {
    let mut found = vec![0u64; keys.len()];
    let client = cluster.client(id);
    let watching = client.watch("ttl/", Some(1), |e| {
        if e.kind == "delete" && e.data["expired"] == true {
            if let Some(i) = keys.iter().position(|k| *k == e.key) {
                found[i] = e.revision;
            }
        }
        if found.iter().all(|r| *r > 0) {
            WatchControl::Stop
        } else {
            WatchControl::Continue
        }
    });
    tokio::time::timeout(Duration::from_secs(30), watching)
        .await
        .unwrap_or_else(|_| panic!("node {id} did not report every expiry in time"))
        .expect("watch");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_on_every_replica_at_the_same_revision_across_a_leader_change() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = cluster.client_over(&[1, 2, 3]);
    let ttl = |s| PutOptions {
        if_revision: None,
        ttl_s: Some(s),
    };
    client
        .put_with("ttl/short", b"1", ttl(1))
        .await
        .expect("put");
    client
        .put_with("ttl/long", b"2", ttl(3))
        .await
        .expect("put");
    client.put("ttl/forever", b"3", None).await.expect("put");

    // The leader that stamped the keys' times dies; its successor must expire them.
    cluster.kill(leader);
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    cluster
        .wait_for_leader(&survivors, Duration::from_secs(5))
        .await;
    let client = cluster.client_over(&survivors);
    wait_until("ttl/long to expire", Duration::from_secs(20), || async {
        match client.get("ttl/long", Consistency::Linearizable).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(client
        .get("ttl/forever", Consistency::Linearizable)
        .await
        .expect("get")
        .is_some());

    let keys = ["ttl/short", "ttl/long"];
    let reference = expiry_revisions(&cluster, survivors[0], &keys).await;
    assert_eq!(
        expiry_revisions(&cluster, survivors[1], &keys).await,
        reference
    );
    // The old leader, restarted, replays the same history.
    cluster.spawn(leader);
    assert_eq!(expiry_revisions(&cluster, leader, &keys).await, reference);
    assert!(
        reference[0] < reference[1],
        "the shorter TTL expired first: {reference:?}"
    );
}
