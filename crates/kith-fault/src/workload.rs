//! The clients: workloads that drive kith over its public HTTP API and record histories.
//!
//! Owns: [`run`], which starts the register and set clients and returns what they saw, and
//! the classification of every HTTP outcome as ok, failed, or unknown.
//!
//! - **Registers.** `clients_per_node` clients per node, each bound to one node (as Jepsen
//!   binds a client to a host), read, write and compare-and-set a few keys. Each client
//!   remembers the last (value, revision) it saw per key and uses it for compare-and-set.
//!   Every written value is unique: `client << 32 | seq`.
//!   With `etcd_clients`, every second register client speaks etcd's v3 API instead (the
//!   JSON gateway, which runs the same service code as gRPC): a linearizable Range, a Put,
//!   and compare-and-set as a Txn comparing the key's mod revision. Both kinds share the keys
//!   and the history, so the checker sees one register written through both APIs.
//! - **Set.** One client per node appends unique elements to one key holding a
//!   comma-separated list: a linearizable read, then `PUT ?if_revision=` of the list plus the
//!   element; a 409 means someone else appended first, so it reads and tries again (a
//!   bounded number of times). An append whose PUT gets no trustworthy answer is recorded as
//!   unknown and never retried, so the suite itself never duplicates an element.
//!
//! - **Chat.** One client per node posts messages to one room ([`CHAT_ROOM`]) with ids of its
//!   own choosing (`c<client>-<seq>`). A post with no trustworthy answer is retried with the
//!   *same* id — kith stores a retried id once — and recorded as unknown if it never gets
//!   one; a 200 or 201 with a `seq` is acknowledged.
//!
//! Outcome rules (the checker's soundness depends on them): 2xx is ok; 409
//! `revision_mismatch` is a failed compare; a refused connection means the request was never
//! delivered, so it is dropped from the history; anything else on a write — timeout, 5xx,
//! reset — is *unknown*, since the write may still commit. A read that does not answer 200
//! or 404 tells nothing and is dropped.
//!
//! Refuses: retrying a write whose outcome is unknown, and sleeping as a condition (the
//! only sleeps pace the offered load).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::StatusCode;

use crate::checker::Operation;
use crate::register::{RegInput, RegOutput};

/// What the workload offers: how many ops, how fast, over how many keys.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Total operations (register ops and set appends) across all clients.
    pub ops: usize,
    /// Offered load across all clients, operations per second.
    pub rate_per_s: f64,
    /// Register keys.
    pub keys: usize,
    pub clients_per_node: usize,
    /// One set-append client per node, when true.
    pub set_clients: bool,
    /// One chat client per node, when true.
    pub chat_clients: bool,
    /// One file-upload client per node, when true.
    pub file_clients: bool,
    /// Every second register client uses etcd's API, when true.
    pub etcd_clients: bool,
    /// How long a client waits for an answer before recording "unknown".
    pub op_timeout: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            ops: 1000,
            rate_per_s: 150.0,
            keys: 8,
            clients_per_node: 3,
            set_clients: true,
            chat_clients: true,
            file_clients: true,
            etcd_clients: true,
            op_timeout: Duration::from_secs(3),
        }
    }
}

/// One register operation as recorded.
#[derive(Clone, Debug)]
pub struct RegisterEvent {
    pub key: usize,
    pub client: u32,
    pub node: u64,
    pub op: Operation<RegInput, RegOutput>,
    /// The revision the answer carried (`kith-revision` of a read, `revision` of a put).
    pub revision: Option<u64>,
    /// Whether the operation went through etcd's API rather than `/v1/kv`.
    pub via_etcd: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One attempted set append.
#[derive(Clone, Debug)]
pub struct SetAppend {
    pub element: u64,
    pub node: u64,
    pub outcome: Outcome,
}

/// One attempted chat post (with all its retries).
#[derive(Clone, Debug)]
pub struct ChatPost {
    pub id: String,
    pub node: u64,
    pub outcome: Outcome,
}

/// One attempted file upload: a fresh path, written once.
#[derive(Clone, Debug)]
pub struct FileUpload {
    pub path: String,
    /// BLAKE3 of the content sent.
    pub hash: [u8; 32],
    pub node: u64,
    pub outcome: Outcome,
}

/// Everything the clients recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    pub registers: Vec<RegisterEvent>,
    pub set: Vec<SetAppend>,
    pub chat: Vec<ChatPost>,
    pub files: Vec<FileUpload>,
    /// Operations invoked (including ones never delivered).
    pub ops_invoked: usize,
}

