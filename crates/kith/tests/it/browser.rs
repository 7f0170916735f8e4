//! The web UI in a real browser: two people chat through two different nodes, one node is
//! killed, and the conversation carries on with nothing lost or repeated. Also takes a
//! screenshot of the dashboard (kept under `target/artifacts/`, path printed in the log).
//!
//! Drives Debian's `chromium` through `chromedriver` (WebDriver, via fantoccini). `.ci/run`
//! installs both; without them this test fails loudly rather than pretending to pass.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::{free_port, wait_until, TestCluster};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, and the URL it listens on; killed when dropped.
pub(crate) struct Driver {
    process: Child,
    pub(crate) url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Attempts at starting chromedriver: the port it is given was free a moment before, but
/// an outgoing connection of any process may take it meanwhile, and chromedriver then
/// exits at once.
const DRIVER_ATTEMPTS_MAX: usize = 5;

/// Starts chromedriver on a free port and waits until it is ready, again on another port
/// if it exits.
pub(crate) async fn start_driver() -> Driver {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
        );
    }
    kith_client::tls::install_default_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http");
    for _ in 0..DRIVER_ATTEMPTS_MAX {
        let port = free_port();
        let process = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut driver = Driver {
            process,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready, or exited (`None`); several browser tests start drivers at once on a
        // loaded 2-core machine, hence the long bound.
        let ready = wait_until(
            "chromedriver to be ready or gone",
            Duration::from_secs(60),
            || {
                let exited = driver.process.try_wait().ok().flatten().is_some();
                let status = http.get(format!("{}/status", driver.url)).send();
                async move {
                    if exited {
                        return Some(false);
                    }
                    let status: Value = status.await.ok()?.json().await.ok()?;
                    (status["value"]["ready"] == true).then_some(true)
                }
            },
        )
        .await;
        if ready {
            return driver;
        }
    }
    panic!("chromedriver exited {DRIVER_ATTEMPTS_MAX} times before it was ready");
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    browser_with(driver, profile, &[]).await
}

/// A browser session with more command-line arguments.
async fn browser_with(driver: &Driver, profile: &std::path::Path, extra: &[&str]) -> Client {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": args,
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("start a browser session")
}

/// The text of the element with `id`, if the page has it.
async fn text_of(page: &Client, id: &str) -> Option<String> {
    page.find(Locator::Id(id)).await.ok()?.text().await.ok()
}

/// The messages a page shows: (seq, text), in display order.
async fn shown(page: &Client) -> Vec<(u64, String)> {
    let rows = page
        .execute(
            "return [...document.querySelectorAll('#log li[data-seq]')]
                .map(li => [Number(li.dataset.seq), li.querySelector('.text').textContent]);",
            vec![],
        )
        .await
        .expect("read the message log");
    serde_json::from_value(rows).expect("rows")
}

async fn wait_for_text(page: &Client, who: &str, text: &str) {
    wait_until(
        &format!("{who} to see '{text}'"),
        Duration::from_secs(30),
        || async {
            shown(page)
                .await
                .iter()
                .any(|(_, t)| t == text)
                .then_some(())
        },
    )
    .await;
}

async fn say(page: &Client, text: &str) {
    let input = page.find(Locator::Id("text")).await.expect("message box");
    input.send_keys(text).await.expect("type");
    page.find(Locator::Id("send"))
        .await
        .expect("send button")
        .click()
        .await
        .expect("click send");
}

async fn open_chat(page: &Client, base: &str, name: &str) {
    page.goto(&format!("{base}/chat?room=browser"))
        .await
        .expect("open chat");
    let field = page
        .wait()
        .for_element(Locator::Id("name"))
        .await
        .expect("name field");
    field.send_keys(name).await.expect("type name");
    wait_until("the page to connect", Duration::from_secs(20), || async {
        let status = text_of(page, "connection").await?;
        status.starts_with("connected to").then_some(status)
    })
    .await;
}

