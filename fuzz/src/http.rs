//! The `public_http` target's harness: one real single-node kith per fuzz process, driven
//! in process through the real router (`kith_api::router`) with arbitrary requests.
//!
//! An input is a request in a plain text form, so that seeds are readable and libFuzzer's
//! mutations stay close to real requests:
//!
//! ```text
//! PUT /v1/kv/a%2Fb?if_revision=3&ttl=10
//! Range: bytes=0-10
//!
//! body bytes…
//! ```
//!
//! Invariants on every answer: no panic; no 5xx other than 503 and 507; every 4xx or 5xx
//! from a `/v1` route has the JSON body `{"error":{"code","message"}}`; the Raft core is
//! still running afterwards. `/internal` routes are refused here: they are peer routes,
//! whose bodies the `peer_decode` target covers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use kith_node::{Node, NodeConfig};

/// Longest an answer may take before the input counts as a hang: a claim long-poll or an
/// event stream legitimately waits; the harness does not.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(2);
/// Largest error body read whole.
const ERROR_BODY_BYTES_MAX: usize = 1 << 20;
/// How long the node may take to become leader of its one-member cluster.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(20);

struct Harness {
    runtime: tokio::runtime::Runtime,
    node: Arc<Node>,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = crate::scratch_dir();
        let (node, router) = runtime.block_on(start(dir.path()));
        Harness {
            runtime,
            node,
            router,
            _dir: dir,
        }
    })
}

/// Starts a node that leads a cluster of itself, and also serves it on its own loopback
/// port, in case a route calls the node's own address.
async fn start(dir: &std::path::Path) -> (Arc<Node>, axum::Router) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let mut config = NodeConfig::new(1, addr, dir.to_path_buf());
    // Small histories, so that a long run's state stays small.
    config.events_kept = 1_000;
    config.ledger_kept = 1_000;
    config.snapshot_logs_since_last = 1_000;
    config.snapshot_logs_keep = 100;
    config.file_replicas = 1;
    let node = Node::start(config).await.expect("start the node");
    let router = kith_api::router(node.clone());
    tokio::spawn(kith_api::serve(
        node.clone(),
        listener,
        std::future::pending(),
    ));
    let members = [(1, openraft::BasicNode::new(addr.to_string()))];
    node.initialize(members.into_iter().collect())
        .await
        .expect("initialize a one-member cluster");
    let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
    while node.health().role != "leader" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never became leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (node, router)
}

/// A request parsed from the input's text form; `None` when it is not one a client could
/// send (no valid method or URI) or names a peer route.
pub fn parse(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, uri) = lines.next()?.split_once(' ')?;
    if !uri.starts_with('/') || uri.starts_with("/internal") {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(uri);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        request = request.header(name.trim(), value.trim());
    }
    request.body(Body::from(body.to_vec())).ok()
}

/// Sends one input's request and checks the answer; panics on a violated invariant.
pub fn run(data: &[u8]) {
    let Some(request) = parse(data) else {
        return;
    };
    let h = harness();
    let is_v1 = request.uri().path().starts_with("/v1/") || request.uri().path() == "/v1";
    let what = format!("{} {}", request.method(), request.uri());
    h.runtime.block_on(async {
        let answer = tokio::time::timeout(ANSWER_WAIT_MAX, h.router.clone().oneshot(request)).await;
        let Ok(answer) = answer else {
            return; // a long poll or a stream still waiting: not an error
        };
        let answer = answer.expect("the router is infallible");
        let status = answer.status();
        assert!(
            !status.is_server_error()
                || status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::INSUFFICIENT_STORAGE,
            "{what}: {status} for input alone"
        );
        if is_v1 && (status.is_client_error() || status.is_server_error()) {
            let body = tokio::time::timeout(ANSWER_WAIT_MAX, answer.into_body().collect()).await;
            let body = body
                .unwrap_or_else(|_| panic!("{what}: {status} with an error body that never ends"))
                .expect("an error body")
                .to_bytes();
            assert!(
                body.len() <= ERROR_BODY_BYTES_MAX,
                "{what}: huge error body"
            );
            check_error_body(&what, status, &body);
        }
    });
    let stopped = h.node.raft_stop_reason();
    assert!(
        stopped.is_none(),
        "{what}: the Raft core stopped: {stopped:?}"
    );
}

fn check_error_body(what: &str, status: StatusCode, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: {status} with a body that is not JSON: {text}"));
    let error = &json["error"];
    assert!(
        error["code"].is_string() && error["message"].is_string(),
        "{what}: {status} without {{\"error\":{{\"code\",\"message\"}}}}: {text}"
    );
}

