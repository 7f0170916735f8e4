//! Reads served by followers are linearizable, even across a leader change.

use std::time::Duration;

use kith_client::{ClientError, Consistency};

use crate::harness::TestCluster;

/// Writes a counter through one node and reads it right back through another, many times,
/// killing the leader halfway. A read that started after a write was acknowledged must see
/// that write (or a later one), whichever node serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_never_return_a_value_older_than_a_completed_write() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let mut alive: Vec<u64> = vec![1, 2, 3];
    let mut acked: u64 = 0;
    let mut follower_reads = 0;
    for i in 1..=150u64 {
        if i == 60 {
            cluster.kill(leader);
            alive.retain(|id| *id != leader);
        }
        let writer = alive[i as usize % alive.len()];
        let reader = alive[(i as usize + 1) % alive.len()];
        match cluster
            .client_over(&alive)
            .put("register", i.to_string().as_bytes(), None)
            .await
        {
            Ok(_) => acked = i,
            // During the election a write may fail or time out; it is then not counted as
            // acknowledged, but it may still have been applied.
            Err(ClientError::Api { .. } | ClientError::Unavailable(_)) => {}
            Err(e) => panic!("write {i} through node {writer}: {e}"),
        }
        let got = cluster
            .client(reader)
            .get("register", Consistency::Linearizable)
            .await;
        let value: u64 = match got {
            Ok(Some(v)) => String::from_utf8(v.value).unwrap().parse().unwrap(),
            Ok(None) => 0,
            Err(_) => continue, // no quorum yet on that node; nothing to check
        };
        let leader_now = cluster
            .health(reader)
            .await
            .and_then(|h| h["leader_id"].as_u64());
        if leader_now != Some(reader) {
            follower_reads += 1;
        }
        assert!(
            value >= acked,
            "read {value} on node {reader} after write {acked} was acknowledged"
        );
        assert!(value <= i, "read {value} before it was ever written");
    }
    assert!(acked >= 140, "too few writes acknowledged: {acked}");
    assert!(
        follower_reads >= 50,
        "only {follower_reads} reads were served by followers"
    );
}
