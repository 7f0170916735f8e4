//! The lessons page in a real browser, on a real `kith dev` cluster: each lesson's button runs
//! its experiment and the page shows evidence this test checks against the cluster itself:
//! messages forwarded on a follower's link; a new leader after the kill and 0 acknowledged
//! writes lost; lag 0 after a cut-off node is healed; every node committing the page's writes
//! with logs that agree; every node serving its share of a burst of reads, and `kith dev`'s
//! workers sharing a burst of jobs; a 64-tile puzzle solved by one worker, then faster by
//! three real worker processes, each tile coloured by its maker; a file downloaded
//! intact with one of its three holders dead; the tampered replica named; four voters after a
//! node is added. A node not started by `kith dev` has no lessons. Screenshots kept as
//! `target/artifacts/learn.png` and `learn-puzzle.png`.
//!
//! Drives Debian's `chromium` through `chromedriver` (WebDriver, via fantoccini), like
//! `browser.rs`; without them this test fails loudly rather than pretending to pass.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::browser::{start_driver, Driver};
use crate::harness::{children_of, free_port_run, wait_until, TestCluster};

const CHROMIUM: &str = "/usr/bin/chromium";
const LESSON_TIMEOUT: Duration = Duration::from_secs(150);

/// A child process killed (with its process group's nodes following, `--exit-with-parent`)
/// when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kith dev` with three nodes; returns it and node 1's URL once it says it is up.
fn start_dev(data: &std::path::Path) -> (Reaped, u16) {
    // Three nodes and the one the scale lesson adds.
    let base = free_port_run(4);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["dev", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kith dev");
    let stdout = child.stdout.take().expect("stdout");
    let dev = Reaped(child);
    // Reading blocks; `kith dev` bounds its own startup and exits on failure, which ends
    // this loop too.
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read kith dev output");
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C stops the cluster") {
            break;
        }
    }
    assert!(
        printed.contains("(leader)"),
        "kith dev is not up:\n{printed}"
    );
    (dev, base)
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,4200",
                format!("--user-data-dir={}", profile.display()),
            ],
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

