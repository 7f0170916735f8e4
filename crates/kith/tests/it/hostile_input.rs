//! Hostile bytes never hurt a node: a forged forward is validated on the leader like a
//! public request, absurd numbers answer 400, uploaded files cannot run script on the
//! node's origin, and the CLI ends quietly when its reader goes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use kith_core::Command;
use kith_node::peer::protocol::{ForwardError, ForwardRequest, ForwardResponse};
use kith_node::peer::route;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{wait_until, TestCluster};

/// Posts a forged forward to `base`'s peer route and decodes the answer.
async fn forward(
    cluster: &TestCluster,
    base: &str,
    request: &ForwardRequest,
) -> Result<ForwardResponse, ForwardError> {
    let body = postcard::to_allocvec(request).expect("encode");
    let response = cluster
        .http()
        .post(format!("{base}{}", route::FORWARD))
        .body(body)
        .send()
        .await
        .expect("forward");
    assert!(response.status().is_success(), "{}", response.status());
    let bytes = response.bytes().await.expect("forward body");
    postcard::from_bytes(&bytes).expect("decode the forward answer")
}

fn put(key: String, value_bytes: usize) -> Command {
    Command::Put {
        key,
        value: vec![b'v'; value_bytes],
        if_revision: None,
        ttl_ms: None,
    }
}

async fn list(cluster: &TestCluster, id: u64) -> Value {
    cluster
        .http()
        .get(format!("{}/v1/kv", cluster.url(id)))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list json")
}

/// Regression: `/internal/forward` stored what the public API refuses. Every forged write,
/// sent to the leader or to a follower, alone or in a batch, is refused with the error the
/// public route gives, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwards_are_validated_like_public_requests() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap_or(1);
    let cases = [
        (put(String::new(), 1), false),
        (put("a\u{1b}[31mred".into(), 1), false),
        (put("k".repeat(100_000), 1), false),
        // One byte past the value limit: small enough for a peer body, refused by validation.
        (put("big".into(), (1 << 20) + 1), true),
        (
            Command::Delete {
                key: String::new(),
                if_revision: None,
            },
            false,
        ),
    ];
    for id in [leader, follower] {
        let base = cluster.url(id);
        // A 5 MiB value does not even fit a peer body: refused before it is decoded. The node
        // answers without reading the body and closes the connection, so this goes on a
        // connection of its own, never reused.
        let huge = postcard::to_allocvec(&ForwardRequest::Write(put("huge".into(), 5 << 20)))
            .expect("encode");
        let lone = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let refused = lone
            .post(format!("{base}{}", route::FORWARD))
            .body(huge)
            .send()
            .await;
        // The 413 goes out before the body is read; a node that closes while the client
        // is still sending can reset the connection first. Either way nothing was taken
        // (the store is checked below); a success is the failure this looks for.
        match refused {
            Ok(response) => {
                assert_eq!(
                    response.status(),
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "node {id}"
                )
            }
            Err(e) => assert!(e.is_request() || e.is_body(), "node {id}: {e}"),
        }
        for (command, too_large) in &cases {
            let answer = forward(&cluster, &base, &ForwardRequest::Write(command.clone())).await;
            assert!(
                matches!(answer, Err(ForwardError::Invalid { too_large: t, .. }) if t == *too_large),
                "node {id}: {answer:?}"
            );
        }
        let batch = ForwardRequest::Writes(cases.iter().map(|(c, _)| c.clone()).collect());
        match forward(&cluster, &base, &batch).await {
            Ok(ForwardResponse::WrittenEach(each)) => {
                assert_eq!(each.len(), cases.len());
                assert!(
                    each.iter()
                        .all(|r| matches!(r, Err(ForwardError::Invalid { .. }))),
                    "node {id}: {each:?}"
                );
            }
            other => panic!("node {id}: {other:?}"),
        }
        // A join with a nonsense member is refused before any membership change.
        for (member, addr) in [(0, "127.0.0.1:1"), (9, "no port"), (9, "")] {
            let join = ForwardRequest::AddMember {
                id: member,
                addr: addr.into(),
            };
            let answer = forward(&cluster, &base, &join).await;
            assert!(
                matches!(answer, Err(ForwardError::Invalid { .. })),
                "node {id}: {answer:?}"
            );
        }
    }

    // The public route gives the same answers: 400 for the key, 413 for the value.
    let http = cluster.http();
    let public = http
        .put(format!("{}/v1/kv/a%1B%5B31mred", cluster.url(follower)))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(public.status(), StatusCode::BAD_REQUEST);

    // Nothing was stored: one valid write is revision 1, and the only key.
    let ok = http
        .put(format!("{}/v1/kv/fine", cluster.url(leader)))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(ok.status(), StatusCode::OK);
    let listed = list(&cluster, leader).await;
    assert_eq!(listed["revision"], 1, "{listed}");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let members: Value = http
        .get(format!("{}/v1/cluster", cluster.url(leader)))
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("cluster json");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));
}