/// Nanoseconds since the start of a schedule; one clock for every event in it.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

pub const SET_KEY: &str = "set";
/// The room the chat clients post to.
pub const CHAT_ROOM: &str = "fault";

pub fn register_key(k: usize) -> String {
    format!("r{k}")
}

/// Displays a value id as `c<client>#<seq>`.
pub fn value_name(v: u64) -> String {
    format!("c{}#{}", v >> 32, v & 0xffff_ffff)
}

/// The answer to one HTTP request, classified.
pub enum Answer {
    /// 200 with body and `kith-revision` (reads) or JSON `revision` (puts).
    Ok {
        body: Vec<u8>,
        revision: u64,
    },
    NotFound,
    Mismatch,
    /// 200 or 201 to a chat post, with the message's `seq`.
    Posted {
        seq: u64,
    },
    /// Certainly not delivered (connection refused).
    NotDelivered,
    /// No trustworthy answer.
    Unknown,
}

/// A thin client for one node.
#[derive(Clone)]
pub struct NodeClient {
    pub node: u64,
    pub url: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl NodeClient {
    pub fn new(node: u64, url: String, http: reqwest::Client, timeout: Duration) -> Self {
        NodeClient {
            node,
            url,
            http,
            timeout,
        }
    }

    async fn classify(&self, sent: Result<reqwest::Response, reqwest::Error>, put: bool) -> Answer {
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Answer::NotDelivered,
            Err(_) => return Answer::Unknown,
        };
        let status = response.status();
        let header_revision = response
            .headers()
            .get("kith-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Ok(body) = response.bytes().await else {
            return Answer::Unknown;
        };
        match status {
            StatusCode::OK if put => {
                let revision = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["revision"].as_u64());
                match revision {
                    Some(revision) => Answer::Ok {
                        body: Vec::new(),
                        revision,
                    },
                    None => Answer::Unknown,
                }
            }
            StatusCode::OK => match header_revision {
                Some(revision) => Answer::Ok {
                    body: body.to_vec(),
                    revision,
                },
                None => Answer::Unknown,
            },
            StatusCode::NOT_FOUND => Answer::NotFound,
            StatusCode::CONFLICT
                if serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["error"]["code"] == "revision_mismatch") =>
            {
                Answer::Mismatch
            }
            _ => Answer::Unknown,
        }
    }

    /// A linearizable read.
    pub async fn get(&self, key: &str) -> Answer {
        let sent = self
            .http
            .get(format!("{}/v1/kv/{key}", self.url))
            .timeout(self.timeout)
            .send()
            .await;
        self.classify(sent, false).await
    }

    /// A put, conditional when `if_revision` is given.
    pub async fn put(&self, key: &str, value: Vec<u8>, if_revision: Option<u64>) -> Answer {
        let mut url = format!("{}/v1/kv/{key}", self.url);
        if let Some(r) = if_revision {
            url.push_str(&format!("?if_revision={r}"));
        }
        let sent = self
            .http
            .put(url)
            .timeout(self.timeout)
            .body(value)
            .send()
            .await;
        self.classify(sent, true).await
    }

    /// A linearizable read through etcd's API (`POST /v3/kv/range`).
    pub async fn etcd_get(&self, key: &str) -> Answer {
        let body = serde_json::json!({"key": b64(key.as_bytes())});
        let sent = self.etcd_call("/v3/kv/range", body).await;
        let Some(answer) = sent else {
            return Answer::NotDelivered;
        };
        let Ok(v) = answer else {
            return Answer::Unknown;
        };
        match v["kvs"].get(0) {
            None => Answer::NotFound,
            Some(kv) => {
                let value = kv["value"].as_str().and_then(unb64);
                let revision = kv["mod_revision"].as_str().and_then(|r| r.parse().ok());
                match (value, revision) {
                    (Some(body), Some(revision)) => Answer::Ok { body, revision },
                    _ => Answer::Unknown,
                }
            }
        }
    }

    /// A put through etcd's API; with `if_revision`, a Txn that puts only if the key's mod
    /// revision is that (0: the key must not exist), else answers `Mismatch`.
    pub async fn etcd_put(&self, key: &str, value: Vec<u8>, if_revision: Option<u64>) -> Answer {
        let put = serde_json::json!({"key": b64(key.as_bytes()), "value": b64(&value)});
        let sent = match if_revision {
            None => self.etcd_call("/v3/kv/put", put).await,
            Some(r) => {
                let txn = serde_json::json!({
                    "compare": [{"key": b64(key.as_bytes()), "result": "EQUAL",
                                 "target": "MOD", "mod_revision": r.to_string()}],
                    "success": [{"request_put": put}],
                });
                self.etcd_call("/v3/kv/txn", txn).await
            }
        };
        let Some(answer) = sent else {
            return Answer::NotDelivered;
        };
        let Ok(v) = answer else {
            return Answer::Unknown;
        };
        // etcd's JSON leaves a false `succeeded` out.
        if if_revision.is_some() && v["succeeded"] != true {
            return Answer::Mismatch;
        }
        match v["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
        {
            Some(revision) => Answer::Ok {
                body: Vec::new(),
                revision,
            },
            None => Answer::Unknown,
        }
    }

    /// POSTs `body` to etcd's gateway `path`: `None` when the request was never delivered,
    /// `Some(Err)` for any answer but a 200 with JSON.
    async fn etcd_call(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Option<Result<serde_json::Value, ()>> {
        let sent = self
            .http
            .post(format!("{}{path}", self.url))
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return None,
            Err(_) => return Some(Err(())),
        };
        if response.status() != StatusCode::OK {
            return Some(Err(()));
        }
        Some(response.json().await.map_err(drop))
    }

    /// Posts a message with a client-chosen `id` to `room`.
    pub async fn post_message(&self, room: &str, id: &str, author: &str, text: &str) -> Answer {
        let sent = self
            .http
            .post(format!("{}/v1/rooms/{room}/messages", self.url))
            .timeout(self.timeout)
            .json(&serde_json::json!({"author": author, "text": text, "id": id}))
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Answer::NotDelivered,
            Err(_) => return Answer::Unknown,
        };
        if !matches!(response.status(), StatusCode::OK | StatusCode::CREATED) {
            return Answer::Unknown;
        }
        match response.json::<serde_json::Value>().await {
            Ok(v) if v["id"] == id => match v["seq"].as_u64() {
                Some(seq) => Answer::Posted { seq },
                None => Answer::Unknown,
            },
            _ => Answer::Unknown,
        }
    }

    /// Uploads a file: `Ok` on 201, `NotDelivered` when the connection failed, else
    /// `Unknown` (a 503 may come after the manifest was proposed).
    pub async fn put_file(&self, path: &str, content: Vec<u8>) -> Answer {
        let sent = self
            .http
            .put(format!("{}/v1/files/{path}", self.url))
            .timeout(self.timeout)
            .body(content)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::CREATED => Answer::Ok {
                body: Vec::new(),
                revision: 0,
            },
            Err(e) if e.is_connect() => Answer::NotDelivered,
            _ => Answer::Unknown,
        }
    }

    /// Downloads a file (linearizable): `Ok` with the bytes, `NotFound`, or `Unknown`.
    pub async fn get_file(&self, path: &str) -> Answer {
        let sent = self
            .http
            .get(format!("{}/v1/files/{path}", self.url))
            .timeout(self.timeout)
            .send()
            .await;
        let Ok(response) = sent else {
            return Answer::Unknown;
        };
        match response.status() {
            StatusCode::OK => match response.bytes().await {
                Ok(body) => Answer::Ok {
                    body: body.to_vec(),
                    revision: 0,
                },
                Err(_) => Answer::Unknown,
            },
            StatusCode::NOT_FOUND => Answer::NotFound,
            _ => Answer::Unknown,
        }
    }

    /// One page of `room`'s history after `after` (a linearizable read): the JSON document,
    /// or `None` when the node does not answer 200.
    pub async fn messages(&self, room: &str, after: u64) -> Option<serde_json::Value> {
        let r = self
            .http
            .get(format!(
                "{}/v1/rooms/{room}/messages?after={after}&limit=1000",
                self.url
            ))
            .timeout(self.timeout)
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::OK {
            return None;
        }
        r.json().await.ok()
    }
}

