//! Large writes never stall the cluster: a follower that fell behind by many large entries
//! catches up in requests it accepts, and the cluster keeps committing meanwhile.
//!
//! Regression: AppendEntries requests to a follower resumed after 160 MB of writes passed the
//! peer body limit and were refused forever (413). The follower never caught up, timed out,
//! called elections, and each higher term deposed the leader: nothing committed for minutes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{wait_until, TestCluster};

const STARTUP_WITHIN: Duration = Duration::from_secs(20);
/// Large writes sent at once while one follower is stopped.
const LARGE_WRITES: usize = 160;
/// About 1 MB each, under the default 1 MiB value limit.
const LARGE_VALUE_BYTES: usize = 1_000_000;
/// One attempt at a large write waits this long for an answer.
const LARGE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Every large write is acknowledged within this.
const LARGE_WRITES_WITHIN: Duration = Duration::from_secs(300);
/// How long small writes are recorded after the follower resumes.
const OBSERVE_FOR: Duration = Duration::from_secs(10);
/// A single small write gives up after this (the node answers 503 after 5 s itself).
const SMALL_WRITE_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest time allowed without a successful small write: a couple of elections. With the
/// default settings an election starts 0.9–1 s after the last heartbeat (openraft's leader
/// lease plus the election timeout); the resumed follower may call one at once, since its
/// timer ran out while it was stopped, and its higher term may depose the leader once.
/// A write caught in that change waits up to the leader wait (3 s) before its 503, so on a
/// loaded 2-core machine one deposed leader costs up to about 4 s (seen twice in CI). The bug
/// this guards against held every write back for 30 s and more.
const SMALL_WRITE_GAP_MAX: Duration = Duration::from_millis(6000);
/// The resumed follower's applied index reaches the leader's within this.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(90);

/// Puts a ~1 MB value at `large/{i}` until it is acknowledged. A write the node answers with
/// 503 (its commit outlasted the node's 5 s bound, which an unoptimised build on a busy
/// machine can reach under 160 MB of writes) has an unknown outcome, and is sent again:
/// putting the same value twice is harmless here.
async fn large_write(http: &reqwest::Client, leader_url: &str, i: usize) {
    let mut value = vec![b'v'; LARGE_VALUE_BYTES];
    value[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let value = Bytes::from(value);
    loop {
        let response = http
            .put(format!("{leader_url}/v1/kv/large/{i:03}"))
            .timeout(LARGE_WRITE_TIMEOUT)
            .body(value.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("large write {i}: {e}"));
        let status = response.status();
        if status.is_success() {
            return;
        }
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 503, "large write {i}: {body}");
    }
}

fn signal(cluster: &TestCluster, id: u64, signal: Signal) {
    kill(Pid::from_raw(cluster.pid(id) as i32), signal).expect("signal a node");
}

async fn applied_index(cluster: &TestCluster, id: u64) -> Option<u64> {
    cluster.health(id).await?["applied_index"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_by_large_writes_catches_up_while_small_writes_commit() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;
    let stopped = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let http = cluster.http();
    let leader_url = cluster.url(leader);

    signal(&cluster, stopped, Signal::SIGSTOP);
    let storm_started = Instant::now();
    let large_writes = (0..LARGE_WRITES).map(|i| large_write(http, &leader_url, i));
    tokio::time::timeout(LARGE_WRITES_WITHIN, join_all(large_writes))
        .await
        .expect("every large write acknowledged in time");
    let storm = storm_started.elapsed();
    signal(&cluster, stopped, Signal::SIGCONT);

    // Small writes through the node that led while the follower was stopped (any node
    // forwards to whoever leads now), one after another, recording when each succeeds.
    let started = Instant::now();
    let mut last_success = started;
    let mut gap_max = Duration::ZERO;
    let mut written = 0u32;
    let mut failures = Vec::new();
    while started.elapsed() < OBSERVE_FOR {
        let outcome = http
            .put(format!("{leader_url}/v1/kv/small/{written}"))
            .timeout(SMALL_WRITE_TIMEOUT)
            .body("small")
            .send()
            .await;
        match outcome {
            Ok(r) if r.status().is_success() => {
                gap_max = gap_max.max(last_success.elapsed());
                last_success = Instant::now();
                written += 1;
            }
            other => {
                failures.push(format!("{:?}: {other:?}", started.elapsed()));
                // The poll interval between attempts after a refusal (503 while a leader is
                // elected comes back at once), not a wait for a condition.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    gap_max = gap_max.max(last_success.elapsed());
    eprintln!(
        "large writes took {storm:?}; then {written} small writes in {OBSERVE_FOR:?}, longest \
         gap {gap_max:?}, {} refused",
        failures.len()
    );
    assert!(
        gap_max <= SMALL_WRITE_GAP_MAX,
        "{written} small writes committed, but once none did for {gap_max:?}; failures: \
         {failures:?}"
    );

    // The follower catches up: its applied index reaches the leader's.
    wait_until(
        &format!("node {stopped} to apply what the leader applied"),
        CATCH_UP_WITHIN,
        || async {
            let leader = cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;
            let target = applied_index(&cluster, leader).await?;
            let applied = applied_index(&cluster, stopped).await?;
            (applied >= target).then_some(())
        },
    )
    .await;
    eprintln!(
        "node {stopped} caught up {:?} after it resumed",
        started.elapsed()
    );
    let last = format!("small/{}", written - 1);
    cluster
        .wait_for_value(stopped, &last, b"small", Duration::from_secs(5))
        .await;
}