fn http() -> reqwest::Client {
    kith_client::tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Console errors the page logged, except the failures a lesson causes on purpose.
async fn console_errors(driver: &Driver, page: &Client) -> Vec<String> {
    let session = page.session_id().await.ok().flatten().expect("session id");
    let logs: Value = http()
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
                .filter(|m| !m.contains("net::ERR_CONNECTION_REFUSED"))
                // While no node leads, the fault lesson's writes are refused (503) and not
                // counted: that refusal is what the lesson shows.
                .filter(|m| !(m.contains("/v1/kv/learn/fault/") && m.contains("status of 503")))
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

/// The evidence a lesson left on the page once it is over: its `data-*` fields and text.
async fn evidence(page: &Client, lesson: &str) -> (Value, String) {
    wait_until(
        &format!("the {lesson} lesson to finish"),
        LESSON_TIMEOUT,
        || async {
            let found = page
                .execute(
                    "const e = document.getElementById(arguments[0]);
                     return e && e.dataset.done
                       ? [Object.assign({}, e.dataset), e.innerText] : null;",
                    vec![json!(format!("{lesson}-evidence"))],
                )
                .await
                .ok()?;
            let (data, text): (Value, String) = serde_json::from_value(found).ok()?;
            Some((data, text))
        },
    )
    .await
}

/// Presses a lesson's button and returns its evidence.
async fn run_lesson(page: &Client, lesson: &str) -> (Value, String) {
    page.find(Locator::Id(&format!("run-{lesson}")))
        .await
        .expect("the lesson's button")
        .click()
        .await
        .expect("press the button");
    evidence(page, lesson).await
}

async fn get_json(url: &str) -> Option<Value> {
    http().get(url).send().await.ok()?.json().await.ok()
}

fn number(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{v} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lesson_runs_on_kith_dev_and_shows_its_evidence() {
    let data = tempfile::TempDir::new().expect("data dir");
    let (dev, base) = start_dev(data.path());
    let node = |id: u64| format!("http://127.0.0.1:{}", u64::from(base) + id - 1);
    let driver = start_driver().await;
    let profile = tempfile::TempDir::new().expect("profile");
    let page = browser(&driver, profile.path()).await;

    // The dashboard of a `kith dev` node links to the lessons.
    page.goto(&node(1)).await.expect("open the dashboard");
    let link = page
        .wait()
        .for_element(Locator::Css("#learn-link:not([hidden])"))
        .await
        .expect("the dashboard links to the lessons");
    // Its numbers explain themselves too.
    let explained = page
        .find_all(Locator::Css("#summary details.why, #members details.why"))
        .await
        .expect("the dashboard's ?s");
    assert!(explained.len() >= 6, "every summary number has a ?");
    link.click().await.expect("follow the link");
    wait_until(
        "the lessons to show the cluster",
        Duration::from_secs(20),
        || async {
            let rows = page
                .find_all(Locator::Css("#now-body tr[data-node]"))
                .await
                .ok()?;
            (rows.len() == 3).then_some(())
        },
    )
    .await;
    assert_eq!(page.current_url().await.expect("url").path(), "/learn");

    // Every number's "?" opens plain words.
    page.find(Locator::Css("#now-head details.why summary"))
        .await
        .expect("a ? beside the first number")
        .click()
        .await
        .expect("open the explanation");
    let explained = page
        .find(Locator::Css("#now-head details.why[open] .explain"))
        .await
        .expect("the explanation opens");
    assert!(!explained.text().await.expect("text").is_empty());
    page.find(Locator::Css("#now-head details.why[open] summary"))
        .await
        .expect("the open ?")
        .click()
        .await
        .expect("close the explanation");

    // Communication: the page listens, then writes through a follower; the follower's link
    // to the leader carries the forwarded writes and the map draws every link's rate.
    let (talk, text) = run_lesson(&page, "talk").await;
    assert_eq!(talk["done"], "ok", "the lesson failed: {text}");
    assert_eq!(talk["acked"], "40", "{text}");
    assert!(number(&talk["forwarded"]) > 0, "{text}");
    assert_ne!(talk["busy"], "0.0", "{text}");
    let wires = page
        .find_all(Locator::Css("#talk-map line[data-rate]"))
        .await
        .expect("the map's links");
    assert_eq!(wires.len(), 6, "three nodes, two directions per pair");
    // The same messages by kind: heartbeats at rest, entries while writing, and per link a
    // row of rates by kind.
    assert_ne!(talk["restHeartbeats"], "0.0", "{text}");
    assert_ne!(talk["busyAppends"], "0.0", "{text}");
    let kinds: Value = page
        .execute(
            "return [...document.querySelectorAll('#talk-kinds tr[data-link]')].map((r) =>
               [r.dataset.link, r.querySelectorAll('td[data-kind]').length,
                r.querySelector('td[data-kind=heartbeats]').textContent]);",
            vec![],
        )
        .await
        .expect("the table of kinds");
    let kinds = kinds.as_array().expect("rows");
    assert_eq!(kinds.len(), 6, "a row per link: {kinds:?}");
    assert!(
        kinds.iter().all(|r| r[1] == 7),
        "seven kinds per link: {kinds:?}"
    );
    let leader = number(&talk["leader"]);
    let beating = kinds
        .iter()
        .filter(|r| {
            r[0].as_str()
                .is_some_and(|l| l.starts_with(&format!("{leader}>")))
                && r[2]
                    .as_str()
                    .is_some_and(|t| t.ends_with("/s") && t != "0.0/s")
        })
        .count();
    assert_eq!(beating, 2, "the leader's links carry heartbeats: {kinds:?}");
    let health = get_json(&format!("{}/v1/health", node(leader)))
        .await
        .expect("the leader answers");
    let links = health["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .all(|l| l["kinds"]["heartbeats"].as_u64() > Some(0)),
        "/v1/health counts heartbeats per link: {links:?}"
    );

    // Fault tolerance, run from the keyboard: focus the button and press Enter.
    page.execute("document.getElementById('run-fault').focus();", vec![])
        .await
        .expect("focus the button");
    page.active_element()
        .await
        .expect("the focused button")
        .send_keys("\u{E007}")
        .await
        .expect("press Enter");
    let (fault, text) = evidence(&page, "fault").await;
    assert_eq!(fault["done"], "ok", "the lesson failed: {text}");
    assert_eq!(fault["lost"], "0", "{text}");
    assert!(text.contains("lost: 0"), "{text}");
    assert_ne!(fault["oldLeader"], fault["newLeader"], "{text}");
    assert!(
        number(&fault["newTerm"]) > number(&fault["oldTerm"]),
        "{text}"
    );
    assert!(number(&fault["after"]) > 0, "writes carried on: {text}");
    // The cluster agrees: the killed leader is back, and the term has moved on.
    let old_leader = number(&fault["oldLeader"]);
    wait_until(
        "the killed leader to be back",
        Duration::from_secs(30),
        || async {
            get_json(&format!("{}/v1/health", node(old_leader)))
                .await
                .map(drop)
        },
    )
    .await;
    let health = get_json(&format!("{}/v1/health", node(number(&fault["newLeader"]))))
        .await
        .expect("the new leader answers");
    assert!(health["term"].as_u64().expect("term") >= number(&fault["newTerm"]));

    // Cut off: the page isolates a follower, writes, heals, and shows its lag back at 0.
    let (cutoff, text) = run_lesson(&page, "cutoff").await;
    assert_eq!(cutoff["done"], "ok", "the lesson failed: {text}");
    assert_eq!(cutoff["lag"], "0", "{text}");
    assert!(number(&cutoff["peak"]) > 0, "the node fell behind: {text}");
    let cut = number(&cutoff["node"]);
    let view = get_json(&format!("{}/v1/cluster", node(1)))
        .await
        .expect("cluster");
    let member = view["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == cut)
        .cloned()
        .expect("the cut-off node is a member");
    assert_eq!(member["reachable"], true);

    // Synchronization: the page writes 20 entries and draws every node's log; all nodes
    // commit them and hold the same terms at the same numbers.
    let (sync, text) = run_lesson(&page, "sync").await;
    assert_eq!(sync["done"], "ok", "the lesson failed: {text}");
    assert_eq!(sync["agree"], "true", "{text}");
    assert_eq!(sync["nodes"], "3", "{text}");
    assert!(number(&sync["to"]) >= number(&sync["from"]) + 20, "{text}");
    for id in 1..=3 {
        let log = get_json(&format!("{}/v1/dev/log?count=32", node(id)))
            .await
            .expect("the node shows its log");
        assert!(log["commit_index"].as_u64().expect("commit") >= number(&sync["target"]));
    }
    let committed = page
        .find_all(Locator::Css(
            "#sync-logs .logrow[data-node] .entry.committed",
        ))
        .await
        .expect("drawn entries");
    assert!(
        committed.len() >= 3,
        "every node's committed entries are drawn"
    );

    // Load balancing: a burst of reads spread over the nodes; each serves its share.
    let (load, text) = run_lesson(&page, "load").await;
    assert_eq!(load["done"], "ok", "the lesson failed: {text}");
    assert_eq!(load["answered"], "300", "{text}");
    assert!(
        number(&load["least"]) >= 90,
        "every node served its share: {text}"
    );
    // ... and beside it, the jobs each of kith dev's workers finished.
    assert_eq!(load["jobs"], "30", "{text}");
    assert!(
        number(&load["workers"]) >= 2,
        "workers shared the jobs: {text}"
    );
    let job_bars = page
        .find_all(Locator::Css("#load-jobs .bar[data-worker]"))
        .await
        .expect("jobs per worker");
    assert_eq!(job_bars.len() as u64, number(&load["workers"]), "{text}");
    assert!(text.contains("worker-1 finished"), "{text}");

    // Sharing processing: 64 tiles, one worker then three; three finish first.
    let (puzzle, text) = run_lesson(&page, "puzzle").await;
    assert_eq!(puzzle["done"], "ok", "the lesson failed: {text}");
    assert_eq!(puzzle["tilesOne"], "64", "{text}");
    assert_eq!(puzzle["tilesThree"], "64", "{text}");
    assert_eq!(puzzle["workersOne"], "1", "{text}");
    assert_eq!(puzzle["workersThree"], "3", "{text}");
    assert!(
        number(&puzzle["msThree"]) < number(&puzzle["msOne"]),
        "three workers were faster: {text}"
    );
    let made: Value = page
        .execute(
            "return [...document.querySelectorAll('#puzzle-boards .board')]
               .map((b) => [...new Set([...b.querySelectorAll('canvas.tile[data-worker]')]
                 .map((t) => t.dataset.worker))].length);",
            vec![],
        )
        .await
        .expect("the boards' tiles");
    assert_eq!(
        made,
        json!([1, 3]),
        "tiles coloured by the worker that made them"
    );
    let painted = page
        .find_all(Locator::Css("#puzzle-boards canvas.tile[data-worker]"))
        .await
        .expect("painted tiles");
    assert_eq!(painted.len(), 128, "every tile of both boards is painted");
    page.execute(
        "document.getElementById('lesson-puzzle').scrollIntoView();",
        vec![],
    )
    .await
    .expect("scroll to the puzzle");
    let png = page
        .find(Locator::Id("lesson-puzzle"))
        .await
        .expect("the puzzle lesson")
        .screenshot()
        .await
        .expect("screenshot");
    std::fs::write(artifacts_dir().join("learn-puzzle.png"), png).expect("save screenshot");
    // The workers stop when the lesson ends: kith dev has no `kith worker` child left.
    let dev_pid = dev.0.id();
    wait_until(
        "the puzzle's workers to exit",
        Duration::from_secs(30),
        || async move {
            let workers = children_of(dev_pid)
                .into_iter()
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"worker"))
                })
                .count();
            (workers == 0).then_some(())
        },
    )
    .await;

    // Storage and redundancy: a file on three nodes downloads intact with one holder dead.
    let (store, text) = run_lesson(&page, "store").await;
    assert_eq!(store["done"], "ok", "the lesson failed: {text}");
    assert_eq!(store["intact"], "true", "{text}");
    assert_eq!(store["copies"], "3", "{text}");
    assert_eq!(store["during"], "2", "{text}");
    assert_eq!(store["after"], "3", "{text}");
    let victim = number(&store["node"]);
    wait_until(
        "the killed holder to be back",
        Duration::from_secs(30),
        || async {
            get_json(&format!("{}/v1/health", node(victim)))
                .await
                .map(drop)
        },
    )
    .await;

    // Ledger: the page has one follower alter an entry (kith dev restarts it with the hidden
    // tamper flag, not the storage test hook, so an ordinary build does the same) and names it
    // by comparing every node's hash at the same entry.
    let (ledger, text) = run_lesson(&page, "ledger").await;
    assert_eq!(ledger["done"], "ok", "the lesson failed: {text}");
    assert_eq!(ledger["named"], ledger["tampered"], "{text}");
    assert_eq!(ledger["agreeing"], "2", "{text}");
    let at = number(&ledger["index"]);
    let hash_of = |id: u64| async move {
        get_json(&format!("{}/v1/ledger?index={at}", node(id)))
            .await
            .expect("the node answers")["hash"]
            .clone()
    };
    let named = number(&ledger["named"]);
    let others: Vec<u64> = (1..=3).filter(|i| *i != named).collect();
    assert_eq!(hash_of(others[0]).await, hash_of(others[1]).await);
    assert_ne!(hash_of(named).await, hash_of(others[0]).await);

    // Scale, last (it leaves four nodes): the page adds node 4, which joins and votes.
    let (scale, text) = run_lesson(&page, "scale").await;
    assert_eq!(scale["done"], "ok", "the lesson failed: {text}");
    assert_eq!(scale["node"], "4", "{text}");
    assert_eq!(scale["voters"], "4", "{text}");
    let view = get_json(&format!("{}/v1/cluster", node(4)))
        .await
        .expect("node 4 answers");
    let members = view["members"].as_array().expect("members");
    assert_eq!(
        members.iter().filter(|m| m["voter"] == true).count(),
        4,
        "four voters: {view}"
    );

    // Bad input to the lessons' routes is refused and changes nothing.
    let client = http();
    for count in ["0", "33", "x"] {
        let r = client
            .get(format!("{}/v1/dev/log?count={count}", node(1)))
            .send()
            .await
            .expect("node 1 answers");
        assert_eq!(r.status(), 400, "count={count}");
        let body: Value = r.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    for body in [
        json!({"count": 5, "queue": "q"}),
        json!({"count": 1}),
        json!({"count": 1, "queue": "no spaces"}),
        json!({"count": -1, "queue": "q"}),
        json!({"count": 1, "queue": "q", "command": "rm"}),
    ] {
        let r = client
            .post(format!("{}/v1/dev/workers", node(1)))
            .json(&body)
            .send()
            .await
            .expect("node 1 answers");
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.expect("a JSON error");
        assert_eq!(answer["error"]["code"], "bad_request", "{body}");
    }
    let skip = client
        .post(format!("{}/v1/dev/nodes/7/add", node(1)))
        .send()
        .await
        .expect("node 1 answers");
    assert_eq!(skip.status(), 409, "only the next node can be added");
    let body: Value = skip.json().await.expect("a JSON error");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("next node is 5"));
    let view = get_json(&format!("{}/v1/cluster", node(1)))
        .await
        .expect("cluster");
    assert_eq!(view["members"].as_array().expect("members").len(), 4);

    let png = page.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join("learn.png");
    std::fs::write(&path, png).expect("save screenshot");
    println!("lessons screenshot: {}", path.display());
    assert_eq!(console_errors(&driver, &page).await, Vec::<String>::new());

    // On a phone-sized screen nothing sticks out sideways.
    page.set_window_size(390, 844).await.expect("narrow window");
    let overflow = page
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .expect("measure the page");
    assert!(
        overflow.as_i64().expect("pixels") <= 0,
        "the page is wider than a phone: {overflow}"
    );
    // The chat page's fields stay inside its sidebar.
    page.set_window_size(1280, 900).await.expect("wide window");
    page.goto(&format!("{}/chat", node(1)))
        .await
        .expect("open the chat");
    let sticks_out = page
        .execute(
            "const side = document.querySelector('.rooms').getBoundingClientRect();
             return [...document.querySelectorAll('.rooms input, .rooms button')]
               .some((e) => e.getBoundingClientRect().right > side.right + 0.5);",
            vec![],
        )
        .await
        .expect("measure the sidebar");
    assert_eq!(sticks_out, false, "a chat sidebar field overflows it");
    page.close().await.expect("close the browser");

    // A node not started by `kith dev` cannot be told to tamper with its ledger.
    let dir = tempfile::TempDir::new().expect("data dir");
    let refused = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["serve", "--id", "1", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.path())
        .args(["--dev-tamper-ledger-index", "5"])
        .output()
        .expect("run kith serve");
    assert!(
        !refused.status.success(),
        "an ordinary node refuses to tamper"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--dev-control"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A node not started by `kith dev` has no lessons.
    let plain = TestCluster::start(1, &[]);
    plain.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let answer = http()
        .get(format!("{}/learn", plain.url(1)))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(answer.status(), 404);
    assert!(answer.text().await.expect("body").contains("kith dev"));
}
