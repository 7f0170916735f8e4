//! The leader replicates an entry while its own disk still writes it (the log's overlapped
//! fsync), yet nothing commits before the leader's log holds it durably.

use std::time::Duration;

use serde_json::Value;

use crate::harness::TestCluster;

/// Whether a `/v1/health` report keeps the commit index within what the log holds durably.
fn commit_within_durable(h: &Value) -> Result<(), String> {
    let commit = h["commit_index"].as_u64().ok_or("no commit_index")?;
    let durable = h["durable_index"].as_u64().ok_or("no durable_index")?;
    if commit <= durable {
        Ok(())
    } else {
        Err(format!(
            "commit index {commit} past durable index {durable}"
        ))
    }
}

/// Every node's log writes that hold its own appends as the leader are held back 300 ms (a
/// test hook; followers write at full speed, so a follower's acknowledgement comes back long
/// before the leader's fsync). Writes still succeed, and the leader never reports a commit
/// index past its durable index: not right after an acknowledged write, and not in any
/// report sampled while writes are in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_commits_before_the_leaders_own_log_holds_it() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    for id in 1..=3 {
        cluster.restart_with_env(id, "KITH_TEST_LEADER_SYNC_DELAY_MS", "300");
        cluster
            .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
            .await;
    }
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn({
        let http = cluster.http().clone();
        let url = format!("{}/v1/health", cluster.url(leader));
        async move {
            let mut samples = 0u32;
            while !*stopped.borrow_and_update() {
                let report = tokio::select! {
                    _ = stopped.changed() => break,
                    r = http.get(&url).timeout(Duration::from_secs(1)).send() => r,
                };
                let Ok(report) = report else { continue };
                let Ok(h) = report.json::<Value>().await else {
                    continue;
                };
                commit_within_durable(&h).unwrap_or_else(|e| panic!("sampled on the leader: {e}"));
                samples += 1;
            }
            samples
        }
    });

    let client = cluster.client(leader);
    for i in 1..=10u64 {
        client
            .put("slow-leader-disk", i.to_string().as_bytes(), None)
            .await
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        let h = cluster.health(leader).await.expect("leader's health");
        assert!(h["commit_index"].as_u64() > Some(0), "after write {i}: {h}");
        commit_within_durable(&h).unwrap_or_else(|e| panic!("right after write {i}: {e}"));
    }
    stop.send(true).expect("sampler running");
    let samples = sampler.await.expect("sampler");
    assert!(samples >= 10, "only {samples} health reports sampled");
}