/// Seeds: a real request on every public route, with the parameters and headers each
/// parser reads, and a few limits.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let max = u64::MAX;
    let requests: Vec<(&str, String)> = vec![
        ("health", "GET /v1/health".into()),
        ("cluster", "GET /v1/cluster".into()),
        ("add_member", "POST /v1/cluster/members\ncontent-type: application/json\n\n{\"id\":2,\"addr\":\"127.0.0.1:1\"}".into()),
        ("remove_member", "DELETE /v1/cluster/members/9".into()),
        ("kv_put", "PUT /v1/kv/a/b?ttl=10&if_revision=0\n\nvalue".into()),
        ("kv_put_cas", "PUT /v1/kv/a?if_revision=1\n\nv2".into()),
        ("kv_get", "GET /v1/kv/a/b?consistency=stale".into()),
        ("kv_get_escaped", "GET /v1/kv/%E2%9C%93%00x".into()),
        ("kv_delete", "DELETE /v1/kv/a?if_revision=2".into()),
        ("kv_list", "GET /v1/kv?prefix=a&limit=10".into()),
        ("watch_last_event", format!("GET /v1/watch?prefix=a\nLast-Event-ID: {max}")),
        ("watch_from", "GET /v1/watch?from_revision=1".into()),
        ("ledger", "GET /v1/ledger?index=1".into()),
        ("rooms", "GET /v1/rooms".into()),
        ("room_post", "POST /v1/rooms/general/messages\ncontent-type: application/json\n\n{\"author\":\"ann\",\"text\":\"hi\",\"id\":\"m1\"}".into()),
        ("room_history", format!("GET /v1/rooms/general/messages?after={max}&limit=5")),
        ("room_stream", "GET /v1/rooms/general/stream\nLast-Event-ID: 3".into()),
        ("queues", "GET /v1/queues".into()),
        ("enqueue", "POST /v1/queues/q/jobs\ncontent-type: application/json\n\n{\"payload\":{\"n\":1},\"priority\":5,\"delay_s\":1,\"idempotency_key\":\"k\"}".into()),
        ("claim", "POST /v1/queues/q/claim?lease=30&wait=0\ncontent-type: application/json\n\n{\"worker\":\"w\"}".into()),
        ("dead", "GET /v1/queues/q/dead".into()),
        ("jobs", "GET /v1/jobs?queue=q&state=ready".into()),
        ("job_complete", "POST /v1/jobs/1/complete\ncontent-type: application/json\n\n{\"attempt\":1}".into()),
        ("job_retry", "POST /v1/jobs/1/retry".into()),
        ("file_put", "PUT /v1/files/docs/a.txt\ncontent-type: text/plain\n\nhello file".into()),
        ("file_get_range", "GET /v1/files/docs/a.txt\nRange: bytes=2-5".into()),
        ("file_get_suffix", "GET /v1/files/docs/a.txt\nRange: bytes=-3\nIf-Match: \"x\"".into()),
        ("file_list", "GET /v1/files?prefix=docs/".into()),
        ("file_share", "POST /v1/files/docs/a.txt/share?ttl=60".into()),
        ("shares", "GET /v1/shares".into()),
        ("share_link", "GET /s/abcdef".into()),
        ("file_delete", "DELETE /v1/files/docs/a.txt".into()),
        ("metrics", "GET /metrics".into()),
        ("dashboard", "GET /".into()),
        ("dev", "POST /v1/dev/nodes/2/stop".into()),
        ("preflight", "OPTIONS /v1/kv/a\nOrigin: http://x\nAccess-Control-Request-Method: PUT".into()),
        // etcd's API: its JSON gateway, and gRPC calls (a 5-byte frame header, then the
        // protobuf message: field 1, the key "a"; field 2, the value "b").
        ("etcd_range", "POST /v3/kv/range\ncontent-type: application/json\n\n{\"key\":\"YQ==\",\"range_end\":\"AA==\",\"limit\":\"10\",\"revision\":\"1\",\"sort_order\":\"DESCEND\"}".into()),
        ("etcd_put", "POST /v3/kv/put\n\n{\"key\":\"YQ==\",\"value\":\"Yg==\",\"lease\":\"5\",\"prev_kv\":true}".into()),
        ("etcd_txn", "POST /v3/kv/txn\n\n{\"compare\":[{\"key\":\"YQ==\",\"target\":\"MOD\",\"mod_revision\":\"1\"}],\"success\":[{\"request_delete_range\":{\"key\":\"YQ==\",\"range_end\":\"Yg==\"}},{\"request_txn\":{}}],\"failure\":[{\"request_range\":{\"key\":\"YQ==\"}}]}".into()),
        ("etcd_lease", "POST /v3/lease/grant\n\n{\"TTL\":\"10\",\"ID\":\"7\"}".into()),
        ("etcd_keepalive", "POST /v3/lease/keepalive\n\n{\"ID\":\"7\"}".into()),
        ("etcd_ttl", "POST /v3/lease/timetolive\n\n{\"ID\":\"7\",\"keys\":true}".into()),
        ("etcd_watch", "POST /v3/watch\n\n{\"create_request\":{\"key\":\"YQ==\",\"start_revision\":\"1\",\"prev_kv\":true}}".into()),
        ("etcd_version", "GET /version".into()),
        ("grpc_range", "POST /etcdserverpb.KV/Range\ncontent-type: application/grpc\nte: trailers\n\n\u{0}\u{0}\u{0}\u{0}\u{3}\n\u{1}a".into()),
        ("grpc_put", "POST /etcdserverpb.KV/Put\ncontent-type: application/grpc\n\n\u{0}\u{0}\u{0}\u{0}\u{6}\n\u{1}a\u{12}\u{1}b".into()),
        ("grpc_status", "POST /etcdserverpb.Maintenance/Status\ncontent-type: application/grpc\n\n\u{0}\u{0}\u{0}\u{0}\u{0}".into()),
    ];
    requests
        .into_iter()
        .map(|(n, r)| (n.to_owned(), r.into_bytes()))
        .collect()
}