/// Regression: the largest integer as a resume point answered nonsense (or panicked a
/// debug build's handler); now it is a 400 with a JSON error, and the node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_past_the_end_answer_400() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let (http, base) = (cluster.http(), cluster.url(1));
    let max = u64::MAX.to_string();
    let requests = [
        http.get(format!("{base}/v1/watch"))
            .header("last-event-id", &max),
        http.get(format!("{base}/v1/rooms/r/messages?after={max}")),
        http.get(format!("{base}/v1/rooms/r/stream"))
            .header("last-event-id", &max),
        http.get(format!("{base}/v1/rooms/r/stream?after={max}")),
        // One past the largest integer does not parse at all.
        http.get(format!(
            "{base}/v1/rooms/r/messages?after=18446744073709551616"
        )),
        http.get(format!("{base}/v1/watch"))
            .header("last-event-id", "18446744073709551616"),
    ];
    for request in requests {
        let response = request
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("answer");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let health = http
        .get(format!("{base}/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
}

/// Regression: an uploaded HTML file ran script on the node's origin. Every answer says
/// `nosniff`; file content runs sandboxed; active types are downloads, inert ones inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_cannot_run_script_on_the_nodes_origin() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let base = cluster.url(1);
    let (http, base) = (cluster.http(), base.as_str());
    let upload = |path: &'static str, content_type: &'static str, body: &'static str| async move {
        let response = http
            .put(format!("{base}/v1/files/{path}"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("upload");
        assert!(response.status().is_success(), "{}", response.status());
    };
    let html = "<script>document.title='pwned'</script>";
    upload("x/page.html", "text/html; charset=utf-8", html).await;
    upload("x/pic.svg", "image/svg+xml", "<svg/>").await;
    upload("x/notes.txt", "text/plain", "hello").await;
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    for path in ["x/page.html", "x/pic.svg"] {
        let r = http
            .get(format!("{base}/v1/files/{path}"))
            .send()
            .await
            .expect("download");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(&r, "content-security-policy").as_deref(),
            Some("sandbox")
        );
        let disposition = header(&r, "content-disposition").unwrap_or_default();
        assert!(
            disposition.starts_with("attachment"),
            "{path}: {disposition}"
        );
    }
    let r = http
        .get(format!("{base}/v1/files/x/notes.txt"))
        .send()
        .await
        .expect("download");
    assert_eq!(
        header(&r, "content-security-policy").as_deref(),
        Some("sandbox")
    );
    assert_eq!(
        header(&r, "content-disposition"),
        None,
        "inert types stay inline"
    );
    assert_eq!(r.text().await.expect("text"), "hello");

    // A share link serves the HTML the same way.
    let link: Value = http
        .post(format!("{base}/v1/files/x/page.html/share"))
        .send()
        .await
        .expect("share")
        .json()
        .await
        .expect("share json");
    let url = link["url"].as_str().expect("url");
    let r = http
        .get(format!("{base}{url}"))
        .send()
        .await
        .expect("shared");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        header(&r, "content-security-policy").as_deref(),
        Some("sandbox")
    );
    assert!(header(&r, "content-disposition").is_some_and(|d| d.starts_with("attachment")));

    // Every other answer too: the dashboard, an error, the health check.
    for path in ["/", "/v1/health", "/v1/kv/absent", "/no-such-route"] {
        let r = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(
            header(&r, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
    }
}

/// Regression: `kith … | head` panicked with a backtrace once `head` had gone. Now the
/// CLI ends with status 0 and says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_ends_quietly_when_its_output_pipe_closes() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let client = cluster.client(1);
    // More output than a pipe buffers (64 KiB), so the CLI is still writing when the
    // reader goes.
    let value = "x".repeat(60);
    let (client, value) = (&client, &value);
    let writes = (0..1000).map(|i| async move {
        client
            .put(&format!("k/{i:04}"), value.as_bytes(), None)
            .await
    });
    for result in futures::future::join_all(writes).await {
        result.expect("put");
    }
    client
        .put("big", &vec![b'y'; 1 << 20], None)
        .await
        .expect("put big");

    for args in [&["kv", "ls"][..], &["kv", "get", "big"][..]] {
        let mut child = Process::new(env!("CARGO_BIN_EXE_kith"))
            .args(args)
            .args(["--endpoints", &cluster.url(1)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kith");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = Vec::new();
        if args[1] == "ls" {
            stdout.read_until(b'\n', &mut first).expect("first line");
        } else {
            first.resize(1024, 0);
            stdout.read_exact(&mut first).expect("first bytes");
        }
        assert!(!first.is_empty());
        // The reader goes, as `head` does after its lines.
        drop(stdout);
        let mut stderr = child.stderr.take().expect("stderr");
        let status = wait_until("kith to exit", Duration::from_secs(30), || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await;
        let mut said = String::new();
        stderr.read_to_string(&mut said).expect("stderr");
        assert!(status.success(), "{args:?}: {status}; stderr: {said}");
        assert_eq!(said, "", "{args:?}");
    }
}

/// Open claim long-polls are bounded: one past `CLAIM_WAITS_MAX` answers 503 with a JSON
/// error and `retry-after`, a claim that does not wait is still served, and a waiting
/// client that hangs up gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_claim_long_polls_are_bounded() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let base = cluster.url(1);
    let claim = |wait_s: u64| {
        cluster
            .http()
            .post(format!("{base}/v1/queues/idle/claim?wait={wait_s}"))
            .timeout(Duration::from_secs(90))
            .send()
    };
    let max = kith_node::node::CLAIM_WAITS_MAX;
    // Connections are opened a batch at a time, each batch once the last is answered by
    // the node: a thousand connects at once overflow the listen backlog, and a dropped SYN
    // is retried only seconds later.
    let mut waits = Vec::with_capacity(max);
    let mut open = 0;
    while open < max {
        let batch = 64.min(max - open);
        waits.extend((0..batch).map(|_| tokio::spawn(claim(60))));
        open += batch;
        wait_until(
            "the batch to be waiting",
            Duration::from_secs(30),
            || async {
                let metrics = cluster
                    .http()
                    .get(format!("{base}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let waiting = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("kith_claim_waits "))?
                    .trim()
                    .parse::<usize>()
                    .ok()?;
                (waiting >= open).then_some(())
            },
        )
        .await;
    }
    let refused = claim(1).await.expect("claim");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "too_many_claims", "{body}");
    let now = claim(0).await.expect("claim without wait");
    assert_eq!(now.status(), StatusCode::NO_CONTENT);

    // The waiting clients hang up: their connections close, and their places come back.
    for wait in &waits {
        wait.abort();
    }
    wait_until(
        "the claim bound to free up",
        Duration::from_secs(30),
        || async {
            let r = claim(1).await.expect("claim");
            (r.status() == StatusCode::NO_CONTENT).then_some(())
        },
    )
    .await;
}
