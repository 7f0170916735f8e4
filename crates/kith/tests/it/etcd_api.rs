//! etcd's own command-line client, Debian's `etcdctl` (package `etcd-client`), against a
//! three-node kith cluster: the calls real programs make, answered with etcd's meaning, on
//! the same keys and revisions kith's own API sees.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kith_client::Consistency;
use serde_json::Value;

use crate::harness::{wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);

/// Runs etcdctl against `endpoints` with `args` (and `stdin`), API version 3.
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl (Debian package etcd-client) is installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write etcdctl's stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("etcdctl ran")
}

/// etcdctl's stdout, after checking it succeeded.
fn ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn json(endpoints: &str, args: &[&str]) -> Value {
    let mut with = args.to_vec();
    with.extend(["-w", "json"]);
    serde_json::from_str(&ok(endpoints, &with)).expect("etcdctl's JSON")
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Node `id` as etcdctl's endpoints are usually written, HOST:PORT. (etcdctl 3.4's
/// `endpoint status` and `endpoint health` send an endpoint written as a URL as the HTTP/2
/// `:authority`, which kith's HTTP/2 server, hyper, refuses as malformed.)
fn endpoint(cluster: &TestCluster, id: u64) -> String {
    cluster.url(id).trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_a_kith_cluster() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // Every call through a follower: it forwards writes and reads through the read index.
    let ep = endpoint(&cluster, follower);
    let all = [1, 2, 3].map(|id| endpoint(&cluster, id)).join(",");

    // put and get; the key is the same key kith's own API sees, at the same revision.
    assert_eq!(ok(&ep, &["put", "app/a", "1"]).trim(), "OK");
    let put = json(&ep, &["put", "app/b", "2"]);
    let rev_b = put["header"]["revision"].as_i64().expect("revision");
    ok(&ep, &["put", "app/c", "3"]);
    ok(&ep, &["put", "other", "x"]);
    let kith = cluster.client(leader);
    let b = kith
        .get("app/b", Consistency::Linearizable)
        .await
        .expect("kith get")
        .expect("app/b through kith");
    assert_eq!((b.value.as_slice(), b.revision as i64), (&b"2"[..], rev_b));
    kith.put("app/d", b"4", None).await.expect("kith put");
    assert_eq!(ok(&ep, &["get", "app/d", "--print-value-only"]).trim(), "4");

    // get: prefix, limit, sort, keys-only, an earlier revision.
    let got = json(&ep, &["get", "app/", "--prefix"]);
    assert_eq!(got["count"], 4, "{got}");
    let keys: Vec<&str> = got["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [b64("app/a"), b64("app/b"), b64("app/c"), b64("app/d")]
    );
    let limited = json(&ep, &["get", "app/", "--prefix", "--limit", "2"]);
    assert_eq!(limited["kvs"].as_array().unwrap().len(), 2);
    assert_eq!(limited["more"], true);
    assert_eq!(limited["count"], 4);
    let newest = json(
        &ep,
        &[
            "get",
            "app/",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
            "--limit=1",
        ],
    );
    assert_eq!(newest["kvs"][0]["key"], b64("app/d"), "{newest}");
    let keys_only = ok(&ep, &["get", "app/", "--prefix", "--keys-only"]);
    assert_eq!(
        keys_only.split_whitespace().collect::<Vec<_>>(),
        ["app/a", "app/b", "app/c", "app/d"]
    );
    ok(&ep, &["put", "app/b", "22"]);
    let then = ok(
        &ep,
        &[
            "get",
            "app/b",
            "--print-value-only",
            &format!("--rev={rev_b}"),
        ],
    );
    assert_eq!(then.trim(), "2", "app/b as it was at revision {rev_b}");

    // del: one key with its previous value, then a prefix, in one revision.
    let del = json(&ep, &["del", "app/a", "--prev-kv"]);
    assert_eq!(del["deleted"], 1);
    assert_eq!(del["prev_kvs"][0]["value"], b64("1"));
    let before = json(&ep, &["get", "other"])["header"]["revision"]
        .as_i64()
        .unwrap();
    let gone = json(&ep, &["del", "app/", "--prefix"]);
    assert_eq!(gone["deleted"], 3, "{gone}");
    assert_eq!(
        gone["header"]["revision"].as_i64().unwrap(),
        before + 1,
        "a range delete is one revision"
    );
    assert_eq!(ok(&ep, &["get", "app/", "--prefix"]), "");

    // txn, scripted: compares, then the success and failure operations.
    ok(&ep, &["put", "lock", "free"]);
    let script = "value(\"lock\") = \"free\"\n\nput lock taken\nput owner me\n\nget lock\n\n";
    let out = etcdctl(&ep, &["txn", "-w", "json"], Some(script));
    let txn: Value = serde_json::from_slice(&out.stdout).expect("txn JSON");
    assert_eq!(txn["succeeded"], true, "{txn}");
    let again = etcdctl(&ep, &["txn", "-w", "json"], Some(script));
    let again: Value = serde_json::from_slice(&again.stdout).expect("txn JSON");
    // etcdctl leaves a false `succeeded` out of its JSON.
    assert_eq!(again["succeeded"].as_bool(), None, "{again}");
    let read = &again["responses"][0]["Response"]["ResponseRange"]["kvs"][0]["value"];
    assert_eq!(*read, b64("taken"), "{again}");
    assert_eq!(
        ok(&ep, &["get", "owner", "--print-value-only"]).trim(),
        "me"
    );

    // watch: a prefix from now while another client writes, and one from a revision with
    // previous values.
    let start = json(&ep, &["get", "lock"])["header"]["revision"]
        .as_i64()
        .unwrap();
    let (lines, watcher) = watch(&ep, &["watch", "jobs/", "--prefix", "--prev-kv"]);
    wait_until("the watch to be open", WITHIN, || async {
        (crate::harness::gauge(&cluster, follower, "streams").await? > 0).then_some(())
    })
    .await;
    kith.put("jobs/1", b"queued", None).await.expect("put");
    kith.put("jobs/1", b"running", None).await.expect("put");
    kith.delete("jobs/1", None).await.expect("delete");
    let seen = read_lines(&lines, 11);
    assert_eq!(
        seen,
        [
            "PUT", "jobs/1", "queued", "PUT", "jobs/1", "queued", "jobs/1", "running", "DELETE",
            "jobs/1", "running"
        ],
        "the watch's output"
    );
    drop(watcher);
    let (lines, watcher) = watch(&ep, &["watch", "lock", &format!("--rev={}", start - 2)]);
    let replay = read_lines(&lines, 3);
    assert_eq!(replay[0], "PUT");
    assert_eq!(replay[1], "lock");
    drop(watcher);

    // The cluster, as etcdctl shows it.
    let members = ok(&ep, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for id in 1..=3 {
        assert!(members.contains(&cluster.url(id)), "{members}");
    }
    let status = json(&all, &["endpoint", "status"]);
    let statuses = status.as_array().expect("one status per endpoint");
    assert_eq!(statuses.len(), 3);
    for s in statuses {
        assert_eq!(s["Status"]["leader"], leader, "{s}");
    }
    let health = etcdctl(&all, &["endpoint", "health"], None);
    assert!(health.status.success(), "{health:?}");
    let said = String::from_utf8_lossy(&health.stdout).to_string()
        + &String::from_utf8_lossy(&health.stderr);
    assert_eq!(said.matches("is healthy").count(), 3, "{said}");

    // Leases: keys attached to one live while it is kept alive, and go on every node at
    // one revision when it is revoked.
    let granted = ok(&ep, &["lease", "grant", "60"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease ID")
        .to_owned();
    ok(&ep, &["put", "svc/a", "up", &format!("--lease={lease}")]);
    ok(&ep, &["put", "svc/b", "up", &format!("--lease={lease}")]);
    let attached = json(&ep, &["get", "svc/a"]);
    assert_eq!(
        format!("{:016x}", attached["kvs"][0]["lease"].as_i64().unwrap()),
        lease,
        "{attached}"
    );
    let ttl = ok(&ep, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("granted with TTL(60s)"), "{ttl}");
    assert!(ttl.contains("svc/a") && ttl.contains("svc/b"), "{ttl}");
    let kept = ok(&ep, &["lease", "keep-alive", "--once", &lease]);
    assert!(kept.contains("keepalived with TTL(60)"), "{kept}");
    let before = json(&ep, &["get", "svc/a"])["header"]["revision"]
        .as_i64()
        .unwrap();
    assert!(ok(&ep, &["lease", "revoke", &lease]).contains("revoked"));
    for id in 1..=3 {
        let node = endpoint(&cluster, id);
        wait_until(&format!("svc/ gone on node {id}"), WITHIN, || async {
            let left = json(&node, &["get", "svc/", "--prefix", "--consistency=s"]);
            (left["kvs"].is_null() && left["header"]["revision"].as_i64()? == before + 1)
                .then_some(())
        })
        .await;
    }
    let gone = etcdctl(
        &ep,
        &["put", "svc/c", "up", &format!("--lease={lease}")],
        None,
    );
    assert!(!gone.status.success(), "a put on a revoked lease");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("requested lease not found"),
        "{gone:?}"
    );

    // What kith does not do is said, not faked.
    let add = etcdctl(
        &ep,
        &["member", "add", "n4", "--peer-urls=http://127.0.0.1:1"],
        None,
    );
    assert!(!add.status.success());
    assert!(
        String::from_utf8_lossy(&add.stderr).contains("Cluster.MemberAdd"),
        "{add:?}"
    );
}

/// A running `etcdctl watch`, killed when dropped.
struct Watcher(std::process::Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts etcdctl with `args`; its stdout's lines arrive on the receiver.
fn watch(endpoints: &str, args: &[&str]) -> (mpsc::Receiver<String>, Watcher) {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, Watcher(child))
}

/// The next `n` lines, each within the deadline.
fn read_lines(lines: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            lines
                .recv_timeout(WITHIN)
                .unwrap_or_else(|_| panic!("line {} of the watch did not come", i + 1))
        })
        .collect()
}

/// POSTs `body` to etcd's JSON gateway path `path` on node `id`.
async fn gateway(cluster: &TestCluster, id: u64, path: &str, body: Value) -> (u16, Value) {
    let answer = cluster
        .http()
        .post(format!("{}{path}", cluster.url(id)))
        .json(&body)
        .send()
        .await
        .expect("the gateway answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_json_gateway_serves_the_same_keys() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");

    let (status, put) = gateway(
        &cluster,
        follower,
        "/v3/kv/put",
        serde_json::json!({"key": b64("svc/a"), "value": b64("up")}),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    // 64-bit integers are strings in proto3's JSON, as etcd's gateway writes them.
    let revision: u64 = put["header"]["revision"]
        .as_str()
        .expect("a string revision")
        .parse()
        .unwrap();
    let kith = cluster.client(leader);
    let got = kith
        .get("svc/a", Consistency::Linearizable)
        .await
        .expect("get")
        .expect("the key");
    assert_eq!((got.value.as_slice(), got.revision), (&b"up"[..], revision));

    let (_, range) = gateway(
        &cluster,
        follower,
        "/v3/kv/range",
        serde_json::json!({"key": b64("svc/"), "range_end": b64("svc0")}),
    )
    .await;
    assert_eq!(range["count"], "1", "{range}");
    assert_eq!(range["kvs"][0]["value"], b64("up"));

    // A compare-and-set through /v3/kv/txn.
    let cas = |expect: &str| {
        serde_json::json!({
            "compare": [{"key": b64("svc/a"), "result": "EQUAL", "target": "VALUE", "value": b64(expect)}],
            "success": [{"request_put": {"key": b64("svc/a"), "value": b64("down")}}],
        })
    };
    let (_, won) = gateway(&cluster, follower, "/v3/kv/txn", cas("up")).await;
    assert_eq!(won["succeeded"], true, "{won}");
    let (_, lost) = gateway(&cluster, follower, "/v3/kv/txn", cas("up")).await;
    assert_eq!(lost["succeeded"].as_bool(), None, "{lost}");

    // /v3/watch streams JSON lines from the revision asked for.
    let watch = cluster
        .http()
        .post(format!("{}/v3/watch", cluster.url(follower)))
        .json(&serde_json::json!({"create_request": {
            "key": b64("svc/a"), "start_revision": revision.to_string()}}))
        .send()
        .await
        .expect("watch");
    let mut body = watch.bytes_stream();
    let mut text = String::new();
    let events = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .flat_map(|v| {
                v["result"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|e| e["kv"]["value"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    while events(&text).len() < 2 {
        let piece = tokio::time::timeout(WITHIN, futures::StreamExt::next(&mut body))
            .await
            .expect("the gateway's watch sends its events")
            .expect("the stream goes on")
            .expect("a piece");
        text.push_str(&String::from_utf8_lossy(&piece));
    }
    let values = events(&text);
    assert_eq!(values, [b64("up"), b64("down")]);

    let (_, members) = gateway(
        &cluster,
        follower,
        "/v3/cluster/member/list",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );
    let version: Value = cluster
        .http()
        .get(format!("{}/version", cluster.url(follower)))
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("JSON");
    assert!(version["etcdserver"].is_string(), "{version}");

    // Bad input is a 400 with etcd's error body; leases work here too.
    let (status, bad) = gateway(
        &cluster,
        follower,
        "/v3/kv/range",
        serde_json::json!({"key": 7}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["code"], 3);
    let huge = serde_json::json!({"key": b64("k"), "value": "A".repeat(5 << 20)});
    let (status, refused) = gateway(&cluster, follower, "/v3/kv/put", huge).await;
    assert_eq!(status, 413, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("limit"),
        "{refused}"
    );
    let (status, lease) = gateway(
        &cluster,
        follower,
        "/v3/lease/grant",
        serde_json::json!({"TTL": "30"}),
    )
    .await;
    assert_eq!(status, 200, "{lease}");
    let (_, kept) = gateway(
        &cluster,
        follower,
        "/v3/lease/keepalive",
        serde_json::json!({"ID": lease["ID"]}),
    )
    .await;
    assert_eq!(kept["result"]["TTL"], "30", "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_calls_need_a_token_that_covers_their_keys() {
    let cluster = TestCluster::start_secure(1, &[]);
    cluster.wait_for_leader(&[1], WITHIN).await;
    let certs = cluster
        .inner()
        .certs_dir()
        .expect("the cluster's certificates");
    let ca = certs.join("ca.crt");
    let admin = std::fs::read_to_string(certs.join("admin.token")).expect("admin.token");
    let admin = admin.trim();
    let ep = endpoint(&cluster, 1).replace("https://", "");
    let cacert = format!("--cacert={}", ca.display());
    let as_user = |token: &str| format!("--user=someone:{token}");

    // No token: refused, as etcd refuses a client that did not authenticate.
    let out = etcdctl(&ep, &[&cacert, "put", "app/a", "1"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user name is empty"),
        "{out:?}"
    );
    // The admin token as the password: everything.
    assert_eq!(
        ok(&ep, &[&cacert, &as_user(admin), "put", "app/a", "1"]).trim(),
        "OK"
    );
    ok(&ep, &[&cacert, &as_user(admin), "put", "pub/x", "2"]);
    let wrong = etcdctl(
        &ep,
        &[&cacert, &as_user("x.nonsense"), "get", "app/a"],
        None,
    );
    assert!(!wrong.status.success(), "{wrong:?}");

    // A read token limited to kv:pub/ reads pub/ and nothing else, and writes nothing.
    let reader = cluster
        .client(1)
        .create_token(&serde_json::json!({"role": "read", "prefixes": ["kv:pub/"]}))
        .await
        .expect("create a token");
    let reader = reader["token"].as_str().expect("token").to_owned();
    assert_eq!(
        ok(
            &ep,
            &[
                &cacert,
                &as_user(&reader),
                "get",
                "pub/x",
                "--print-value-only"
            ]
        )
        .trim(),
        "2"
    );
    for args in [
        vec!["get", "app/a"],
        vec!["put", "pub/x", "3"],
        vec!["get", "", "--prefix"],
    ] {
        let mut all = vec![cacert.as_str()];
        let user = as_user(&reader);
        all.push(&user);
        all.extend(args.iter().copied());
        let out = etcdctl(&ep, &all, None);
        assert!(!out.status.success(), "{args:?} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("permission denied"),
            "{args:?}: {out:?}"
        );
    }

    // The gateway takes the token in Authorization.
    let range = serde_json::json!({"key": b64("app/a")});
    let url = format!("{}/v3/kv/range", cluster.url(1));
    let bare = crate::auth::bare_client(&cluster);
    let without = bare.post(&url).json(&range).send().await.expect("answer");
    assert_eq!(without.status().as_u16(), 401);
    let with = bare
        .post(&url)
        .header("authorization", admin)
        .json(&range)
        .send()
        .await
        .expect("answer");
    assert_eq!(with.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiths_own_watch_sees_every_change_of_an_etcd_transaction() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], WITHIN).await;
    let ep = endpoint(&cluster, 1);
    for key in ["multi/a", "multi/b", "multi/c"] {
        ok(&ep, &["put", key, "1"]);
    }
    let before = json(&ep, &["get", "multi/a"])["header"]["revision"]
        .as_u64()
        .unwrap();
    let gone = json(&ep, &["del", "multi/", "--prefix"]);
    assert_eq!(gone["deleted"], 3);
    // Three deletes at one revision, each delivered once, to kith's own watch API.
    let client = cluster.client(1);
    let mut seen = Vec::new();
    tokio::time::timeout(
        WITHIN,
        client.watch("multi/", Some(before + 1), |e| {
            seen.push((e.revision, e.kind.clone(), e.key.clone()));
            if seen.len() == 3 {
                kith_client::WatchControl::Stop
            } else {
                kith_client::WatchControl::Continue
            }
        }),
    )
    .await
    .expect("the watch sees the deletes")
    .expect("watch");
    let delete = |key: &str| (before + 1, "delete".to_owned(), key.to_owned());
    assert_eq!(
        seen,
        [delete("multi/a"), delete("multi/b"), delete("multi/c")]
    );
}