/// Console errors the page logged (chromedriver's browser log).
async fn console_errors(driver: &Driver, page: &Client) -> Vec<String> {
    let session = page.session_id().await.ok().flatten().expect("session id");
    kith_client::tls::install_default_provider();
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let logs: Value = http
        .post(format!("{}/session/{session}/se/log", driver.url))
        .json(&json!({"type": "browser"}))
        .send()
        .await
        .expect("read browser log")
        .json()
        .await
        .expect("log json");
    logs["value"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                // Requests to the node this test killed fail by design.
                .filter(|m| !m.contains("net::ERR_CONNECTION_REFUSED"))
                .collect()
        })
        .unwrap_or_default()
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir.canonicalize().expect("artifacts dir path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_through_a_node_failure_and_the_dashboard_renders() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let driver = start_driver().await;
    let profiles = tempfile::TempDir::new().expect("profiles");
    let alice = browser(&driver, &profiles.path().join("alice")).await;
    let bob = browser(&driver, &profiles.path().join("bob")).await;

    open_chat(&alice, &cluster.url(1), "alice").await;
    open_chat(&bob, &cluster.url(2), "bob").await;
    say(&alice, "hello from alice").await;
    wait_for_text(&bob, "bob", "hello from alice").await;
    say(&bob, "hi alice").await;
    wait_for_text(&alice, "alice", "hi alice").await;

    // Alice's node dies; her page must find another member and carry on.
    cluster.kill(1);
    let alice_node = wait_until(
        "alice to reconnect elsewhere",
        Duration::from_secs(30),
        || async {
            let status = text_of(&alice, "connection").await?;
            (status.starts_with("connected to") && !status.contains(&cluster.url(1)[7..]))
                .then_some(status)
        },
    )
    .await;
    println!("alice is now {alice_node}");
    say(&bob, "are you still there?").await;
    wait_for_text(&alice, "alice", "are you still there?").await;
    say(&alice, "yes, through another node").await;
    wait_for_text(&bob, "bob", "yes, through another node").await;

    let a = shown(&alice).await;
    let b = shown(&bob).await;
    assert_eq!(a, b, "both pages show the same conversation");
    let seqs: Vec<u64> = a.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "dense, ordered, no repeats"
    );
    let texts: Vec<&str> = a.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "hello from alice",
            "hi alice",
            "are you still there?",
            "yes, through another node"
        ]
    );
    assert_eq!(console_errors(&driver, &bob).await, Vec::<String>::new());

    // The dashboard, as a person would see it.
    bob.goto(&format!("{}/", cluster.url(2)))
        .await
        .expect("open dashboard");
    wait_until(
        "the dashboard to show the members",
        Duration::from_secs(20),
        || async {
            let cards = bob.find_all(Locator::Css("article.member")).await.ok()?;
            let leader = bob
                .find(Locator::Id("s-leader"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (cards.len() == 3 && leader.starts_with("node")).then_some(())
        },
    )
    .await;
    let down = bob
        .find_all(Locator::Css("article.member.down"))
        .await
        .expect("cards");
    assert_eq!(down.len(), 1, "the killed node shows as down");
    // Each link's state: the leader has sent to both others since the kill, so its card
    // shows its link to the killed node down.
    wait_until(
        "the dashboard to show a link down",
        Duration::from_secs(20),
        || async {
            let links = bob
                .find_all(Locator::Css("article.member .link.down"))
                .await
                .ok()?;
            (!links.is_empty()).then_some(())
        },
    )
    .await;
    let png = bob.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join("dashboard.png");
    std::fs::write(&path, png).expect("save screenshot");
    println!("dashboard screenshot: {}", path.display());
    assert_eq!(console_errors(&driver, &bob).await, Vec::<String>::new());

    // The jobs page shows a queue and its dead letters.
    let client = cluster.client_over(&[2, 3]);
    let dead = client
        .enqueue("web", &json!({"payload": {"n": 1}, "max_attempts": 1}))
        .await
        .expect("enqueue");
    let claimed = client
        .claim("web", 30, 5, "browser-test")
        .await
        .expect("claim")
        .expect("job");
    client
        .report(
            dead,
            "fail",
            claimed.attempt,
            json!({"error": "on purpose"}),
        )
        .await
        .expect("fail");
    bob.goto(&format!("{}/jobs", cluster.url(2)))
        .await
        .expect("open jobs page");
    wait_until(
        "the jobs page to list the dead job",
        Duration::from_secs(20),
        || async {
            let text = text_of(&bob, "dead").await?;
            text.contains("on purpose").then_some(())
        },
    )
    .await;
    let queues = bob
        .find(Locator::Id("queues"))
        .await
        .expect("queues")
        .text()
        .await
        .expect("text");
    assert!(queues.contains("web"), "{queues}");
    assert_eq!(console_errors(&driver, &bob).await, Vec::<String>::new());

    alice.close().await.expect("close alice");
    bob.close().await.expect("close bob");
}

/// The files page: a file picked in the page's file input is uploaded (with progress),
/// listed, downloads byte for byte, shows where its chunk lives, gets a share link that
/// works on another node, and is deleted; the page logs no console error. Screenshot:
/// `target/artifacts/files.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_page_uploads_lists_downloads_shares_and_deletes() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let driver = start_driver().await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let page = browser(&driver, &dir.path().join("profile")).await;
    let content = "kith files page test — hello from the browser\n".repeat(50);
    let local = dir.path().join("hello-files.txt");
    std::fs::write(&local, &content).expect("write the local file");

    page.goto(&format!("{}/files", cluster.url(2)))
        .await
        .expect("open the files page");
    wait_until("the page to connect", Duration::from_secs(30), || async {
        let status = text_of(&page, "connection").await?;
        status.starts_with("connected to").then_some(status)
    })
    .await;
    page.find(Locator::Id("upload-prefix"))
        .await
        .expect("folder field")
        .send_keys("web")
        .await
        .expect("type the folder");
    page.find(Locator::Id("file-input"))
        .await
        .expect("file input")
        .send_keys(local.to_str().expect("utf-8 path"))
        .await
        .expect("pick the file");
    let row = r#"#files tr[data-path="web/hello-files.txt"]"#;
    wait_until(
        "the upload to finish and be listed",
        Duration::from_secs(30),
        || async {
            let status = text_of(&page, "upload-status").await?;
            let listed = page.find(Locator::Css(row)).await.is_ok();
            (status.starts_with("stored web/hello-files.txt") && listed).then_some(())
        },
    )
    .await;

    // Download through the row's link, as the page would.
    let script = format!(
        "const a = document.querySelector('{row} a.download');
         return fetch(a.href).then(r => r.text());"
    );
    let fetched = page
        .execute(&script, vec![])
        .await
        .expect("fetch the download");
    assert_eq!(fetched.as_str(), Some(content.as_str()));

    // Where: one chunk, held by the three nodes it should be on.
    page.find(Locator::Css(&format!("{row} button[aria-label^='Where']")))
        .await
        .expect("where button")
        .click()
        .await
        .expect("click where");
    let placement = wait_until("the placement table", Duration::from_secs(20), || async {
        let text = text_of(&page, "placement").await?;
        text.contains("node 1").then_some(text)
    })
    .await;
    assert!(placement.contains("ok"), "{placement}");
    assert_eq!(
        page.find_all(Locator::Css("#placement tr[data-chunk]"))
            .await
            .expect("rows")
            .len(),
        1
    );

    // Share: the link downloads from another node, without the page.
    page.find(Locator::Css(&format!("{row} button[aria-label^='Share']")))
        .await
        .expect("share button")
        .click()
        .await
        .expect("click share");
    let png = page.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join("files.png");
    std::fs::write(&path, png).expect("save screenshot");
    println!("files page screenshot: {}", path.display());
    let link = wait_until("the share link", Duration::from_secs(20), || async {
        let value = page
            .find(Locator::Id("share-link"))
            .await
            .ok()?
            .prop("value")
            .await
            .ok()??;
        value.contains("/s/").then_some(value)
    })
    .await;
    let token = link.rsplit('/').next().expect("token");
    let shared = cluster
        .http()
        .get(format!("{}/s/{token}", cluster.url(3)))
        .send()
        .await
        .expect("GET the share link");
    assert_eq!(shared.status(), 200);
    assert_eq!(shared.text().await.expect("body"), content);
    page.find(Locator::Id("copy-link"))
        .await
        .expect("copy button")
        .click()
        .await
        .expect("click copy");

    // Delete takes a second click to confirm; then the row is gone.
    for _ in 0..2 {
        page.find(Locator::Css(&format!("{row} button[aria-label^='Delete']")))
            .await
            .expect("delete button")
            .click()
            .await
            .expect("click delete");
    }
    wait_until("the row to disappear", Duration::from_secs(20), || async {
        page.find(Locator::Css(row)).await.is_err().then_some(())
    })
    .await;
    let client = cluster.client(1);
    assert_eq!(
        client.stat_file("web/hello-files.txt").await.expect("stat"),
        None
    );
    assert_eq!(console_errors(&driver, &page).await, Vec::<String>::new());
    page.close().await.expect("close the browser");
}

