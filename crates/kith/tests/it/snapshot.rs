//! A node that missed compacted log entries catches up by installing a snapshot, one large
//! enough to travel in several pieces.

use std::time::Duration;

use kith_client::Consistency;

use crate::harness::{wait_until, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_from_a_snapshot() {
    let mut cluster =
        TestCluster::start(3, &["--snapshot-threshold", "20", "--snapshot-keep", "0"]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let lagging = if leader == 3 { 2 } else { 3 };
    let up: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != lagging).collect();
    let client = cluster.client_over(&up);
    client.put("early", b"e", None).await.expect("put");
    cluster
        .wait_for_value(lagging, "early", b"e", Duration::from_secs(10))
        .await;
    cluster.kill(lagging);

    // 10 MiB of values: the snapshot is sent in several pieces (4 MiB each).
    let big = vec![b'v'; 256 << 10];
    for i in 0..40u32 {
        client
            .put(&format!("big/{i}"), &big, None)
            .await
            .expect("put a large value while a node is down");
    }
    for i in 0..120u32 {
        client
            .put(&format!("s/{i}"), i.to_string().as_bytes(), None)
            .await
            .expect("put while a node is down");
    }
    // Wait until the leader has compacted away entries the lagging node never received.
    wait_until(
        "the leader to purge its log",
        Duration::from_secs(20),
        || async {
            let h = cluster.health(leader).await?;
            (h["purged_index"].as_u64()? > 50).then_some(())
        },
    )
    .await;

    cluster.spawn(lagging);
    cluster
        .wait_for_value(lagging, "s/119", b"119", Duration::from_secs(30))
        .await;
    // The installed state is readable as soon as it commits; openraft records the
    // snapshot once the install has also kept its copy (`snapshot.bin`).
    wait_until(
        "the caught-up node to report the snapshot",
        Duration::from_secs(10),
        || async {
            let h = cluster.health(lagging).await?;
            (h["snapshot_index"].as_u64()? > 50).then_some(())
        },
    )
    .await;
    let got = cluster
        .client(lagging)
        .get("s/0", Consistency::Stale)
        .await
        .expect("stale read")
        .expect("s/0 came with the snapshot");
    assert_eq!(got.value, b"0");
    for i in [0u32, 39] {
        let got = cluster
            .client(lagging)
            .get(&format!("big/{i}"), Consistency::Stale)
            .await
            .expect("stale read")
            .expect("big values came with the snapshot");
        assert_eq!(got.value, big);
    }
}
