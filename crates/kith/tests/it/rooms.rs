//! Chat rooms over the API: order, dense seq, idempotent retries, limits, paging, and a live
//! stream that resumes on another node with nothing lost or repeated.

use std::collections::BTreeSet;
use std::time::Duration;

use kith_client::{ClientError, Consistency, RoomEvent};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{wait_until, TestCluster};

async fn post(cluster: &TestCluster, node: u64, room: &str, body: Value) -> (StatusCode, Value) {
    let r = cluster
        .http()
        .post(format!("{}/v1/rooms/{room}/messages", cluster.url(node)))
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = r.status();
    (status, r.json().await.expect("json answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_order_page_deduplicate_and_refuse_bad_input() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;

    // Posted through all three nodes: one total order, seq dense from 1.
    for i in 1..=12u64 {
        let node = i % 3 + 1;
        let (status, answer) = post(
            &cluster,
            node,
            "general",
            json!({"author": "ann", "text": format!("m{i}"), "id": format!("id-{i}")}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(answer["seq"], i);
    }
    // A retried send (same id) stores nothing and returns the first seq.
    let (status, answer) = post(
        &cluster,
        2,
        "general",
        json!({"author": "ann", "text": "m3", "id": "id-3"}),
    )
    .await;
    assert_eq!((status, answer["seq"].as_u64()), (StatusCode::OK, Some(3)));
    assert_eq!(answer["duplicate"], true);
    // Another room counts on its own.
    let (_, answer) = post(&cluster, 1, "random", json!({"author": "bo", "text": "hi"})).await;
    assert_eq!(answer["seq"], 1);

    // Paging: every node returns the same pages.
    let client = cluster.client_over(&[1, 2, 3]);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .history("general", after, 5, Consistency::Linearizable)
            .await
            .expect("history");
        let messages = page["messages"].as_array().expect("messages").clone();
        if messages.is_empty() {
            break;
        }
        for m in &messages {
            seen.push(m["text"].as_str().unwrap().to_owned());
            after = m["seq"].as_u64().unwrap();
        }
    }
    let expected: Vec<String> = (1..=12).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);
    let rooms: Value = cluster
        .http()
        .get(format!("{}/v1/rooms", cluster.url(3)))
        .send()
        .await
        .expect("rooms")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["general", "random"]);
    assert_eq!(rooms["rooms"][0]["messages"], 12);

    // Bad input: a clear 4xx, and nothing stored.
    let bad = [
        ("bad room", json!({"author": "a", "text": "t"})),
        ("general", json!({"author": "", "text": "t"})),
        ("general", json!({"author": "a".repeat(65), "text": "t"})),
        ("general", json!({"author": "a", "text": ""})),
        ("general", json!({"author": "a", "text": "x".repeat(4097)})),
        (
            "general",
            json!({"author": "a", "text": "t", "id": "not ok!"}),
        ),
        ("general", json!({"author": "a", "text": "t", "extra": 1})),
        (&"r".repeat(65), json!({"author": "a", "text": "t"})),
    ];
    for (room, body) in bad {
        let (status, answer) = post(&cluster, 1, &room.replace(' ', "%20"), body).await;
        assert!(status.is_client_error(), "{room}: {status} {answer}");
        assert!(answer["error"]["code"].is_string());
    }
    let page = client
        .history("general", 0, 100, Consistency::Linearizable)
        .await
        .expect("history");
    assert_eq!(page["last_seq"], 12, "refused posts stored nothing");
    let limit = cluster
        .http()
        .get(format!(
            "{}/v1/rooms/general/messages?limit=1001",
            cluster.url(1)
        ))
        .send()
        .await
        .expect("history");
    assert_eq!(limit.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_the_oldest_and_says_so() {
    let cluster = TestCluster::start(1, &["--room-messages-kept", "5"]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let client = cluster.client(1);
    for i in 1..=8 {
        client
            .post_message("r", "ann", &format!("m{i}"), None)
            .await
            .expect("post");
    }
    let page = client
        .history("r", 0, 100, Consistency::Linearizable)
        .await
        .expect("history");
    assert_eq!(
        (page["first_seq"].as_u64(), page["dropped"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);
    // A stream that starts before the kept history is told about the gap first.
    let mut events = Vec::new();
    client
        .follow_room("r", 0, |e| {
            events.push(e);
            events.len() < 6
        })
        .await
        .expect("stream");
    assert_eq!(
        events[0],
        RoomEvent::Gap {
            from_seq: 1,
            to_seq: 3
        }
    );
    assert!(matches!(&events[1], RoomEvent::Message(m) if m.seq == 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_loses_and_repeats_nothing_while_the_leader_is_killed() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();

    // The reader starts on the leader, so killing it forces a reconnect to another node;
    // its client knows every endpoint and resumes with Last-Event-ID.
    let reader =
        kith_client::Client::new(&[cluster.url(leader), cluster.url(others[0])]).expect("client");
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let reading = tokio::spawn(async move {
        reader
            .follow_room("live", 0, move |e| {
                let mut got = sink.lock().unwrap();
                if let RoomEvent::Message(m) = e {
                    got.push(m.seq);
                }
                got.len() < 60
            })
            .await
    });

    for i in 1..=60u32 {
        if i == 20 {
            wait_until(
                "the reader to get the first messages",
                Duration::from_secs(10),
                || {
                    let n = received.lock().unwrap().len();
                    async move { (n >= 10).then_some(()) }
                },
            )
            .await;
            cluster.kill(leader);
        }
        let alive: Vec<u64> = if i < 20 {
            vec![1, 2, 3]
        } else {
            others.clone()
        };
        let client = cluster.client_over(&alive);
        let id = format!("msg-{i}");
        wait_until(
            &format!("message {i} to be posted"),
            Duration::from_secs(20),
            || async {
                match client
                    .post_message("live", "ann", &format!("m{i}"), Some(&id))
                    .await
                {
                    Ok(seq) => Some(seq),
                    Err(ClientError::Api { .. } | ClientError::Unavailable(_)) => None,
                    Err(e) => panic!("post {i}: {e}"),
                }
            },
        )
        .await;
    }
    tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the reader received all 60 messages in time")
        .expect("reader task")
        .expect("reader");
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got,
        (1..=60).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), 60);
}
