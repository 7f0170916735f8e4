//! Bad input gets a clear 4xx JSON error and changes nothing; a node without a quorum
//! answers 503 within a bounded time.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::TestCluster;

async fn status_and_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let cluster = TestCluster::start(1, &["--value-bytes-max", "1000"]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let http = cluster.http();
    let base = cluster.url(1);

    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        (
            http.put(format!("{base}/v1/kv/{}", "k".repeat(4097)))
                .body("v"),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.put(format!("{base}/v1/kv/big")).body(vec![b'x'; 1001]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            http.put(format!("{base}/v1/kv/k?if_revision=abc"))
                .body("v"),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.put(format!("{base}/v1/kv/k?unknown=1")).body("v"),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.put(format!("{base}/v1/kv/")).body("v"),
            StatusCode::NOT_FOUND,
        ),
        (
            http.get(format!("{base}/v1/kv/k?consistency=eventual")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{base}/v1/kv?limit=0")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(format!("{base}/v1/kv?limit=x")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.post(format!("{base}/v1/cluster/members"))
                .json(&serde_json::json!({"id": 9, "addr": "nowhere"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.delete(format!("{base}/v1/cluster/members/abc")),
            StatusCode::BAD_REQUEST,
        ),
        // A method a route does not serve is the JSON 405 on every router (the fuzzer found
        // the files routes answering an empty 405).
        (
            http.patch(format!("{base}/v1/files/docs/a.txt")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            http.patch(format!("{base}/v1/kv/k")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (request, expected) in cases {
        let response = request.send().await.expect("request");
        let (status, code) = status_and_code(response).await;
        assert_eq!(status, expected, "code {code}");
    }

    // A value at the limit is fine; a failed compare-and-set is a 409 and changes nothing.
    let ok = http
        .put(format!("{base}/v1/kv/k"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .expect("put");
    assert_eq!(ok.status(), StatusCode::OK);
    let conflict = http
        .put(format!("{base}/v1/kv/k?if_revision=0"))
        .body("other")
        .send()
        .await
        .expect("cas");
    let (status, code) = status_and_code(conflict).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "revision_mismatch")
    );

    let list: Value = http
        .get(format!("{base}/v1/kv"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list json");
    assert_eq!(
        list["revision"], 1,
        "only the one valid put changed the store"
    );
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["value"].as_str().map(str::len), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_quorum_answers_503_in_bounded_time() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    cluster
        .client_over(&[1, 2, 3])
        .put("k", b"before", None)
        .await
        .expect("put");
    cluster.kill(2);
    cluster.kill(3);

    let started = Instant::now();
    let write = cluster
        .http()
        .put(format!("{}/v1/kv/k", cluster.url(1)))
        .body("after")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the node answers");
    let (status, _) = status_and_code(write).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    let read = cluster
        .http()
        .get(format!("{}/v1/kv/k", cluster.url(1)))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(read.headers().contains_key("retry-after"));
}
