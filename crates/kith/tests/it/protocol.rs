//! Peers of another protocol version are refused, by name: a node that claims version 2 (a
//! test build's `KITH_TEST_PROTOCOL_VERSION`) never joins the quorum of version-1 nodes,
//! which keep working, and both sides' link state says which versions met.

use std::time::Duration;

use kith_client::Consistency;
use serde_json::Value;

use crate::harness::{wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);

/// The error node `from` records on its link to `to`, if any.
async fn link_error(cluster: &TestCluster, from: u64, to: u64) -> Option<String> {
    let health: Value = cluster.health(from).await?;
    let to_addr = cluster.nodes()[to as usize - 1].addr();
    health["links"]
        .as_array()?
        .iter()
        .find(|l| l["addr"] == to_addr.as_str())?["error"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_protocol_version_is_refused_and_the_rest_go_on() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    cluster.restart_with_env(3, "KITH_TEST_PROTOCOL_VERSION", "2");
    let leader = cluster.wait_for_leader(&[1, 2], WITHIN).await;

    // The two of version 1 still commit.
    let client = cluster.client_over(&[1, 2]);
    client
        .put("still", b"working", None)
        .await
        .expect("a write");

    // The leader's messages to node 3 are refused, naming both versions.
    let refused = wait_until(
        "the leader's link to node 3 to report the refusal",
        WITHIN,
        || async {
            let error = link_error(&cluster, leader, 3).await?;
            (error.contains("protocol 1") && error.contains("speaks 2")).then_some(error)
        },
    )
    .await;
    assert!(refused.contains("426"), "{refused}");
    // And node 3's own messages (its votes) are refused by the others likewise.
    let other = if leader == 1 { 2 } else { 1 };
    wait_until("node 3's link to report the refusal", WITHIN, || async {
        let error = link_error(&cluster, 3, other).await?;
        (error.contains("protocol 2") && error.contains("speaks 1")).then_some(())
    })
    .await;
    // Node 3 never received the write.
    let on_three = cluster
        .client(3)
        .get("still", Consistency::Stale)
        .await
        .ok()
        .flatten();
    assert!(
        on_three.is_none(),
        "node 3 applied a write from another version"
    );
}
