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
fn bare_client(cluster: &TestCluster) -> reqwest::Client {
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
