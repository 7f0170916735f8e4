//! Tokens on a cluster with TLS: every public route decides (the route table is walked, so
//! none is left open by mistake), roles and prefixes allow exactly what they name, and a
//! revoked token fails on every node within a second.

use std::time::Duration;

use kith_api::access::Rule;
use kith_client::tls::TlsOptions;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);

/// A client that trusts the cluster CA and presents no token of its own.
pub(crate) fn bare_client(cluster: &TestCluster) -> reqwest::Client {
    let ca = cluster.inner().certs_dir().expect("certs").join("ca.crt");
    let tls = TlsOptions::trusting(&ca).expect("CA");
    kith_client::tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls.client_config(&[b"http/1.1"]).expect("TLS"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{*key}", "app/x")
        .replace("{*path}", "app/x")
        .replace("{room}", "team")
        .replace("{q}", "thumbs")
        .replace("{id}", "1")
        .replace("{action}", "complete")
        .replace("{token}", "0123")
        .replace("{name}", "style.css")
        .replace("{*call}", "Range")
}

/// Creates a token with the admin client; returns it.
async fn token(cluster: &TestCluster, request: Value) -> String {
    let admin = cluster.client_over(&[1, 2, 3]);
    let created = admin.create_token(&request).await.expect("create token");
    created["token"].as_str().expect("token").to_owned()
}

async fn status(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> StatusCode {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the node answers").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_decides_and_closed_routes_answer_401_without_a_token() {
    let cluster = TestCluster::start_secure(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let http = bare_client(&cluster);
    let monitor = token(&cluster, json!({"role": "monitor"})).await;
    let rules = kith_api::routes::rules();
    assert!(
        rules.len() >= 40,
        "the route table has {} routes",
        rules.len()
    );
    for (method, pattern, rule) in &rules {
        let url = format!("{}{}", cluster.url(1), concrete(pattern));
        let none = status(&http, method.clone(), url.clone(), None, None).await;
        let as_monitor = status(&http, method.clone(), url, Some(&monitor), None).await;
        match rule {
            Rule::Open => {
                assert_ne!(none, 401, "{method} {pattern} is open");
                assert_ne!(as_monitor, 403, "{method} {pattern} is open");
            }
            Rule::Monitor => {
                assert_eq!(none, 401, "{method} {pattern} without a token");
                // A 403 may only be the route's own (the playground's routes on a node
                // `kith dev` did not start), never the token check's.
                let url = format!("{}{}", cluster.url(1), concrete(pattern));
                let answer = http
                    .request(method.clone(), url)
                    .bearer_auth(&monitor)
                    .send()
                    .await
                    .expect("answer");
                let code = answer.status();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                assert!(
                    code != 401 && body["error"]["code"] != "forbidden",
                    "{method} {pattern} is the monitor role's: {code} {body}"
                );
                assert_ne!(as_monitor, 401);
            }
            // etcd's API checks the token itself, by the key range in the call's body
            // (etcd_api::etcd_calls_need_a_token_that_covers_their_keys): the route table
            // only has to let it through.
            Rule::Etcd => {
                let url = format!("{}{}", cluster.url(1), concrete(pattern));
                let answer = http
                    .request(method.clone(), url)
                    .send()
                    .await
                    .expect("answer");
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                assert_ne!(
                    body["error"]["code"], "undecided",
                    "{method} {pattern} has no access rule"
                );
            }
            _ => {
                assert_eq!(none, 401, "{method} {pattern} without a token");
                assert_eq!(as_monitor, 403, "{method} {pattern} as monitor");
            }
        }
    }
    // A token that is not one, and a secret that is not its token's.
    let url = format!("{}/v1/kv/app/x", cluster.url(1));
    assert_eq!(
        status(&http, Method::GET, url.clone(), Some("nonsense"), None).await,
        401
    );
    let (id, _) = monitor.split_once('.').expect("ID.SECRET");
    let forged = format!("{id}.{}", "0".repeat(32));
    assert_eq!(
        status(&http, Method::GET, url, Some(&forged), None).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_prefixes_allow_what_they_name_and_revocation_reaches_every_node() {
    let cluster = TestCluster::start_secure(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let http = bare_client(&cluster);
    let url = |path: &str| format!("{}{path}", cluster.url(leader));
    let read = token(&cluster, json!({"role": "read"})).await;
    let app = token(&cluster, json!({"role": "write", "prefixes": ["kv:app/"]})).await;
    let worker = token(
        &cluster,
        json!({"role": "worker", "prefixes": ["queues:thumbs"]}),
    )
    .await;

    // read: reads, never writes.
    assert_eq!(
        status(&http, Method::GET, url("/v1/kv/app/x"), Some(&read), None).await,
        404
    );
    let put = |key: &str| url(&format!("/v1/kv/{key}"));
    assert_eq!(
        status(&http, Method::PUT, put("app/x"), Some(&read), None).await,
        403
    );

    // write limited to kv:app/: app/x yes, other/x no, nothing of an administrator's.
    let client = reqwest::Client::clone(&http);
    let sent = client
        .put(put("app/x"))
        .bearer_auth(&app)
        .body("v")
        .send()
        .await
        .expect("answer");
    assert_eq!(sent.status(), 200);
    assert_eq!(
        status(&http, Method::PUT, put("other/x"), Some(&app), None).await,
        403
    );
    assert_eq!(
        status(&http, Method::DELETE, put("other/x"), Some(&app), None).await,
        403
    );
    let new_token = Some(json!({"role": "admin"}));
    assert_eq!(
        status(
            &http,
            Method::POST,
            url("/v1/tokens"),
            Some(&app),
            new_token
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &http,
            Method::DELETE,
            url("/v1/cluster/members/3"),
            Some(&app),
            None
        )
        .await,
        403
    );

    // worker on thumbs: claims and completes there, nothing else.
    let admin = cluster.client_over(&[1, 2, 3]);
    for queue in ["thumbs", "emails"] {
        admin
            .enqueue(queue, &json!({"payload": {"n": 1}}))
            .await
            .expect("enqueue");
    }
    let claimed = client
        .post(url("/v1/queues/thumbs/claim?wait=0"))
        .bearer_auth(&worker)
        .send()
        .await
        .expect("answer");
    assert_eq!(claimed.status(), 200);
    let job: Value = claimed.json().await.expect("job");
    let done = client
        .post(url(&format!("/v1/jobs/{}/complete", job["id"])))
        .bearer_auth(&worker)
        .json(&json!({"attempt": job["attempt"]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(done.status(), 200, "{:?}", done.text().await);
    let emails = url("/v1/queues/emails/claim?wait=0");
    assert_eq!(
        status(&http, Method::POST, emails, Some(&worker), None).await,
        403
    );
    assert_eq!(
        status(&http, Method::GET, put("app/x"), Some(&worker), None).await,
        403
    );
    let enqueue = Some(json!({"payload": 1}));
    let thumbs = url("/v1/queues/thumbs/jobs");
    assert_eq!(
        status(&http, Method::POST, thumbs, Some(&worker), enqueue).await,
        403
    );

    // Revoked: every node refuses it within a second of the revocation's answer.
    let (app_id, _) = app.split_once('.').expect("ID.SECRET");
    let revoked = admin.revoke_token(app_id).await.expect("revoke");
    assert_eq!(revoked["revoked"], true);
    for id in [1, 2, 3] {
        let url = format!("{}/v1/kv/app/x", cluster.url(id));
        wait_until(
            &format!("node {id} to refuse the revoked token"),
            Duration::from_secs(1),
            || async {
                let s = status(&http, Method::GET, url.clone(), Some(&app), None).await;
                (s == 401).then_some(())
            },
        )
        .await;
    }
    let listed = admin.tokens().await.expect("list");
    let listed = listed["tokens"].as_array().expect("tokens").clone();
    let app_record = listed.iter().find(|t| t["id"] == app_id).expect("listed");
    assert!(!app_record["revoked_ms"].is_null());
    assert!(listed
        .iter()
        .all(|t| t.get("hash").is_none() && t.get("token").is_none()));
}

/// `kith ARGS` with no connection settings in its environment, and `config` as the user's
/// configuration directory (so the real home is never touched).
fn kith_cli(args: &[&str], config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("HOME")
        .env_remove("KITH_PROFILE")
        .env_remove("KITH_ENDPOINTS")
        .env_remove("KITH_CA")
        .env_remove("KITH_TLS")
        .env_remove("KITH_TOKEN")
        .output()
        .expect("run kith")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_kith_init_writes_reaches_the_cluster_with_no_flags() {
    let cluster = TestCluster::start_secure(1, &[]);
    cluster.wait_for_leader(&[1], WITHIN).await;
    let certs = cluster.inner().certs_dir().expect("certs");
    let config = tempfile::tempdir().expect("temp dir");
    let user_profile = config.path().join("kith").join("profile.json");

    // A profile named explicitly must exist.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["kv", "get", "greeting", "--profile"])
        .arg(config.path().join("nowhere.json"))
        .output()
        .expect("run kith");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no profile at"));

    // The cluster's own profile, installed where the user's profile lives.
    std::fs::create_dir_all(user_profile.parent().unwrap()).expect("config dir");
    std::fs::copy(certs.join("profile.json"), &user_profile).expect("install the profile");
    let put = kith_cli(&["kv", "put", "greeting", "hello"], config.path());
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let got = kith_cli(&["kv", "get", "greeting"], config.path());
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "hello");

    // Any explicit connection setting turns the profile off entirely: its token is not
    // sent to endpoints it was not written for.
    let explicit = kith_cli(
        &[
            "kv",
            "get",
            "greeting",
            "--ca",
            certs.join("ca.crt").to_str().unwrap(),
            "--endpoints",
            &cluster.url(1),
        ],
        config.path(),
    );
    assert!(
        String::from_utf8_lossy(&explicit.stderr).contains("401"),
        "explicit endpoints without a token are refused: {}",
        String::from_utf8_lossy(&explicit.stderr)
    );

    // `kith init` writes the user's profile when there is none, and never replaces one.
    let fresh = tempfile::tempdir().expect("temp dir");
    let other_config = fresh.path().join("config");
    let out = fresh.path().join("cluster");
    let init_into = |dir: &std::path::Path, node: &str| {
        let out = dir.to_str().expect("a UTF-8 path");
        kith_cli(&["init", "--nodes", node, "--out", out], &other_config)
    };
    let init = init_into(&out, "1=127.0.0.1:7001");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let written = std::fs::read_to_string(other_config.join("kith").join("profile.json"))
        .expect("the user's profile");
    assert_eq!(
        written,
        std::fs::read_to_string(out.join("profile.json")).expect("DIR/profile.json")
    );
    let profile: Value = serde_json::from_str(&written).expect("JSON");
    assert_eq!(profile["endpoints"], json!(["https://127.0.0.1:7001"]));
    let second = fresh.path().join("second");
    let init = init_into(&second, "1=127.0.0.1:7002");
    assert!(init.status.success());
    assert_eq!(
        std::fs::read_to_string(other_config.join("kith").join("profile.json")).unwrap(),
        written,
        "an existing profile is kept"
    );
    assert!(String::from_utf8_lossy(&init.stdout).contains("kept the existing profile"));
}