/// A page on another origin that tries to make the node act with the visitor's login
/// cookie: a simple cross-site POST (no preflight), a preflighted JSON POST, and a form.
const FOREIGN_PAGE: &str = r#"<!doctype html><html><body><p id="state">working</p>
<form id="f" method="POST" action="NODE/v1/rooms/browser/messages" enctype="text/plain">
<input name='{"author":"x","text":"csrf-form","pad":"' value='"}'></form>
<script>
(async () => {
  const target = "NODE/v1/rooms/browser/messages";
  const body = JSON.stringify({ author: "x", text: "csrf-simple" });
  try { await fetch(target, { method: "POST", mode: "no-cors", credentials: "include",
    headers: { "content-type": "text/plain" }, body }); } catch (e) {}
  let preflight = "refused";
  try {
    await fetch(target, { method: "POST", credentials: "include",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ author: "x", text: "csrf-json" }) });
    preflight = "granted";
  } catch (e) {}
  document.getElementById("state").textContent = "done " + preflight;
  document.getElementById("f").submit();
})();
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_with_a_token_chats_and_a_foreign_page_cannot_act() {
    let cluster = TestCluster::start_secure(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let base = cluster.url(1);
    let token = cluster
        .inner()
        .client_token()
        .expect("admin token")
        .to_owned();
    let driver = start_driver().await;
    let dir = tempfile::tempdir().expect("profile dir");
    // The cluster's CA is its own; this test trusts it the way a person accepts it once.
    let page = browser_with(
        &driver,
        &dir.path().join("p"),
        &["--ignore-certificate-errors"],
    )
    .await;

    // Without a token the pages send the visitor to the login page.
    page.goto(&format!("{base}/"))
        .await
        .expect("open dashboard");
    wait_until("the login page", Duration::from_secs(20), || async {
        let url = page.current_url().await.ok()?;
        (url.path() == "/login").then_some(())
    })
    .await;
    // The one-click link `kith dev --secure` prints: the token in the fragment.
    page.goto(&format!("{base}/login#token={token}"))
        .await
        .expect("open login link");
    wait_until(
        "the dashboard after login",
        Duration::from_secs(20),
        || async {
            let leader = text_of(&page, "s-leader").await?;
            leader.starts_with("node").then_some(())
        },
    )
    .await;
    open_chat(&page, &base, "ada").await;
    say(&page, "logged in").await;
    wait_for_text(&page, "ada", "logged in").await;

    // A foreign page (another origin, same browser, same cookie jar) cannot post.
    let foreign = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let foreign_url = format!("http://{}", foreign.local_addr().expect("addr"));
    let html = FOREIGN_PAGE.replace("NODE", &base);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(foreign, app).await });
    page.goto(&format!("{foreign_url}/"))
        .await
        .expect("open foreign page");
    wait_until(
        "the foreign page to finish",
        Duration::from_secs(20),
        || async {
            let state = text_of(&page, "state").await;
            // The form's submission navigates away, which also means its scripts are done.
            match state {
                Some(s) if s.starts_with("done") => {
                    assert_eq!(s, "done refused", "the preflight must get no CORS grant");
                    Some(())
                }
                Some(_) => None,
                None => Some(()),
            }
        },
    )
    .await;
    // Give the form's POST its answer: wait until the browser has left the foreign page.
    wait_until(
        "the form to be answered",
        Duration::from_secs(20),
        || async {
            let url = page.current_url().await.ok()?;
            (url.as_str().starts_with(&base)).then_some(())
        },
    )
    .await;
    server.abort();
    let history = cluster
        .client(1)
        .history("browser", 0, 100, kith_client::Consistency::Linearizable)
        .await
        .expect("history");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["logged in"], "a foreign page made the node act");

    // The same without a browser: the cookie from another origin is refused, and a
    // preflight from it gets no grant.
    let ca = cluster.inner().certs_dir().expect("certs").join("ca.crt");
    let tls = kith_client::tls::TlsOptions::trusting(&ca).expect("CA");
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls.client_config(&[b"http/1.1"]).expect("TLS"))
        .build()
        .expect("client");
    let forged = http
        .post(format!("{base}/v1/rooms/browser/messages"))
        .header("cookie", format!("kith_token={token}"))
        .header("origin", &foreign_url)
        .json(&json!({"author": "x", "text": "csrf-direct"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(forged.status(), 403);
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/rooms/browser/messages"),
        )
        .header("origin", &foreign_url)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("answer");
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // The node's own origin is granted (its pages fail over to the other members).
    let own = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/rooms/browser/messages"),
        )
        .header("origin", &base)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        own.headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(base.as_bytes())
    );
}
