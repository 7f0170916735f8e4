//! The storage quota and deletable rooms and queues, on real processes: past
//! `--quota-bytes` growing writes answer 507 `quota_exceeded` on every path while reads and
//! deletes go on, and deleting data brings the cluster back under; empty queues and rooms
//! can be deleted, and a deleted room frees its slot under `--rooms-max`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{wait_until, TestCluster};

const QUOTA_BYTES: u64 = 400_000;
const VALUE_BYTES: usize = 100_000;

async fn put(cluster: &TestCluster, node: u64, key: &str, bytes: usize) -> (StatusCode, Value) {
    let r = cluster
        .http()
        .put(format!("{}/v1/kv/{key}", cluster.url(node)))
        .body(vec![b'v'; bytes])
        .send()
        .await
        .expect("put");
    (r.status(), r.json().await.expect("json answer"))
}

async fn call(cluster: &TestCluster, method: reqwest::Method, node: u64, path: &str) -> StatusCode {
    cluster
        .http()
        .request(method, format!("{}{path}", cluster.url(node)))
        .send()
        .await
        .expect("request")
        .status()
}

async fn quota_of(cluster: &TestCluster, node: u64) -> Value {
    cluster.health(node).await.expect("health")["quota"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_quota_growing_writes_answer_507_and_deleting_gets_back_under() {
    let quota = QUOTA_BYTES.to_string();
    let cluster = TestCluster::start(3, &["--quota-bytes", &quota]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(quota_of(&cluster, leader).await["exceeded"], false);

    // Puts through the leader are accepted until the quota is passed, then refused.
    let mut accepted = 0;
    let refusal = loop {
        assert!(accepted < 20, "no put was refused after {accepted}");
        let (status, answer) = put(&cluster, leader, &format!("big/{accepted}"), VALUE_BYTES).await;
        if status == StatusCode::OK {
            accepted += 1;
            continue;
        }
        break (status, answer);
    };
    assert_eq!(refusal.0, StatusCode::INSUFFICIENT_STORAGE, "{}", refusal.1);
    assert_eq!(
        refusal.1["error"]["code"], "quota_exceeded",
        "{}",
        refusal.1
    );
    let stored = accepted as u64 * VALUE_BYTES as u64;
    assert!(
        stored >= QUOTA_BYTES && stored < QUOTA_BYTES + 2 * VALUE_BYTES as u64,
        "{accepted} puts of {VALUE_BYTES} bytes accepted under a quota of {QUOTA_BYTES}"
    );

    // The same through a follower (forwarded; the leader's check answers).
    let (status, answer) = put(&cluster, follower, "big/via-follower", VALUE_BYTES).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "quota_exceeded", "{answer}");
    // A small put is refused too: past the quota, nothing grows. So is a file upload.
    let (status, _) = put(&cluster, follower, "small", 1).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    let r = cluster
        .http()
        .put(format!("{}/v1/files/f.bin", cluster.url(follower)))
        .body(vec![b'f'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "quota_exceeded", "{answer}");
    assert_eq!(
        call(&cluster, reqwest::Method::GET, leader, "/v1/files/f.bin").await,
        StatusCode::NOT_FOUND
    );

    // The alarm shows in health and in /metrics.
    let q = quota_of(&cluster, leader).await;
    assert_eq!(q["exceeded"], true, "{q}");
    assert_eq!(q["quota_bytes"], QUOTA_BYTES, "{q}");
    assert!(q["used_bytes"].as_u64().unwrap() >= QUOTA_BYTES, "{q}");
    let metrics = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(leader)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kith_quota_exceeded 1"), "{metrics}");
    // A node past its quota is not ready: a load balancer should send writes elsewhere.
    let ready = cluster
        .http()
        .get(format!("{}/readyz", cluster.url(leader)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["error"]["code"], "quota_exceeded", "{ready}");
    assert!(
        metrics.contains(&format!("kith_quota_bytes {QUOTA_BYTES}")),
        "{metrics}"
    );

    // Reads and deletes still work.
    assert_eq!(
        call(&cluster, reqwest::Method::GET, follower, "/v1/kv/big/0").await,
        StatusCode::OK
    );
    for i in 0..2 {
        let path = format!("/v1/kv/big/{i}");
        assert_eq!(
            call(&cluster, reqwest::Method::DELETE, follower, &path).await,
            StatusCode::OK
        );
    }

    // Deleting brought the leader back under: the alarm clears and puts succeed again.
    wait_until(
        "the quota alarm to clear",
        Duration::from_secs(15),
        || async {
            let q = quota_of(&cluster, leader).await;
            (q["exceeded"] == false).then_some(())
        },
    )
    .await;
    let metrics = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(leader)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kith_quota_exceeded 0"), "{metrics}");
    let (status, answer) = put(&cluster, follower, "big/again", VALUE_BYTES).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queues_and_rooms_are_deleted_and_a_deleted_room_frees_its_slot() {
    let cluster = TestCluster::start(3, &["--rooms-max", "2"]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let follower = if leader == 1 { 2 } else { 1 };
    let http = cluster.http();
    let url = cluster.url(follower);

    // Rooms: the cap is full, deleting one frees its slot.
    for room in ["a", "b"] {
        for text in ["one", "two"] {
            let r = http
                .post(format!("{url}/v1/rooms/{room}/messages"))
                .json(&json!({"author": "ann", "text": text}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    }
    let post_c = || async {
        http.post(format!("{url}/v1/rooms/c/messages"))
            .json(&json!({"author": "ann", "text": "hi"}))
            .send()
            .await
            .unwrap()
    };
    let r = post_c().await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rooms_full"
    );
    let r = http
        .delete(format!("{url}/v1/rooms/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        (answer["deleted"].clone(), answer["messages"].clone()),
        (json!(true), json!(2))
    );
    let rooms: Value = http
        .get(format!("{url}/v1/rooms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    let r = post_c().await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["seq"], 1);
    let r = http
        .delete(format!("{url}/v1/rooms/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Queues: refused while a job is unfinished, then deleted with its counts.
    let client = cluster.client(follower);
    // A queue whose name extends the deleted one's keeps its idempotency keys.
    let neighbour = client
        .enqueue("q2", &json!({"payload": 0, "idempotency_key": "k"}))
        .await
        .unwrap();
    client
        .enqueue("q", &json!({"payload": 1, "idempotency_key": "k"}))
        .await
        .unwrap();
    let r = http
        .delete(format!("{url}/v1/queues/q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "queue_not_empty"
    );
    let job = client.claim("q", 30, 0, "t").await.unwrap().expect("claim");
    let r = http
        .delete(format!("{url}/v1/queues/q"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "a running job holds the queue"
    );
    client
        .report(job.id, "complete", job.attempt, json!({}))
        .await
        .unwrap();
    let r = http
        .delete(format!("{url}/v1/queues/q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let queues = client.queues().await.unwrap();
    assert!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["name"] != "q"),
        "{queues}"
    );
    let r = http
        .delete(format!("{url}/v1/queues/q"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Its idempotency keys went with it: the same key enqueues a new job.
    let again = client
        .enqueue("q", &json!({"payload": 2, "idempotency_key": "k"}))
        .await
        .unwrap();
    assert_ne!(again, job.id);
    let same = client
        .enqueue("q2", &json!({"payload": 0, "idempotency_key": "k"}))
        .await
        .unwrap();
    assert_eq!(same, neighbour);
}
