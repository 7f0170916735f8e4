//! Leader crash, whole-cluster restart, a planned stop of the leader, a rolling restart
//! under writes: nothing acknowledged is lost.

use std::time::{Duration, Instant};

use kith_client::Consistency;

use crate::harness::TestCluster;

const ELECTION_WITHIN: Duration = Duration::from_secs(3);
const STARTUP_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_keeps_every_acknowledged_write_and_the_node_catches_up() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;

    // 200 keys, written through every node in turn (followers forward to the leader).
    let clients = [cluster.client(1), cluster.client(2), cluster.client(3)];
    for i in 0..200u32 {
        let key = format!("key/{i:03}");
        clients[i as usize % 3]
            .put(&key, format!("value-{i}").as_bytes(), None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    cluster.kill(leader);
    let killed_at = Instant::now();
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors, ELECTION_WITHIN).await;
    let elected_after = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(
        elected_after <= ELECTION_WITHIN,
        "new leader after {elected_after:?}"
    );

    // Every acknowledged key is there, read linearizably from each survivor.
    for i in 0..200u32 {
        let key = format!("key/{i:03}");
        let reader = cluster.client(survivors[i as usize % 2]);
        let got = reader
            .get(&key, Consistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .unwrap_or_else(|| panic!("{key} lost after the leader crashed"));
        assert_eq!(got.value, format!("value-{i}").as_bytes());
    }

    // Writes succeed again, through either survivor.
    for id in &survivors {
        cluster
            .client(*id)
            .put("after-crash", format!("from-{id}").as_bytes(), None)
            .await
            .expect("write after failover");
    }
    let last = format!("from-{}", survivors[1]);

    // The killed node restarts from its directory and catches up.
    cluster.spawn(leader);
    cluster
        .wait_for_value(leader, "after-crash", last.as_bytes(), STARTUP_WITHIN)
        .await;
    let got = cluster
        .client(leader)
        .get("key/199", Consistency::Stale)
        .await
        .expect("stale read on the restarted node")
        .expect("key/199 present on the restarted node");
    assert_eq!(got.value, b"value-199");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;
    let client = cluster.client_over(&[1, 2, 3]);
    let mut revisions = Vec::new();
    for i in 0..50u32 {
        revisions.push(
            client
                .put(&format!("k{i}"), format!("v{i}").as_bytes(), None)
                .await
                .expect("put"),
        );
    }
    client.delete("k0", None).await.expect("delete");

    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.spawn(id);
    }
    cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;

    let client = cluster.client_over(&[1, 2, 3]);
    assert_eq!(
        client
            .get("k0", Consistency::Linearizable)
            .await
            .expect("get"),
        None
    );
    for i in 1..50u32 {
        let got = client
            .get(&format!("k{i}"), Consistency::Linearizable)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("k{i} lost in the restart"));
        assert_eq!(got.value, format!("v{i}").as_bytes());
        assert_eq!(got.revision, revisions[i as usize]);
    }
    // Revisions continue from where they were, not from zero.
    let next = client
        .put("after", b"x", None)
        .await
        .expect("put after restart");
    assert_eq!(next, revisions[49] + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_is_replaced_cleanly_and_loses_nothing() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;
    let client = cluster.client_over(&[1, 2, 3]);
    for i in 0..50u32 {
        client
            .put(&format!("planned/{i}"), b"before", None)
            .await
            .expect("put");
    }
    let term = cluster.health(leader).await.expect("health")["term"]
        .as_u64()
        .expect("term");

    let status = cluster.terminate(leader, STARTUP_WITHIN).await;
    assert!(status.success(), "a SIGTERM stop is clean: {status}");
    // A survivor leads, in a later term. (How soon is measured by bench/stop-vs-crash.sh:
    // the hand-over gives up after its bounds on a starved machine, so a test cannot
    // promise it finished before the old leader exited.)
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors, ELECTION_WITHIN).await;
    let new_term = cluster
        .health(new_leader)
        .await
        .expect("the new leader answers")["term"]
        .as_u64()
        .expect("term");
    assert!(
        new_term > term,
        "a new term after the stop: {new_term} after {term}"
    );

    for i in 0..50u32 {
        let got = cluster
            .client_over(&survivors)
            .get(&format!("planned/{i}"), Consistency::Linearizable)
            .await
            .expect("get")
            .expect("an acknowledged write survived the planned stop");
        assert_eq!(got.value, b"before");
    }
    cluster
        .client_over(&survivors)
        .put("planned/after", b"yes", None)
        .await
        .expect("a write after the hand-over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_writes_loses_nothing() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;
    let acked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (cluster.client_over(&[1, 2, 3]), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("rolling/{n}");
                if client.put(&key, b"v", None).await.is_ok() {
                    acked.lock().unwrap().push(key);
                }
                n += 1;
            }
        })
    };
    // One node at a time: SIGTERM, start it again, wait until it has every write so far.
    for id in 1..=3 {
        let before = acked.lock().unwrap().len();
        let status = cluster.terminate(id, STARTUP_WITHIN).await;
        assert!(status.success(), "node {id} stopped cleanly: {status}");
        cluster.spawn(id);
        // A write acknowledged after the restart, which the restarted node must get.
        let last = crate::harness::wait_until("a write after the restart", STARTUP_WITHIN, || {
            let acked = acked.lock().unwrap();
            let last = (acked.len() > before)
                .then(|| acked.last().cloned())
                .flatten();
            async move { last }
        })
        .await;
        cluster
            .wait_for_value(id, &last, b"v", STARTUP_WITHIN)
            .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 30,
        "writes went on through the restarts: {}",
        acked.len()
    );
    let reader = cluster.client_over(&[1, 2, 3]);
    for key in &acked {
        assert!(
            reader
                .get(key, Consistency::Linearizable)
                .await
                .expect("get")
                .is_some(),
            "{key} was acknowledged and then lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_finishes_what_it_was_answering() {
    use futures::StreamExt;

    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], STARTUP_WITHIN).await;
    let stopped = (1..=3).find(|id| *id != leader).expect("a follower");
    let url = cluster.url(stopped);
    // A watch stream and a claim that would wait 25 s, both open on the node that stops.
    let watch = cluster
        .http()
        .get(format!("{url}/v1/watch?prefix=stop/"))
        .send()
        .await
        .expect("watch");
    assert!(watch.status().is_success(), "{}", watch.status());
    let http = cluster.http().clone();
    let claim_url = format!("{url}/v1/queues/stopq/claim?wait=25");
    let claim = tokio::spawn(async move {
        let answer = http.post(claim_url).send().await;
        answer.map(|a| a.status())
    });
    crate::harness::wait_until("the watch and the claim open", STARTUP_WITHIN, || async {
        (crate::harness::gauge(&cluster, stopped, "streams").await? >= 1
            && crate::harness::gauge(&cluster, stopped, "claim_waits").await? == 1)
            .then_some(())
    })
    .await;

    let status = cluster.terminate(stopped, STARTUP_WITHIN).await;
    assert!(status.success(), "kith serve exited with {status}");
    // The claim was answered (no job, try again elsewhere), not cut off.
    let claimed = claim.await.expect("claim task");
    assert_eq!(
        claimed.expect("the claim got an answer"),
        reqwest::StatusCode::NO_CONTENT
    );
    // The stream ended cleanly: no error, just its end.
    let mut body = watch.bytes_stream();
    while let Some(piece) = body.next().await {
        piece.expect("the watch stream ended with an error");
    }
}
