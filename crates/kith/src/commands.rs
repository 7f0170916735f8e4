//! The client subcommands: `kith kv …` and `kith cluster …`.
//!
//! Output is a readable table by default or JSON with `--output json`, like etcdctl's `-w`.
//! Errors go to stderr with a non-zero exit.

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use kith_client::profile::Profile;
use kith_client::tls::TlsOptions;
use kith_client::{Client, Consistency, PutOptions, WatchControl, WatchEvent};

#[derive(Args)]
pub struct Common {
    /// Cluster endpoints, comma-separated; the client fails over between them. Without
    /// any of --endpoints, --ca, --tls and --token the profile is used (see --profile),
    /// and without one the `kith dev` cluster's endpoints.
    #[arg(long, global = true, env = "KITH_ENDPOINTS")]
    endpoints: Option<String>,
    /// The profile to use when no connection flags are given: the endpoints, CA and token
    /// file of one cluster, which `kith init` writes [default:
    /// $XDG_CONFIG_HOME/kith/profile.json, else ~/.config/kith/profile.json].
    #[arg(long, global = true, env = kith_client::profile::PROFILE_ENV, value_name = "FILE")]
    profile: Option<std::path::PathBuf>,
    /// The cluster CA to trust (PEM, `DIR/ca.crt` from `kith init`), for `https://`
    /// endpoints.
    #[arg(long, global = true, env = "KITH_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// A node directory from `kith init` (`DIR/node-N`): trust its CA and present its
    /// certificate, which changing the membership of a cluster with TLS requires.
    #[arg(
        long,
        global = true,
        env = "KITH_TLS",
        value_name = "DIR",
        conflicts_with = "ca"
    )]
    tls: Option<std::path::PathBuf>,
    /// The token to present (`ID.SECRET`, from `kith token create`, or `kith init`'s
    /// `admin.token`), which a cluster with TLS asks of every request.
    #[arg(long, global = true, env = "KITH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Common {
    pub fn client(&self) -> anyhow::Result<Client> {
        let explicit = self.endpoints.is_some()
            || self.ca.is_some()
            || self.tls.is_some()
            || self.token.is_some();
        // A profile applies whole or not at all: mixing its token with endpoints given
        // here could send the token somewhere it was never meant for.
        if !explicit {
            if let Some(profile) = self.profile()? {
                return Ok(profile.client()?);
            }
        }
        let endpoints = self.endpoints.as_deref().unwrap_or(crate::DEV_ENDPOINTS);
        let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        let tls = match (&self.ca, &self.tls) {
            (Some(ca), _) => Some(TlsOptions::trusting(ca)?),
            (None, Some(dir)) => Some(TlsOptions::node_dir(dir)?),
            (None, None) => None,
        };
        Ok(Client::with_options(
            &endpoints,
            tls.as_ref(),
            self.token.as_deref(),
        )?)
    }

    /// The profile named by --profile (which must exist), else the one at the default path
    /// if there is one.
    fn profile(&self) -> anyhow::Result<Option<Profile>> {
        if let Some(path) = &self.profile {
            return match Profile::load(path)? {
                Some(profile) => Ok(Some(profile)),
                None => bail!("no profile at {}", path.display()),
            };
        }
        match kith_client::profile::default_path() {
            Some(path) => Ok(Profile::load(&path)?),
            None => Ok(None),
        }
    }
}

#[derive(Args)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum KvCommand {
    /// Set KEY to VALUE.
    Put {
        key: String,
        value: String,
        /// Only if the key's revision is N (0: only if absent).
        #[arg(long)]
        if_revision: Option<u64>,
        /// Delete the key after this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Print KEY's value.
    Get {
        key: String,
        /// Serve from the contacted node's local state (may be behind).
        #[arg(long)]
        stale: bool,
    },
    /// Delete KEY.
    Del {
        key: String,
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Print every change to keys starting with PREFIX as it happens; survives node failures.
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Start from this revision (default: changes from now on).
        #[arg(long)]
        from_revision: Option<u64>,
    },
    /// List keys starting with PREFIX.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show every member, its role, indexes and lag.
    Status,
    /// Add node ID listening at ADDR (HOST:PORT); it joins as learner and is promoted.
    Add { id: u64, addr: String },
    /// Remove node ID from the cluster.
    Remove { id: u64 },
}

fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

pub async fn kv(args: KvArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let json_out = args.common.output == Output::Json;
    match args.command {
        KvCommand::Put {
            key,
            value,
            if_revision,
            ttl,
        } => {
            let options = PutOptions {
                if_revision,
                ttl_s: ttl,
            };
            let revision = client.put_with(&key, value.as_bytes(), options).await?;
            if json_out {
                outln!("{}", json!({"key": key, "revision": revision}));
            } else {
                outln!("OK revision {revision}");
            }
        }
        KvCommand::Get { key, stale } => {
            let Some(found) = client.get(&key, consistency(stale)).await? else {
                bail!("key '{key}' not found");
            };
            if json_out {
                let text = String::from_utf8_lossy(&found.value);
                outln!(
                    "{}",
                    json!({"key": key, "value": text, "revision": found.revision})
                );
            } else {
                use std::io::Write;
                let mut out = std::io::stdout();
                out.write_all(&found.value)?;
                out.write_all(b"\n")?;
            }
        }
        KvCommand::Del { key, if_revision } => {
            let (revision, deleted) = client.delete(&key, if_revision).await?;
            if json_out {
                outln!(
                    "{}",
                    json!({"key": key, "revision": revision, "deleted": deleted})
                );
            } else if deleted {
                outln!("deleted, revision {revision}");
            } else {
                outln!("no such key");
            }
        }
        KvCommand::Watch {
            prefix,
            from_revision,
        } => {
            use std::io::Write;
            client
                .watch(&prefix, from_revision, |event| {
                    let line = watch_line(&event, json_out);
                    // Stop quietly when whoever reads our output has gone.
                    let mut out = std::io::stdout();
                    match writeln!(out, "{line}").and_then(|()| out.flush()) {
                        Ok(()) => WatchControl::Continue,
                        Err(_) => WatchControl::Stop,
                    }
                })
                .await?;
        }
        KvCommand::Ls {
            prefix,
            limit,
            stale,
        } => {
            let list = client.list(&prefix, limit, consistency(stale)).await?;
            if json_out {
                outln!("{list}");
            } else {
                print_list(&list);
            }
        }
    }
    Ok(())
}

/// One watch event as `kith kv watch` prints it.
fn watch_line(event: &WatchEvent, json_out: bool) -> String {
    if json_out {
        return event.data.to_string();
    }
    let value = event.data["value"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            event.data["value_base64"]
                .as_str()
                .map(|b| format!("base64:{b}"))
        })
        .unwrap_or_default();
    let kind = if event.data["expired"] == true {
        "expire"
    } else {
        event.kind.as_str()
    };
    format!(
        "{:>8}  {:<6}  {}  {}",
        event.revision, kind, event.key, value
    )
}