fn parse_value(body: &[u8]) -> u64 {
    // Anything the workload did not write reads as an impossible value: a violation.
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Parses the set key's list.
pub fn parse_set(body: &[u8]) -> Vec<u64> {
    std::str::from_utf8(body)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// Shared by all clients of one schedule.
struct Shared {
    tickets: AtomicUsize,
    clock: Clock,
    config: WorkloadConfig,
    clients_total: usize,
    registers: Mutex<Vec<RegisterEvent>>,
    set: Mutex<Vec<SetAppend>>,
    chat: Mutex<Vec<ChatPost>>,
    files: Mutex<Vec<FileUpload>>,
    invoked: AtomicUsize,
}

impl Shared {
    /// Takes one op from the budget; false when the budget is spent.
    fn ticket(&self) -> bool {
        let taken = self
            .tickets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
            .is_ok();
        if taken {
            self.invoked.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Paces one client so that all together offer about `rate_per_s`: each client starts
    /// an op every `clients / rate` seconds on average (uniformly random gaps), counted from
    /// the previous op's start, so an op's latency does not lower the offered load. A client
    /// that fell behind (a slow op) starts at once rather than in a burst.
    async fn pace(&self, rng: &mut ChaCha8Rng, next: &mut tokio::time::Instant) {
        let mean_s = self.clients_total as f64 / self.config.rate_per_s;
        let gap = Duration::from_secs_f64(rng.random_range(0.0..2.0 * mean_s));
        let now = tokio::time::Instant::now();
        *next = (*next + gap).max(now);
        tokio::time::sleep_until(*next).await;
    }

    fn record(&self, event: RegisterEvent) {
        self.registers.lock().expect("history lock").push(event);
    }
}

/// Runs the workload against `nodes` until its op budget is spent.
pub async fn run(
    nodes: &[NodeClient],
    config: &WorkloadConfig,
    seed: u64,
    clock: Clock,
) -> Recorded {
    let register_clients = nodes.len() * config.clients_per_node;
    let set_clients = if config.set_clients { nodes.len() } else { 0 };
    let chat_clients = if config.chat_clients { nodes.len() } else { 0 };
    let file_clients = if config.file_clients { nodes.len() } else { 0 };
    let shared = Arc::new(Shared {
        tickets: AtomicUsize::new(config.ops),
        clock,
        config: config.clone(),
        clients_total: register_clients + set_clients + chat_clients + file_clients,
        registers: Mutex::new(Vec::new()),
        set: Mutex::new(Vec::new()),
        chat: Mutex::new(Vec::new()),
        files: Mutex::new(Vec::new()),
        invoked: AtomicUsize::new(0),
    });
    let mut tasks = Vec::new();
    for c in 0..register_clients {
        let node = nodes[c % nodes.len()].clone();
        let shared = shared.clone();
        let client_id = c as u32 + 1;
        tasks.push(tokio::spawn(register_client(node, client_id, seed, shared)));
    }
    for (i, node) in nodes.iter().enumerate().take(set_clients) {
        let shared = shared.clone();
        let client_id = (register_clients + i) as u32 + 1;
        tasks.push(tokio::spawn(set_client(
            node.clone(),
            client_id,
            seed,
            shared,
        )));
    }
    for (i, node) in nodes.iter().enumerate().take(chat_clients) {
        let shared = shared.clone();
        let client_id = (register_clients + set_clients + i) as u32 + 1;
        tasks.push(tokio::spawn(chat_client(
            node.clone(),
            client_id,
            seed,
            shared,
        )));
    }
    for (i, node) in nodes.iter().enumerate().take(file_clients) {
        let shared = shared.clone();
        let client_id = (register_clients + set_clients + chat_clients + i) as u32 + 1;
        tasks.push(tokio::spawn(file_client(
            node.clone(),
            client_id,
            seed,
            shared,
        )));
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("a workload client panicked: {e}");
        }
    }
    let registers = std::mem::take(&mut *shared.registers.lock().expect("history lock"));
    let set = std::mem::take(&mut *shared.set.lock().expect("history lock"));
    let chat = std::mem::take(&mut *shared.chat.lock().expect("history lock"));
    let files = std::mem::take(&mut *shared.files.lock().expect("history lock"));
    Recorded {
        registers,
        set,
        chat,
        files,
        ops_invoked: shared.invoked.load(Ordering::Relaxed),
    }
}

async fn register_client(node: NodeClient, client: u32, seed: u64, shared: Arc<Shared>) {
    let etcd = shared.config.etcd_clients && client.is_multiple_of(2);
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ u64::from(client));
    // Last (value, revision) this client saw per key, for compare-and-set.
    let mut seen: HashMap<usize, (Option<u64>, u64)> = HashMap::new();
    let mut seq: u64 = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        shared.pace(&mut rng, &mut next).await;
        if !shared.ticket() {
            return;
        }
        let key = rng.random_range(0..shared.config.keys);
        let name = register_key(key);
        let roll = rng.random_range(0..100);
        let call = shared.clock.now_ns();
        if roll < 50 {
            let answer = if etcd {
                node.etcd_get(&name).await
            } else {
                node.get(&name).await
            };
            let ret = shared.clock.now_ns();
            let (value, revision) = match answer {
                Answer::Ok { body, revision } => (Some(parse_value(&body)), revision),
                Answer::NotFound => (None, 0),
                _ => continue,
            };
            if value.is_some() {
                seen.insert(key, (value, revision));
            } else {
                seen.insert(key, (None, 0));
            }
            shared.record(RegisterEvent {
                key,
                client,
                node: node.node,
                op: Operation {
                    call,
                    ret: Some(ret),
                    input: RegInput::Read,
                    output: RegOutput::Read(value),
                },
                revision: value.map(|_| revision),
                via_etcd: etcd,
            });
            continue;
        }
        seq += 1;
        let value = (u64::from(client) << 32) | seq;
        let (input, if_revision) = if roll < 75 {
            (RegInput::Write(value), None)
        } else {
            let (expected, revision) = seen.get(&key).copied().unwrap_or((None, 0));
            (
                RegInput::Cas {
                    expected,
                    new: value,
                },
                Some(revision),
            )
        };
        let bytes = value.to_string().into_bytes();
        let answer = if etcd {
            node.etcd_put(&name, bytes, if_revision).await
        } else {
            node.put(&name, bytes, if_revision).await
        };
        let ret = shared.clock.now_ns();
        let (output, ret, revision) = match answer {
            Answer::Ok { revision, .. } => {
                seen.insert(key, (Some(value), revision));
                (RegOutput::Ok, Some(ret), Some(revision))
            }
            Answer::Mismatch if if_revision.is_some() => (RegOutput::CasFailed, Some(ret), None),
            Answer::NotDelivered => continue,
            // A 404 or an unexplained 409 on a put is not in kith's contract: keep it as
            // unknown, which can only make the checker more lenient, never stricter.
            _ => (RegOutput::Unknown, None, None),
        };
        shared.record(RegisterEvent {
            key,
            client,
            node: node.node,
            op: Operation {
                call,
                ret,
                input,
                output,
            },
            revision,
            via_etcd: etcd,
        });
    }
}

/// Attempts to place one element before giving it up as failed.
const SET_ATTEMPTS_MAX: u32 = 8;

async fn set_client(node: NodeClient, client: u32, seed: u64, shared: Arc<Shared>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(7_919) ^ u64::from(client));
    let mut seq: u64 = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        shared.pace(&mut rng, &mut next).await;
        if !shared.ticket() {
            return;
        }
        seq += 1;
        let element = (u64::from(client) << 32) | seq;
        let mut outcome = Outcome::Fail;
        for _ in 0..SET_ATTEMPTS_MAX {
            let (mut list, revision) = match node.get(SET_KEY).await {
                Answer::Ok { body, revision } => (body, revision),
                Answer::NotFound => (Vec::new(), 0),
                // No read, no append: try again after a pause.
                _ => {
                    shared.pace(&mut rng, &mut next).await;
                    continue;
                }
            };
            if !list.is_empty() {
                list.push(b',');
            }
            list.extend_from_slice(element.to_string().as_bytes());
            match node.put(SET_KEY, list, Some(revision)).await {
                Answer::Ok { .. } => {
                    outcome = Outcome::Ok;
                    break;
                }
                Answer::Mismatch | Answer::NotDelivered => continue,
                _ => {
                    outcome = Outcome::Unknown;
                    break;
                }
            }
        }
        shared.set.lock().expect("set lock").push(SetAppend {
            element,
            node: node.node,
            outcome,
        });
    }
}

