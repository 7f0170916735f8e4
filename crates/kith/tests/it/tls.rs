//! A cluster with TLS (`kith init`, `kith serve --tls`): it does what a plain one does —
//! elects, replicates, survives its leader's SIGKILL, admits a node joined with
//! `kith init add-node` — and only its members speak its peer protocol: on every
//! `/internal` route, plain HTTP, TLS without a client certificate, another cluster's
//! certificate and a removed member's certificate are all refused; a member's certificate
//! cannot speak for another node; and no node's term or leader moves.

use std::path::Path;
use std::time::Duration;

use kith_client::tls::TlsOptions;
use kith_client::Consistency;
use kith_node::peer::route;
use kith_storage::TypeConfig;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};

use crate::harness::{wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_cluster_elects_replicates_survives_its_leaders_death_and_admits_a_node() {
    let mut cluster = TestCluster::start_secure(3, &[]);
    assert!(cluster.url(1).starts_with("https://"));
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let client = cluster.client_over(&[1, 2, 3]);
    client.put("tls/a", b"1", None).await.expect("put");
    for id in [1, 2, 3] {
        cluster.wait_for_value(id, "tls/a", b"1", WITHIN).await;
    }

    cluster.kill(leader);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let next = cluster.wait_for_leader(&rest, WITHIN).await;
    assert_ne!(next, leader);
    let client = cluster.client_over(&rest);
    client
        .put("tls/b", b"2", None)
        .await
        .expect("put after failover");

    cluster.start_joining(4, next);
    wait_until("node 4 to become a voter", WITHIN, || async {
        let view = cluster.inner().is_voter(next, 4).await?;
        view.then_some(())
    })
    .await;
    cluster.wait_for_value(4, "tls/b", b"2", WITHIN).await;
    let read = cluster
        .client(4)
        .get("tls/a", Consistency::Linearizable)
        .await
        .expect("linearizable read through the new node")
        .expect("the key");
    assert_eq!(read.value, b"1");

    cluster.spawn(leader);
    cluster.wait_for_value(leader, "tls/b", b"2", WITHIN).await;
}

/// How a forged request is sent, and what must come of it.
enum Stranger {
    /// Plain HTTP to the TLS port: no answer at all.
    PlainHttp,
    /// TLS, trusting the cluster CA, with no client certificate: 403.
    NoCertificate,
    /// A node certificate from another `kith init`: the handshake fails.
    OtherCluster,
    /// The certificate of a node removed from the membership: 403.
    RemovedMember,
}

/// One forged request to every peer route (and to an unknown `/internal` path), bodies
/// that would move a term if they were let through.
fn forged_requests(term: u64) -> Vec<(reqwest::Method, String, Vec<u8>)> {
    let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(term + 100, 2),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let vote: VoteRequest<u64> = VoteRequest {
        vote: Vote::new(term + 100, 2),
        last_log_id: Some(LogId::new(CommittedLeaderId::new(term + 100, 2), 1_000_000)),
    };
    let chunk = format!("{}/{}", route::CHUNKS, "00".repeat(32));
    let post = reqwest::Method::POST;
    vec![
        (
            post.clone(),
            route::APPEND.into(),
            postcard::to_allocvec(&append).expect("encode"),
        ),
        (
            post.clone(),
            route::VOTE.into(),
            postcard::to_allocvec(&vote).expect("encode"),
        ),
        (post.clone(), route::SNAPSHOT.into(), vec![0; 64]),
        (post.clone(), route::FORWARD.into(), vec![0; 64]),
        (
            post.clone(),
            route::FAULTS.into(),
            br#"{"drop_rate":1.0}"#.to_vec(),
        ),
        (post.clone(), route::HAVE.into(), vec![0; 64]),
        (reqwest::Method::PUT, chunk.clone(), vec![0; 64]),
        (reqwest::Method::GET, chunk, Vec::new()),
        (
            post.clone(),
            "/internal/dev/isolate".into(),
            br#"{"isolated":true}"#.to_vec(),
        ),
        (post, "/internal/no-such-route".into(), Vec::new()),
    ]
}

fn client(tls: Option<&TlsOptions>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(tls) = tls {
        let config = tls.client_config(&[b"http/1.1"]).expect("TLS config");
        builder = builder.tls_backend_preconfigured(config);
    }
    builder.build().expect("http client")
}

/// Every node's (term, leader), once all of `ids` answer.
async fn leadership(cluster: &TestCluster, ids: &[u64]) -> Vec<(u64, u64)> {
    let mut all = Vec::new();
    for id in ids {
        let h = wait_until("health", WITHIN, || cluster.health(*id)).await;
        all.push((
            h["term"].as_u64().expect("term"),
            h["leader_id"].as_u64().expect("leader"),
        ));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_on_every_peer_route_and_no_term_moves() {
    let mut cluster = TestCluster::start_secure(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    // A fourth member, then removed: its certificate is this cluster's, and no longer a
    // member's.
    cluster.start_joining(4, leader);
    wait_until("node 4 to become a voter", WITHIN, || async {
        cluster.inner().is_voter(leader, 4).await?.then_some(())
    })
    .await;
    // The join's promotion may still be finishing its joint configuration: retry until the
    // removal is accepted.
    wait_until("node 4's removal to be accepted", WITHIN, || async {
        cluster.inner().remove_member(leader, 4).await.ok()
    })
    .await;
    wait_until("node 4 to leave every view", WITHIN, || async {
        for id in [1, 2, 3] {
            let view: serde_json::Value = cluster
                .http()
                .get(format!("{}/v1/cluster", cluster.url(id)))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let members = view["members"].as_array()?;
            if members.iter().any(|m| m["id"] == 4) {
                return None;
            }
        }
        Some(())
    })
    .await;
    cluster.kill(4);

    let certs = cluster.inner().certs_dir().expect("certs");
    let other = tempfile::tempdir().expect("temp dir");
    kith_init(other.path(), &cluster.nodes()[0].addr());
    let trusting = TlsOptions::trusting(&certs.join("ca.crt")).expect("CA");
    let other_cert = trusting
        .clone()
        .presenting(
            &other.path().join("node-1/node.crt"),
            &other.path().join("node-1/node.key"),
        )
        .expect("other cluster's certificate");
    let removed = trusting
        .clone()
        .presenting(
            &certs.join("node-4/node.crt"),
            &certs.join("node-4/node.key"),
        )
        .expect("removed member's certificate");
    let strangers = [
        (Stranger::PlainHttp, client(None)),
        (Stranger::NoCertificate, client(Some(&trusting))),
        (Stranger::OtherCluster, client(Some(&other_cert))),
        (Stranger::RemovedMember, client(Some(&removed))),
    ];

    let before = leadership(&cluster, &[1, 2, 3]).await;
    let term = before[0].0;
    for id in [1, 2, 3] {
        let addr = cluster.nodes()[id as usize - 1].addr();
        for (stranger, http) in &strangers {
            for (method, path, body) in forged_requests(term) {
                let scheme = match stranger {
                    Stranger::PlainHttp => "http",
                    _ => "https",
                };
                let sent = http
                    .request(method.clone(), format!("{scheme}://{addr}{path}"))
                    .header("content-type", "application/x-kith-postcard")
                    .body(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match stranger {
                    Stranger::PlainHttp | Stranger::OtherCluster => assert!(
                        sent.is_err(),
                        "{method} {path} on node {id} was answered: {:?}",
                        sent.map(|r| r.status())
                    ),
                    Stranger::NoCertificate | Stranger::RemovedMember => {
                        let response = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                        assert_eq!(response.status(), 403, "{method} {path} on node {id}");
                        let body: serde_json::Value = response.json().await.expect("JSON error");
                        assert_eq!(body["error"]["code"], "not_a_member", "{method} {path}");
                    }
                }
            }
        }
    }

    assert_eq!(
        leadership(&cluster, &[1, 2, 3]).await,
        before,
        "a term or leader moved"
    );
    cluster
        .client_over(&[1, 2, 3])
        .put("tls/after", b"ok", None)
        .await
        .expect("the cluster still commits");
    assert_eq!(leadership(&cluster, &[1, 2, 3]).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kith_init_writes_keys_only_its_owner_can_read_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    kith_init(dir.path(), "127.0.0.1:7001");
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .expect(p)
            .permissions()
            .mode()
            & 0o777
    };
    for secret in ["ca.key", "admin.token", "node-1/node.key"] {
        assert_eq!(mode(secret), 0o600, "{secret}");
    }
    for public in ["ca.crt", "node-1/ca.crt", "node-1/node.crt"] {
        assert_eq!(mode(public), 0o644, "{public}");
    }
    let token = std::fs::read_to_string(dir.path().join("admin.token")).expect("token");
    let secret = token.trim().strip_prefix("admin.").expect("admin.SECRET");
    assert_eq!(secret.len(), 64, "256 bits in hex");

    let again = kith(
        &[
            "init",
            "--no-profile",
            "--nodes",
            "1=127.0.0.1:7001",
            "--out",
        ],
        dir.path(),
    );
    assert!(
        !again.status.success(),
        "a second init over the first must fail"
    );
    let added = kith(
        &["init", "add-node", "--node", "2=db-2.example:7002", "--out"],
        dir.path(),
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(mode("node-2/node.key"), 0o600);
    let twice = kith(
        &["init", "add-node", "--node", "2=127.0.0.1:7002", "--out"],
        dir.path(),
    );
    assert!(
        !twice.status.success(),
        "node 2's certificate must not be issued twice"
    );
}

fn kith(args: &[&str], out: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(args)
        .arg(out)
        .output()
        .expect("run kith")
}

/// `kith init --out DIR --nodes 1=ADDR`.
fn kith_init(out: &Path, addr: &str) {
    let node = format!("1={addr}");
    // The user's profile is not this test's business (and not the real home's).
    let done = kith(&["init", "--no-profile", "--nodes", &node, "--out"], out);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}
