//! Watches deliver every change exactly once, across a leader crash and across nodes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_client::{ClientError, WatchControl, WatchEvent};

use crate::harness::{wait_until, TestCluster};

const KEYS: u32 = 100;

/// Creates w/000..w/099 once each (create-only puts make retries safe), killing `victim`
/// after 30 of them.
async fn write_keys(cluster: &mut TestCluster, victim: u64) {
    for i in 0..KEYS {
        if i == 30 {
            cluster.kill(victim);
        }
        let alive: Vec<u64> = [1, 2, 3]
            .into_iter()
            .filter(|id| *id != victim || i < 30)
            .collect();
        let key = format!("w/{i:03}");
        let client = cluster.client_over(&alive);
        wait_until(
            &format!("{key} to be written"),
            Duration::from_secs(20),
            || async {
                match client.put(&key, b"v", Some(0)).await {
                    Ok(_) => Some(()),
                    // Already there: an earlier attempt with an unknown outcome took effect.
                    Err(ClientError::Api { status: 409, .. }) => Some(()),
                    Err(_) => None,
                }
            },
        )
        .await;
    }
}

fn assert_exactly_once_in_order(events: &[WatchEvent]) {
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions out of order: {revisions:?}"
    );
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "a key was delivered twice");
    let expected: BTreeSet<String> = (0..KEYS).map(|i| format!("w/{i:03}")).collect();
    let got: BTreeSet<String> = unique.iter().map(|k| k.to_string()).collect();
    assert_eq!(got, expected, "missing or unexpected keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_change_through_a_leader_crash_and_resumes_on_another_node() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (watched, resumed_on) = (followers[0], followers[1]);

    // Watcher A stays on one follower the whole time, from the first revision.
    let a_events = Arc::new(Mutex::new(Vec::new()));
    let a_client = cluster.client(watched);
    let sink = a_events.clone();
    let watcher_a = tokio::spawn(async move {
        a_client
            .watch("w/", Some(1), move |e| {
                let mut events = sink.lock().unwrap();
                events.push(e);
                if events.len() == KEYS as usize {
                    WatchControl::Stop
                } else {
                    WatchControl::Continue
                }
            })
            .await
    });

    // Watcher B starts on the same follower, stops after 40 events, and resumes on the
    // other follower from the last revision it saw.
    let b_client = cluster.client(watched);
    let mut b_events: Vec<WatchEvent> = Vec::new();
    let first_half = b_client.watch("w/", Some(1), |e| {
        b_events.push(e);
        if b_events.len() == 40 {
            WatchControl::Stop
        } else {
            WatchControl::Continue
        }
    });
    let (first_half, ()) = tokio::join!(first_half, write_keys(&mut cluster, leader));
    first_half.expect("first half of watcher B");
    let last = b_events.last().expect("watcher B saw events").revision;
    let rest = cluster.client(resumed_on);
    rest.watch("w/", Some(last + 1), |e| {
        b_events.push(e);
        if b_events.len() == KEYS as usize {
            WatchControl::Stop
        } else {
            WatchControl::Continue
        }
    })
    .await
    .expect("watcher B resumed on another node");
    assert_exactly_once_in_order(&b_events);

    tokio::time::timeout(Duration::from_secs(30), watcher_a)
        .await
        .expect("watcher A received every event in time")
        .expect("watcher A task")
        .expect("watcher A");
    let a = a_events.lock().unwrap().clone();
    assert_exactly_once_in_order(&a);
    // Both watchers saw the same history.
    let revs = |v: &[WatchEvent]| {
        v.iter()
            .map(|e| (e.revision, e.key.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(revs(&a), revs(&b_events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_is_a_410_that_names_the_oldest_revision() {
    let cluster = TestCluster::start(1, &["--events-kept", "5"]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let client = cluster.client(1);
    for i in 0..10 {
        client.put(&format!("k{i}"), b"v", None).await.expect("put");
    }
    let response = cluster
        .http()
        .get(format!("{}/v1/watch?from_revision=2", cluster.url(1)))
        .send()
        .await
        .expect("watch request");
    assert_eq!(response.status(), 410);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "compacted");
    assert_eq!(body["error"]["oldest_revision"], 6);
}