fn print_list(list: &Value) {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<[String; 3]> = items
        .iter()
        .map(|i| {
            let value = i["value"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("base64:{}", i["value_base64"].as_str().unwrap_or("")));
            [
                i["key"].as_str().unwrap_or("").to_owned(),
                i["revision"].to_string(),
                truncate(&value, 60),
            ]
        })
        .collect();
    print_table(&["KEY", "REVISION", "VALUE"], &rows);
    if list["more"].as_bool() == Some(true) {
        outln!("(more keys match; raise --limit)");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let json_out = args.common.output == Output::Json;
    match args.command {
        ClusterCommand::Status => {
            let status = client.cluster().await?;
            if json_out {
                outln!("{status}");
                return Ok(());
            }
            let members = status["members"]
                .as_array()
                .context("cluster answer has no members")?;
            let opt = |v: &Value| {
                if v.is_null() {
                    "-".to_owned()
                } else {
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                }
            };
            // The storage quota as a share used, flagged once past it (growing writes fail).
            let quota = |q: &Value| match (q["used_bytes"].as_u64(), q["quota_bytes"].as_u64()) {
                (Some(used), Some(max)) if max > 0 => {
                    let pct = used.saturating_mul(100) / max;
                    if q["exceeded"].as_bool() == Some(true) {
                        format!("{pct}% FULL")
                    } else {
                        format!("{pct}%")
                    }
                }
                _ => "-".to_owned(),
            };
            let rows: Vec<[String; 10]> = members
                .iter()
                .map(|m| {
                    [
                        m["id"].to_string(),
                        opt(&m["addr"]),
                        if m["voter"].as_bool() == Some(true) {
                            "voter"
                        } else {
                            "learner"
                        }
                        .into(),
                        if m["reachable"].as_bool() == Some(true) {
                            opt(&m["role"])
                        } else {
                            "unreachable".into()
                        },
                        opt(&m["term"]),
                        opt(&m["commit_index"]),
                        opt(&m["applied_index"]),
                        opt(&m["lag"]),
                        quota(&m["quota"]),
                        opt(&m["version"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "ADDRESS", "MEMBER", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "QUOTA",
                    "VERSION",
                ],
                &rows,
            );
        }
        ClusterCommand::Add { id, addr } => {
            if id == 0 {
                bail!("node ids start at 1");
            }
            client.add_member(id, &addr).await?;
            if json_out {
                outln!("{}", json!({"added": id}));
            } else {
                outln!("node {id} added");
            }
        }
        ClusterCommand::Remove { id } => {
            client.remove_member(id).await?;
            if json_out {
                outln!("{}", json!({"removed": id}));
            } else {
                outln!("node {id} removed");
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    command: LedgerCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Check that every member holds the same history: compare their ledger hashes at a
    /// common applied index; name any node that diverges and exit non-zero.
    Verify,
}

pub async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let LedgerCommand::Verify = args.command;
    let status = client.cluster().await?;
    let members: Vec<(u64, String)> = status["members"]
        .as_array()
        .context("cluster answer has no members")?
        .iter()
        .filter_map(|m| Some((m["id"].as_u64()?, format!("http://{}", m["addr"].as_str()?))))
        .collect();
    // Every member's head; the common index is the lowest.
    let mut heads = Vec::new();
    for (id, url) in &members {
        let head = client
            .ledger_of(url, None)
            .await
            .with_context(|| format!("node {id} ({url}) did not answer"))?
            .with_context(|| format!("node {id} has no ledger"))?;
        heads.push((*id, url.clone(), head["index"].as_u64().unwrap_or(0)));
    }
    let common = heads.iter().map(|h| h.2).min().unwrap_or(0);
    let mut hashes = Vec::new();
    for (id, url, _) in &heads {
        let at = client
            .ledger_of(url, Some(common))
            .await?
            .with_context(|| {
                format!("node {id} no longer keeps index {common}; run verify again")
            })?;
        hashes.push((
            *id,
            url.clone(),
            at["hash"].as_str().unwrap_or("").to_owned(),
        ));
    }
    // The hash most members report is the reference; any other hash is a divergence.
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, _, h) in &hashes {
        *counts.entry(h.as_str()).or_default() += 1;
    }
    let (reference, _) = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(h, n)| (h.to_string(), *n))
        .context("no members")?;
    let divergent: Vec<&(u64, String, String)> =
        hashes.iter().filter(|(_, _, h)| *h != reference).collect();
    let json_out = args.common.output == Output::Json;
    if divergent.is_empty() {
        if json_out {
            outln!(
                "{}",
                json!({"agree": true, "index": common, "hash": reference, "members": members.len()})
            );
        } else {
            outln!(
                "OK: all {} members hold the same history up to index {common} (hash {reference})",
                members.len()
            );
        }
        return Ok(());
    }
    let good_url = &hashes
        .iter()
        .find(|(_, _, h)| *h == reference)
        .context("a member with the reference hash")?
        .1;
    let mut report = Vec::new();
    for (id, url, _) in divergent {
        let first = first_divergence(&client, good_url, url, common).await;
        report.push(json!({"node_id": id, "first_divergent_index": first}));
        if !json_out {
            match first {
                Some(i) => eprintln!("node {id} diverges from the majority at index {i}"),
                None => {
                    eprintln!("node {id} diverges from the majority at or before index {common}")
                }
            }
        }
    }
    if json_out {
        outln!(
            "{}",
            json!({"agree": false, "index": common, "divergent": report})
        );
    }
    bail!("ledger verification failed at index {common}")
}

/// Binary-searches the lowest index at which `bad` and `good` disagree, within the window
/// both still retain. `None` when that window does not reach the first divergence.
async fn first_divergence(client: &Client, good: &str, bad: &str, upto: u64) -> Option<u64> {
    let hash_at = |url: &str, i: u64| {
        let url = url.to_owned();
        async move {
            client
                .ledger_of(&url, Some(i))
                .await
                .ok()
                .flatten()
                .and_then(|v| v["hash"].as_str().map(str::to_owned))
        }
    };
    // Invariant: they disagree at `hi`; `lo` is the lowest index to consider.
    let (mut lo, mut hi) = (1u64, upto);
    // Bounded: at most 64 halvings of a u64 range.
    for _ in 0..64 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        match (hash_at(good, mid).await, hash_at(bad, mid).await) {
            (Some(a), Some(b)) if a == b => lo = mid + 1,
            (Some(_), Some(_)) => hi = mid,
            // Not retained on one side: the search cannot go lower than here.
            _ => lo = mid + 1,
        }
    }
    match (hash_at(good, hi).await, hash_at(bad, hi).await) {
        (Some(a), Some(b)) if a != b => {
            let below_known = hi == 1
                || matches!(
                    (hash_at(good, hi - 1).await, hash_at(bad, hi - 1).await),
                    (Some(a), Some(b)) if a == b
                );
            below_known.then_some(hi)
        }
        _ => None,
    }
}

#[derive(Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Enqueue a job with a JSON PAYLOAD.
    Push {
        queue: String,
        payload: String,
        /// 0–9, higher runs first.
        #[arg(long)]
        priority: Option<u8>,
        /// Run no sooner than this many seconds from now.
        #[arg(long)]
        delay: Option<u64>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Seconds a run may take before the worker kills it.
        #[arg(long)]
        timeout: Option<u64>,
        /// Enqueue at most once per key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Queues with their counts.
    Ls,
    /// One job in full.
    Get { id: u64 },
    /// A queue's dead letters.
    Dead { queue: String },
    /// Bring a dead job back.
    Retry { id: u64 },
    /// Cancel a job.
    Cancel { id: u64 },
    /// Delete an empty queue and its counts (refused while it holds unfinished jobs).
    RmQueue { queue: String },
}

pub async fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let json_out = args.common.output == Output::Json;
    match args.command {
        JobsCommand::Push {
            queue,
            payload,
            priority,
            delay,
            max_attempts,
            timeout,
            key,
        } => {
            let payload: Value = serde_json::from_str(&payload).context("PAYLOAD must be JSON")?;
            let mut job = json!({ "payload": payload });
            for (field, value) in [
                ("priority", priority.map(u64::from)),
                ("delay_s", delay),
                ("max_attempts", max_attempts.map(u64::from)),
                ("timeout_s", timeout),
            ] {
                if let Some(v) = value {
                    job[field] = json!(v);
                }
            }
            if let Some(k) = key {
                job["idempotency_key"] = json!(k);
            }
            let id = client.enqueue(&queue, &job).await?;
            if json_out {
                outln!("{}", json!({ "id": id }));
            } else {
                outln!("job {id}");
            }
        }
        JobsCommand::Ls => {
            let queues = client.queues().await?;
            if json_out {
                outln!("{queues}");
                return Ok(());
            }
            let rows: Vec<[String; 7]> = queues["queues"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|q| {
                    [
                        q["name"].as_str().unwrap_or("").to_owned(),
                        q["ready"].to_string(),
                        q["delayed"].to_string(),
                        q["leased"].to_string(),
                        q["dead"].to_string(),
                        q["completed_total"].to_string(),
                        q["failed_total"].to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "QUEUE",
                    "READY",
                    "DELAYED",
                    "LEASED",
                    "DEAD",
                    "COMPLETED",
                    "FAILURES",
                ],
                &rows,
            );
        }
        JobsCommand::Get { id } => outln!("{}", client.job(id).await?),
        JobsCommand::Dead { queue } => outln!("{}", client.dead_letters(&queue).await?),
        JobsCommand::Retry { id } => {
            client.retry_job(id).await?;
            outln!("job {id} is ready again");
        }
        JobsCommand::Cancel { id } => {
            client.cancel_job(id).await?;
            outln!("job {id} cancelled");
        }
        JobsCommand::RmQueue { queue } => {
            client.delete_queue(&queue).await?;
            println!("queue {queue} deleted");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; prints it alone on stdout (it is shown only this once).
    Create {
        /// admin, write, read, worker or monitor.
        #[arg(long)]
        role: String,
        /// Limit the role to names starting with PREFIX of CAP (kv, rooms, queues, files),
        /// e.g. `--prefix kv:app/`; repeatable.
        #[arg(long = "prefix", value_name = "CAP:PREFIX")]
        prefixes: Vec<String>,
        /// How long the token lives: a number with s, m, h or d (e.g. 90d).
        #[arg(long, value_parser = parse_duration_s)]
        ttl: Option<u64>,
        /// A note on what the token is for.
        #[arg(long)]
        name: Option<String>,
    },
    /// List every token (ids, roles, prefixes, expiry; never a secret).
    Ls,
    /// Revoke a token by its id: every node refuses it once it has the change.
    Revoke { id: String },
}

/// `90d`, `12h`, `30m`, `45s` or a plain number of seconds → seconds.
fn parse_duration_s(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90d, 12h, 30m or 45s"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}': the unit is one of s, m, h, d")),
    };
    match n.checked_mul(unit_s) {
        Some(0) | None => Err(format!("'{s}' is not a positive duration")),
        Some(secs) => Ok(secs),
    }
}

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let json_out = args.common.output == Output::Json;
    match args.command {
        TokenCommand::Create {
            role,
            prefixes,
            ttl,
            name,
        } => {
            let mut request =
                json!({"role": role, "prefixes": prefixes, "name": name.unwrap_or_default()});
            if let Some(ttl) = ttl {
                request["ttl_s"] = json!(ttl);
            }
            let created = client.create_token(&request).await?;
            if json_out {
                outln!("{created}");
            } else {
                let token = created["token"]
                    .as_str()
                    .context("the answer holds no token")?;
                outln!("{token}");
            }
        }
        TokenCommand::Ls => {
            let listed = client.tokens().await?;
            if json_out {
                outln!("{listed}");
                return Ok(());
            }
            outln!(
                "{:<16}  {:<7}  {:<8}  {:<24}  NAME",
                "ID",
                "ROLE",
                "STATE",
                "PREFIXES"
            );
            for t in listed["tokens"].as_array().into_iter().flatten() {
                let prefixes: Vec<&str> = t["prefixes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let state = if !t["revoked_ms"].is_null() {
                    "revoked"
                } else {
                    "live"
                };
                outln!(
                    "{:<16}  {:<7}  {:<8}  {:<24}  {}",
                    t["id"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    state,
                    if prefixes.is_empty() {
                        "-".into()
                    } else {
                        prefixes.join(",")
                    },
                    t["name"].as_str().unwrap_or("")
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let answer = client.revoke_token(&id).await?;
            if json_out {
                outln!("{answer}");
            } else if answer["revoked"] == true {
                outln!("token {id} revoked");
            } else {
                bail!("no live token {id}");
            }
        }
    }
    Ok(())
}