/// Attempts to post one message (always with the same id) before giving it up.
const CHAT_ATTEMPTS_MAX: u32 = 8;

async fn chat_client(node: NodeClient, client: u32, seed: u64, shared: Arc<Shared>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(104_729) ^ u64::from(client));
    let author = format!("c{client}");
    let mut seq: u64 = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        shared.pace(&mut rng, &mut next).await;
        if !shared.ticket() {
            return;
        }
        seq += 1;
        let id = format!("c{client}-{seq}");
        // Fail only while no attempt may have been delivered.
        let mut outcome = Outcome::Fail;
        for _ in 0..CHAT_ATTEMPTS_MAX {
            match node
                .post_message(CHAT_ROOM, &id, &author, &format!("message {seq}"))
                .await
            {
                Answer::Posted { .. } => {
                    outcome = Outcome::Ok;
                    break;
                }
                Answer::NotDelivered => {}
                _ => outcome = Outcome::Unknown,
            }
            shared.pace(&mut rng, &mut next).await;
        }
        shared.chat.lock().expect("chat lock").push(ChatPost {
            id,
            node: node.node,
            outcome,
        });
    }
}

/// Largest file a file client uploads; sizes are uniform in 1..=this, so most files span
/// several of the fault cluster's 16 KiB chunks.
const FILE_BYTES_MAX: usize = 96 * 1024;

/// Uploads fresh files, each once and never retried (a retry could not tell its own
/// earlier attempt from success, and the check needs each outcome exact).
async fn file_client(node: NodeClient, client: u32, seed: u64, shared: Arc<Shared>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(15_485_863) ^ u64::from(client));
    let mut seq: u64 = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        shared.pace(&mut rng, &mut next).await;
        if !shared.ticket() {
            return;
        }
        seq += 1;
        let path = format!("fault/c{client}-{seq}");
        let mut content = vec![0u8; rng.random_range(1..=FILE_BYTES_MAX)];
        rand::RngCore::fill_bytes(&mut rng, &mut content);
        let hash = *blake3::hash(&content).as_bytes();
        let outcome = match node.put_file(&path, content).await {
            Answer::Ok { .. } => Outcome::Ok,
            Answer::NotDelivered => Outcome::Fail,
            _ => Outcome::Unknown,
        };
        shared.files.lock().expect("files lock").push(FileUpload {
            path,
            hash,
            node: node.node,
            outcome,
        });
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
