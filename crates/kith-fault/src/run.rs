//! One suite run: prove that partitions bite, then run schedules and check what they recorded.
//!
//! Owns: [`SuiteConfig`], [`prove_partitions_bite`], [`run_schedule`] and [`run_suite`].
//!
//! ```text
//! run_suite ─▶ Firewall::open (own nftables table) ─▶ prove_partitions_bite ─▶ per seed:
//!   run_schedule: start cluster ─┬─ workload clients (record history) ─┐
//!                                └─ nemesis: gap, inject, hold, heal ──┴─▶ heal everything
//!     ─▶ converge (leader, a write, every node applied it) ─▶ final reads on every node
//!     ─▶ checks: linearizability per key, revision agreement, set (lost / duplicated /
//!        phantom), chat (lost / duplicated / gaps in seq / order differs between nodes),
//!        files (acknowledged upload missing or altered on any node, phantom upload),
//!        every node a voter again, watchers (every revision once, in order, agreeing with the history),
//!        every node's kv state and ledger hash equal
//! ```
//!
//! A schedule's *violations* are findings about kith. An `Err` is a failure of the harness
//! itself (nftables, spawning processes) and stops the run: it is never counted as a pass.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::checker::{self, Operation, Verdict};
use crate::cluster::{wait_for, Cluster};
use crate::nemesis;
use crate::nft::Firewall;
use crate::register::{self, RegInput, RegOutput, Register};
use crate::schedule::{FaultKind, Schedule};
use crate::watchers::Watchers;
use crate::workload::{
    self, parse_set, register_key, value_name, Answer, Clock, NodeClient, Outcome, Recorded,
    RegisterEvent, WorkloadConfig, CHAT_ROOM, SET_KEY,
};

/// Bounds on the end of a schedule.
const LEADER_WAIT: Duration = Duration::from_secs(30);
const CONVERGE_WAIT: Duration = Duration::from_secs(30);
const MINIMIZE_WITHIN: Duration = Duration::from_secs(30);
const FINAL_OP_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 200;

/// Everything one suite run needs.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    pub kith_bin: PathBuf,
    pub workload: WorkloadConfig,
    /// Fault kinds the schedules draw from.
    pub kinds: Vec<FaultKind>,
    /// Cluster size; `None` lets each seed choose (3, or 5 for one seed in four).
    pub nodes: Option<u64>,
    /// Environment for every node (test hooks such as `KITH_TEST_BUG`).
    pub node_env: Vec<(String, String)>,
    /// Where violation reports are written (`seed-N.txt`); none when `None`.
    pub report_dir: Option<PathBuf>,
    pub checker_steps_max: u64,
    /// Print each schedule's fault log as it runs.
    pub verbose: bool,
    /// Run the nodes with TLS (`kith init` certificates, `--tls`), clients trusting the CA.
    pub tls: bool,
}

impl SuiteConfig {
    pub fn new(kith_bin: impl Into<PathBuf>) -> Self {
        SuiteConfig {
            kith_bin: kith_bin.into(),
            workload: WorkloadConfig::default(),
            kinds: FaultKind::ALL.to_vec(),
            nodes: None,
            node_env: Vec::new(),
            report_dir: None,
            checker_steps_max: checker::STEPS_MAX_DEFAULT,
            verbose: false,
            tls: false,
        }
    }

    /// Starts `n` nodes the way this suite runs them.
    fn start_cluster(&self, n: u64) -> anyhow::Result<Cluster> {
        let mut options = crate::cluster::Options::fault_suite(&self.kith_bin, &self.node_env);
        options.tls = self.tls;
        Cluster::start_with(options, n)
    }
}

/// Something a schedule found wrong with kith.
#[derive(Clone, Debug)]
pub struct Violation {
    /// `linearizability`, `revision`, `set-lost`, `set-duplicate`, `set-phantom`,
    /// `chat-lost`, `chat-duplicate`, `chat-gap`, `chat-order`, `file-lost`, `file-corrupt`,
    /// `file-phantom`, `membership`, `watch`,
    /// `divergence`, `convergence`.
    pub kind: &'static str,
    pub detail: String,
}

/// What one schedule did and found.
#[derive(Clone, Debug, Default)]
pub struct ScheduleReport {
    pub seed: u64,
    pub nodes: u64,
    pub ops_invoked: usize,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_unknown: usize,
    pub faults: BTreeMap<FaultKind, u32>,
    /// What the nemesis did, with times.
    pub log: Vec<String>,
    pub violations: Vec<Violation>,
    /// Acknowledged set appends and chat posts missing at the end.
    pub acked_lost: usize,
    /// Chat messages in the final history (one node's copy).
    pub chat_messages: usize,
    /// File uploads checked on every node.
    pub files_checked: usize,
    /// Keys whose check ran out of budget.
    pub undecided_keys: usize,
    /// Watch events checked (all watchers).
    pub watch_events: usize,
    /// Register operations through etcd's API that got an answer.
    pub etcd_ops: usize,
    /// Nodes whose process exited on its own (a fatal error), restarted at a heal.
    pub self_exits: usize,
    pub elapsed: Duration,
    /// Where the report file went, if there was a violation.
    pub report_file: Option<PathBuf>,
}

fn clients_for(cluster: &Cluster, timeout: Duration) -> Vec<NodeClient> {
    cluster
        .nodes
        .iter()
        .map(|n| NodeClient::new(n.id, n.url(), cluster.http().clone(), timeout))
        .collect()
}

/// Isolates the leader and requires that the partition really separates it: the majority
/// elects a new leader and commits a write, the isolated node does not learn it, and a write
/// through the isolated node does not succeed. Any failure aborts the run.
pub async fn prove_partitions_bite(config: &SuiteConfig, fw: &Firewall) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut cluster = config.start_cluster(3)?;
    let all = cluster.ids();
    let clients = clients_for(&cluster, Duration::from_secs(3));
    let client = |id: u64| clients[(id - 1) as usize].clone();
    let leader = cluster.wait_for_leader(&all, LEADER_WAIT).await?;
    wait_for(
        "a first write to commit",
        Duration::from_secs(15),
        || async {
            matches!(
                client(leader).put("proof", b"before".to_vec(), None).await,
                Answer::Ok { .. }
            )
            .then_some(())
        },
    )
    .await?;
    let majority: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    for id in &majority {
        fw.block(cluster.node(leader).ip, cluster.node(*id).ip)?;
        fw.block(cluster.node(*id).ip, cluster.node(leader).ip)?;
    }
    let fail = |what: &str| {
        format!(
            "PARTITIONS DO NOT BITE: {what}. The nftables rules (table {}) did not separate the \
             isolated leader n{leader}; the fault suite cannot be trusted on this machine.",
            fw.table()
        )
    };
    let new_leader = wait_for(
        "the majority to elect a new leader",
        Duration::from_secs(20),
        || async {
            cluster
                .agreed_leader(&majority)
                .await
                .filter(|l| *l != leader)
        },
    )
    .await
    .with_context(|| fail("the majority did not elect a new leader"))?;
    wait_for(
        "a write through the majority",
        Duration::from_secs(15),
        || async {
            matches!(
                client(new_leader)
                    .put("proof", b"majority".to_vec(), None)
                    .await,
                Answer::Ok { .. }
            )
            .then_some(())
        },
    )
    .await
    .with_context(|| fail("the majority could not commit a write"))?;
    let stale = cluster
        .http()
        .get(format!(
            "{}/v1/kv/proof?consistency=stale",
            cluster.node(leader).url()
        ))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Ok(r) = stale {
        if r.bytes().await.is_ok_and(|b| &b[..] == b"majority") {
            bail!(fail("the isolated node received the majority's write"));
        }
    }
    let isolated = NodeClient::new(
        leader,
        cluster.node(leader).url(),
        cluster.http().clone(),
        Duration::from_secs(4),
    );
    if let Answer::Ok { .. } = isolated.put("proof", b"isolated".to_vec(), None).await {
        bail!(fail("a write through the isolated node succeeded"));
    }
    fw.heal()?;
    cluster.wait_for_leader(&all, LEADER_WAIT).await?;
    if let Some(note) = cluster.revive_all()?.into_iter().next() {
        bail!(fail(&note));
    }
    Ok(format!(
        "partitions bite: isolated leader n{leader}; the majority elected n{new_leader} and \
         committed; the isolated node neither learned it nor committed a write ({:.1} s)",
        started.elapsed().as_secs_f64()
    ))
}

/// Runs one seeded schedule on a fresh cluster and checks everything it recorded.
pub async fn run_schedule(
    config: &SuiteConfig,
    fw: &Firewall,
    seed: u64,
) -> anyhow::Result<ScheduleReport> {
    let started = Instant::now();
    let nodes = config
        .nodes
        .unwrap_or_else(|| Schedule::nodes_for_seed(seed));
    let mut report = ScheduleReport {
        seed,
        nodes,
        ..Default::default()
    };
    fw.heal()?;
    let mut cluster = config.start_cluster(nodes)?;
    let all = cluster.ids();
    cluster
        .wait_for_leader(&all, LEADER_WAIT)
        .await
        .context("the fresh cluster elected no leader")?;
    let clients = clients_for(&cluster, config.workload.op_timeout);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let watchers = Watchers::start(
        &urls,
        cluster.client_tls()?.as_ref(),
        cluster.client_token(),
    )?;
    let clock = Clock::start();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let workload = async {
        let recorded = workload::run(&clients, &config.workload, seed, clock).await;
        let _ = done_tx.send(true);
        recorded
    };
    let mut schedule = Schedule::new(seed, nodes, &config.kinds);
    let mut log = Vec::new();
    let mut faults: BTreeMap<FaultKind, u32> = BTreeMap::new();
    let mut self_exits = 0;
    let nemesis = async {
        let at = |clock: &Clock| format!("{:7.3}s", clock.now_ns() as f64 / 1e9);
        loop {
            let step = schedule.next_step();
            let calm =
                tokio::time::timeout(Duration::from_millis(step.gap_ms), done_rx.wait_for(|d| *d))
                    .await
                    .is_ok();
            if calm {
                break;
            }
            let what = nemesis::inject(&mut cluster, fw, &step.fault).await?;
            *faults.entry(step.fault.kind()).or_default() += 1;
            log.push(format!("{} inject {}: {what}", at(&clock), step.fault));
            let _ended_early = tokio::time::timeout(
                Duration::from_millis(step.hold_ms),
                done_rx.wait_for(|d| *d),
            )
            .await
            .is_ok();
            let notes = nemesis::heal(&mut cluster, fw).await?;
            log.push(format!("{} heal", at(&clock)));
            for note in notes {
                log.push(format!("{} {note}", at(&clock)));
                self_exits += 1;
            }
        }
        anyhow::Ok(())
    };
    let (recorded, nemesis_result) = tokio::join!(workload, nemesis);
    nemesis_result?;
    report.self_exits += self_exits;
    let notes = nemesis::heal(&mut cluster, fw).await?;
    log.push(format!(
        "{:7.3}s workload done; healed",
        clock.now_ns() as f64 / 1e9
    ));
    for note in notes {
        log.push(format!("{:7.3}s {note}", clock.now_ns() as f64 / 1e9));
        report.self_exits += 1;
    }
    let mut recorded: Recorded = recorded;
    report.ops_invoked = recorded.ops_invoked;
    report.etcd_ops = recorded
        .registers
        .iter()
        .filter(|e| e.via_etcd && e.op.ret.is_some())
        .count();
    report.faults = faults;
    if config.verbose {
        for line in &log {
            eprintln!("  seed {seed}: {line}");
        }
    }
    report.log = log;

    // Counted before `finish` adds its final reads to the history.
    for e in &recorded.registers {
        match e.op.output {
            RegOutput::Unknown => report.ops_unknown += 1,
            RegOutput::CasFailed => report.ops_failed += 1,
            _ => report.ops_ok += 1,
        }
    }
    let outcomes = recorded.set.iter().map(|s| s.outcome);
    let outcomes = outcomes.chain(recorded.chat.iter().map(|c| c.outcome));
    for outcome in outcomes.chain(recorded.files.iter().map(|f| f.outcome)) {
        match outcome {
            Outcome::Ok => report.ops_ok += 1,
            Outcome::Fail => report.ops_failed += 1,
            Outcome::Unknown => report.ops_unknown += 1,
        }
    }
    finish(
        config,
        &cluster,
        &mut recorded,
        clock,
        watchers,
        &mut report,
    )
    .await;
    report.elapsed = started.elapsed();
    if !report.violations.is_empty() {
        report.report_file = write_report(config, &report, &mut cluster);
    }
    Ok(report)
}

/// Convergence, final reads and every check; findings go into `report.violations`.
async fn finish(
    config: &SuiteConfig,
    cluster: &Cluster,
    recorded: &mut Recorded,
    clock: Clock,
    watchers: Watchers,
    report: &mut ScheduleReport,
) {
    let clients = clients_for(cluster, FINAL_OP_TIMEOUT);
    let Some((leader, final_revision)) = converge(cluster, &clients, report).await else {
        return;
    };
    // A read that fails (a 503 while a just-resumed node settles) is retried until
    // CONVERGE_WAIT: only a node that cannot serve at all fails convergence. A failed read
    // has no effect, so only the answered attempt enters the history.
    final_reads(config, &clients, &clock, recorded, report).await;
    check_registers(config, recorded, report);
    // The set: every node returns the same list; nothing acknowledged lost, nothing twice,
    // nothing that was never (or definitely not) appended.
    check_set(&clients, recorded, report).await;
    // Chat: every node reads the whole room; the copies agree, seqs are 1..N, no id twice,
    // and every acknowledged post is there.
    check_chat(&clients, recorded, report).await;
    // Files: every acknowledged upload reads back whole from every node; an upload whose
    // answer was lost is absent or whole; one never delivered is absent.
    check_files(&clients, recorded, report).await;
    // Membership: every node is a voter again, as the leader sees it (a removal whose answer
    // was lost may have taken effect after the heal looked).
    check_membership(cluster, leader, report).await;
    // Watchers: every revision once, in order, agreeing, matching acknowledged writes.
    check_watchers(watchers, final_revision, recorded, report).await;
    // Every node holds the same state and the same ledger.
    if let Err(detail) = same_state_everywhere(cluster).await {
        report.violations.push(Violation {
            kind: "divergence",
            detail,
        });
    }
}

/// Step 1 of [`finish`]: a leader, a committed write, and every node applied up to the
/// leader's commit. Returns the leader and the write's revision, or records why not.
async fn converge(
    cluster: &Cluster,
    clients: &[NodeClient],
    report: &mut ScheduleReport,
) -> Option<(u64, u64)> {
    let all = cluster.ids();
    let mut violate = |kind: &'static str, detail: String| {
        report.violations.push(Violation { kind, detail });
    };
    let Ok(leader) = cluster.wait_for_leader(&all, LEADER_WAIT).await else {
        violate(
            "convergence",
            format!("no leader within {LEADER_WAIT:?} after healing"),
        );
        return None;
    };
    let leader_client = &clients[(leader - 1) as usize];
    let committed = wait_for("a write after healing", CONVERGE_WAIT, || async {
        match leader_client.put("converged", b"yes".to_vec(), None).await {
            Answer::Ok { revision, .. } => Some(revision),
            _ => None,
        }
    })
    .await;
    let Ok(final_revision) = committed else {
        violate(
            "convergence",
            format!("no write committed within {CONVERGE_WAIT:?} after healing"),
        );
        return None;
    };
    let target = cluster
        .health(leader)
        .await
        .and_then(|h| h["commit_index"].as_u64())
        .unwrap_or(0);
    let applied = wait_for("every node to apply", CONVERGE_WAIT, || async {
        for id in &all {
            let h = cluster.health(*id).await?;
            if h["applied_index"].as_u64()? < target {
                return None;
            }
        }
        Some(())
    })
    .await;
    if applied.is_err() {
        violate(
            "convergence",
            format!("not every node applied index {target} within {CONVERGE_WAIT:?}"),
        );
        return None;
    }

    Some((leader, final_revision))
}

/// Step 2 of [`finish`]: final linearizable reads of every register on every node, into
/// the history.
async fn final_reads(
    config: &SuiteConfig,
    clients: &[NodeClient],
    clock: &Clock,
    recorded: &mut Recorded,
    report: &mut ScheduleReport,
) {
    let mut violate = |kind: &'static str, detail: String| {
        report.violations.push(Violation { kind, detail });
    };
    // 2. Final linearizable reads of every register on every node, into the history. A
    //    read that fails (a 503 while a just-resumed node settles) is retried until
    //    CONVERGE_WAIT: only a node that cannot serve at all fails convergence. A failed
    //    read has no effect, so only the answered attempt enters the history.
    for client in clients {
        for key in 0..config.workload.keys {
            let deadline = tokio::time::Instant::now() + CONVERGE_WAIT;
            let (call, answer, ret) = loop {
                let call = clock.now_ns();
                let answer = client.get(&register_key(key)).await;
                let ret = clock.now_ns();
                let answered = matches!(answer, Answer::Ok { .. } | Answer::NotFound);
                if answered || tokio::time::Instant::now() >= deadline {
                    break (call, answer, ret);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let (value, revision) = match answer {
                Answer::Ok { body, revision } => (
                    Some(
                        std::str::from_utf8(&body)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(u64::MAX),
                    ),
                    Some(revision),
                ),
                Answer::NotFound => (None, None),
                _ => {
                    violate(
                        "convergence",
                        format!(
                            "n{} could not serve a read of {} after healing",
                            client.node,
                            register_key(key)
                        ),
                    );
                    continue;
                }
            };
            recorded.registers.push(RegisterEvent {
                key,
                client: 0,
                node: client.node,
                op: Operation {
                    call,
                    ret: Some(ret),
                    input: RegInput::Read,
                    output: RegOutput::Read(value),
                },
                revision,
                via_etcd: false,
            });
        }
    }
}

/// Step 3 of [`finish`]: linearizability per key, and one revision per value.
fn check_registers(config: &SuiteConfig, recorded: &Recorded, report: &mut ScheduleReport) {
    // 3. Linearizability per key, and one revision per value.
    let mut by_key: BTreeMap<usize, Vec<&RegisterEvent>> = BTreeMap::new();
    for e in &recorded.registers {
        by_key.entry(e.key).or_default().push(e);
    }
    for (key, events) in &by_key {
        let ops: Vec<Operation<RegInput, RegOutput>> =
            events.iter().map(|e| e.op.clone()).collect();
        match checker::check(&Register, &ops, config.checker_steps_max) {
            Verdict::Linearizable => {}
            Verdict::Undecided => report.undecided_keys += 1,
            Verdict::NotLinearizable => {
                let small =
                    checker::minimize(&Register, &ops, register::well_formed, MINIMIZE_WITHIN);
                let mut lines = vec![format!(
                    "key {}: {} ops are not linearizable; a minimal failing sub-history ({} ops):",
                    register_key(*key),
                    ops.len(),
                    small.len()
                )];
                for op in &small {
                    let who = events
                        .iter()
                        .find(|e| e.op == *op)
                        .map(|e| (e.client, e.node, e.revision));
                    lines.push(format!("  {}", describe(op, who)));
                }
                report.violations.push(Violation {
                    kind: "linearizability",
                    detail: lines.join("\n"),
                });
            }
        }
    }
    let mut revision_of: HashMap<u64, (u64, String)> = HashMap::new();
    for e in &recorded.registers {
        let value = match (&e.op.input, &e.op.output) {
            (RegInput::Read, RegOutput::Read(Some(v))) => *v,
            (RegInput::Write(v), RegOutput::Ok) | (RegInput::Cas { new: v, .. }, RegOutput::Ok) => {
                *v
            }
            _ => continue,
        };
        let Some(revision) = e.revision else { continue };
        let seen = (
            revision,
            describe(&e.op, Some((e.client, e.node, e.revision))),
        );
        match revision_of.get(&value) {
            Some((r, first)) if *r != revision => report.violations.push(Violation {
                kind: "revision",
                detail: format!(
                    "value {} has two revisions:\n  {first}\n  {}",
                    value_name(value),
                    seen.1
                ),
            }),
            Some(_) => {}
            None => {
                revision_of.insert(value, seen);
            }
        }
    }
}

/// Step 4 of [`finish`]: the set.
async fn check_set(clients: &[NodeClient], recorded: &Recorded, report: &mut ScheduleReport) {
    // 4. The set: every node returns the same list; nothing acknowledged lost, nothing twice,
    //    nothing that was never (or definitely not) appended.
    let mut lists = Vec::new();
    for client in clients {
        match client.get(SET_KEY).await {
            Answer::Ok { body, .. } => lists.push((client.node, parse_set(&body))),
            Answer::NotFound => lists.push((client.node, Vec::new())),
            _ => report.violations.push(Violation {
                kind: "convergence",
                detail: format!(
                    "n{} could not serve a read of the set after healing",
                    client.node
                ),
            }),
        }
    }
    if let Some((_, first)) = lists.first() {
        if lists.iter().any(|(_, l)| l != first) {
            let summary: Vec<String> = lists
                .iter()
                .map(|(n, l)| format!("n{n}: {} elements", l.len()))
                .collect();
            report.violations.push(Violation {
                kind: "divergence",
                detail: format!("nodes read different sets: {}", summary.join(", ")),
            });
        }
        let mut count: HashMap<u64, usize> = HashMap::new();
        for e in first {
            *count.entry(*e).or_default() += 1;
        }
        let outcome: HashMap<u64, Outcome> = recorded
            .set
            .iter()
            .map(|s| (s.element, s.outcome))
            .collect();
        let duplicated: Vec<String> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(e, n)| format!("{} ×{n}", value_name(*e)))
            .collect();
        if !duplicated.is_empty() {
            report.violations.push(Violation {
                kind: "set-duplicate",
                detail: format!(
                    "appended once, present more than once: {}",
                    duplicated.join(", ")
                ),
            });
        }
        let lost: Vec<String> = recorded
            .set
            .iter()
            .filter(|s| s.outcome == Outcome::Ok && !count.contains_key(&s.element))
            .map(|s| format!("{} (via n{})", value_name(s.element), s.node))
            .collect();
        report.acked_lost = lost.len();
        if !lost.is_empty() {
            report.violations.push(Violation {
                kind: "set-lost",
                detail: format!(
                    "acknowledged appends missing at the end: {}",
                    lost.join(", ")
                ),
            });
        }
        let phantom: Vec<String> = count
            .keys()
            .filter(|e| !matches!(outcome.get(e), Some(Outcome::Ok | Outcome::Unknown)))
            .map(|e| value_name(*e))
            .collect();
        if !phantom.is_empty() {
            report.violations.push(Violation {
                kind: "set-phantom",
                detail: format!(
                    "present but never appended, or refused: {}",
                    phantom.join(", ")
                ),
            });
        }
    }
}

/// Step 4d of [`finish`].
async fn check_membership(cluster: &Cluster, leader: u64, report: &mut ScheduleReport) {
    let all = cluster.ids();
    // 4d. Membership: every node is a voter again, as the leader sees it (a removal whose
    //     answer was lost may have taken effect after the heal looked).
    let not_voters: Vec<u64> = futures::future::join_all(
        all.iter()
            .map(|id| async { (*id, cluster.is_voter(leader, *id).await) }),
    )
    .await
    .into_iter()
    .filter(|(_, voter)| *voter != Some(true))
    .map(|(id, _)| id)
    .collect();
    if !not_voters.is_empty() || !cluster.removed.is_empty() {
        report.violations.push(Violation {
            kind: "membership",
            detail: format!(
                "after healing, leader n{leader} does not list {not_voters:?} as voters \
                 (not re-added: {:?})",
                cluster.removed
            ),
        });
    }
}

/// Step 5 of [`finish`].
async fn check_watchers(
    watchers: Watchers,
    final_revision: u64,
    recorded: &Recorded,
    report: &mut ScheduleReport,
) {
    // 5. Watchers: every revision once, in order, agreeing, matching acknowledged writes.
    let (findings, checked) = watchers
        .finish(final_revision, &recorded.registers, CONVERGE_WAIT)
        .await;
    report.watch_events = checked;
    for detail in findings {
        report.violations.push(Violation {
            kind: "watch",
            detail,
        });
    }
}

/// Checks every recorded upload on every node (after the heal; a read that fails is retried
/// until CONVERGE_WAIT, since only a node that cannot serve at all fails convergence).
async fn check_files(clients: &[NodeClient], recorded: &Recorded, report: &mut ScheduleReport) {
    for client in clients {
        for upload in &recorded.files {
            let deadline = tokio::time::Instant::now() + CONVERGE_WAIT;
            let answer = loop {
                let answer = client.get_file(&upload.path).await;
                if !matches!(answer, Answer::Unknown) || tokio::time::Instant::now() >= deadline {
                    break answer;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let violation = match (&answer, upload.outcome) {
                (Answer::Ok { body, .. }, _) if blake3::hash(body).as_bytes() != &upload.hash => {
                    Some(("file-corrupt", "returned bytes that were never uploaded"))
                }
                (Answer::Ok { .. }, Outcome::Fail) => Some((
                    "file-phantom",
                    "exists though its upload was never delivered",
                )),
                (Answer::NotFound, Outcome::Ok) => Some(("file-lost", "acknowledged but missing")),
                (Answer::Ok { .. } | Answer::NotFound, _) => None,
                _ => Some(("convergence", "could not be read after healing")),
            };
            if let Some((kind, what)) = violation {
                if kind == "file-lost" {
                    report.acked_lost += 1;
                }
                report.violations.push(Violation {
                    kind,
                    detail: format!(
                        "{} (uploaded via n{}) {what}, on n{}",
                        upload.path, upload.node, client.node
                    ),
                });
            }
        }
    }
    report.files_checked = recorded.files.len();
}

/// Reads the chat room's full history from every node, paging; `None` if a page fails.
async fn chat_history(client: &NodeClient) -> Option<Vec<(u64, String)>> {
    let mut messages = Vec::new();
    let mut after = 0;
    loop {
        let page = client.messages(CHAT_ROOM, after).await?;
        let batch = page["messages"].as_array()?;
        for m in batch {
            messages.push((m["seq"].as_u64()?, m["id"].as_str()?.to_owned()));
        }
        let last_seq = page["last_seq"].as_u64()?;
        match batch.last().and_then(|m| m["seq"].as_u64()) {
            Some(seq) if seq < last_seq => after = seq,
            _ => return Some(messages),
        }
    }
}

async fn check_chat(clients: &[NodeClient], recorded: &Recorded, report: &mut ScheduleReport) {
    let mut histories = Vec::new();
    for client in clients {
        match chat_history(client).await {
            Some(h) => histories.push((client.node, h)),
            None => report.violations.push(Violation {
                kind: "convergence",
                detail: format!(
                    "n{} could not serve the chat history after healing",
                    client.node
                ),
            }),
        }
    }
    let Some((first_node, first)) = histories.first() else {
        return;
    };
    report.chat_messages = first.len();
    let mut violate = |kind: &'static str, detail: String| {
        report.violations.push(Violation { kind, detail });
    };
    for (node, h) in &histories[1..] {
        if let Some(i) = (0..first.len().max(h.len())).find(|i| first.get(*i) != h.get(*i)) {
            violate(
                "chat-order",
                format!(
                    "n{first_node} and n{node} disagree at position {i}: {:?} vs {:?}                      ({} vs {} messages)",
                    first.get(i),
                    h.get(i),
                    first.len(),
                    h.len()
                ),
            );
        }
    }
    if let Some((i, (seq, id))) = first
        .iter()
        .enumerate()
        .find(|(i, (seq, _))| *seq != *i as u64 + 1)
    {
        violate(
            "chat-gap",
            format!(
                "seqs are not 1..{}: position {i} holds seq {seq} ({id})",
                first.len()
            ),
        );
    }
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, id) in first {
        *count.entry(id.as_str()).or_default() += 1;
    }
    let duplicated: Vec<String> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("{id} ×{n}"))
        .collect();
    if !duplicated.is_empty() {
        violate(
            "chat-duplicate",
            format!(
                "posted with one id, stored more than once: {}",
                duplicated.join(", ")
            ),
        );
    }
    let lost: Vec<String> = recorded
        .chat
        .iter()
        .filter(|c| c.outcome == Outcome::Ok && !count.contains_key(c.id.as_str()))
        .map(|c| format!("{} (via n{})", c.id, c.node))
        .collect();
    if !lost.is_empty() {
        report.acked_lost += lost.len();
        report.violations.push(Violation {
            kind: "chat-lost",
            detail: format!("acknowledged posts missing at the end: {}", lost.join(", ")),
        });
    }
}

/// Compares every node's full kv listing (stale reads: no more writes are coming, and every
/// node has applied the same index) and ledger hash at a common index.
async fn same_state_everywhere(cluster: &Cluster) -> Result<(), String> {
    let http = cluster.http();
    let mut listings: Vec<(u64, Value)> = Vec::new();
    let mut heads: Vec<(u64, u64)> = Vec::new();
    for node in &cluster.nodes {
        let get = |path: String| async move {
            let r = http
                .get(format!("{}{path}", node.url()))
                .timeout(FINAL_OP_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("n{}: {e}", node.id))?;
            r.json::<Value>()
                .await
                .map_err(|e| format!("n{}: {e}", node.id))
        };
        let list = get("/v1/kv?prefix=&limit=10000&consistency=stale".into()).await?;
        listings.push((node.id, list["items"].clone()));
        let head = get("/v1/ledger".into()).await?;
        heads.push((node.id, head["index"].as_u64().unwrap_or(0)));
    }
    if let Some((first_id, first)) = listings.first() {
        for (id, items) in &listings[1..] {
            if items != first {
                return Err(format!(
                    "n{id}'s kv state differs from n{first_id}'s after convergence:\n  n{first_id}: {first}\n  n{id}: {items}"
                ));
            }
        }
    }
    let common = heads.iter().map(|(_, i)| *i).min().unwrap_or(0);
    let mut hashes = Vec::new();
    for node in &cluster.nodes {
        let r = http
            .get(format!("{}/v1/ledger?index={common}", node.url()))
            .timeout(FINAL_OP_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("n{}: {e}", node.id))?;
        let v: Value = r.json().await.map_err(|e| format!("n{}: {e}", node.id))?;
        hashes.push((node.id, v["hash"].as_str().unwrap_or("").to_owned()));
    }
    if hashes
        .iter()
        .any(|(_, h)| h.is_empty() || *h != hashes[0].1)
    {
        return Err(format!(
            "ledger hashes at index {common} differ: {hashes:?}"
        ));
    }
    Ok(())
}

/// One op as a line: `[call ms, return ms] c3@n2 cas(c1#4 → c3#7) = ok rev 12`.
fn describe(op: &Operation<RegInput, RegOutput>, who: Option<(u32, u64, Option<u64>)>) -> String {
    let ms = |ns: u64| format!("{:.3}", ns as f64 / 1e6);
    let val = |v: &Option<u64>| v.map_or_else(|| "absent".to_owned(), value_name);
    let input = match &op.input {
        RegInput::Read => "read()".to_owned(),
        RegInput::Write(v) => format!("write({})", value_name(*v)),
        RegInput::Cas { expected, new } => format!("cas({} → {})", val(expected), value_name(*new)),
    };
    let output = match &op.output {
        RegOutput::Read(v) => val(v),
        RegOutput::Ok => "ok".into(),
        RegOutput::CasFailed => "409 mismatch".into(),
        RegOutput::Unknown => "unknown".into(),
    };
    let (client, node, revision) = who.unwrap_or((0, 0, None));
    let client = if client == 0 {
        "final".to_owned()
    } else {
        format!("c{client}")
    };
    format!(
        "[{} ms, {} ms] {client}@n{node} {input} = {output}{}",
        ms(op.call),
        op.ret.map_or_else(|| "∞".into(), ms),
        revision.map_or_else(String::new, |r| format!(" (rev {r})"))
    )
}

fn write_report(
    config: &SuiteConfig,
    report: &ScheduleReport,
    cluster: &mut Cluster,
) -> Option<PathBuf> {
    let mut text = format!(
        "kith-fault violation report\nseed: {}\nnodes: {}\nops: {}\nreplay: kith-fault --kith {} --seed-start {} --seeds 1 --ops {}{}\n\nschedule as run:\n",
        report.seed,
        report.nodes,
        report.ops_invoked,
        config.kith_bin.display(),
        report.seed,
        config.workload.ops,
        if config.node_env.is_empty() { String::new() } else { format!(" (node env {:?})", config.node_env) }
    );
    for line in &report.log {
        text.push_str(&format!("  {line}\n"));
    }
    for v in &report.violations {
        text.push_str(&format!("\nviolation [{}]\n{}\n", v.kind, v.detail));
    }
    eprintln!("{text}");
    let dir = config.report_dir.as_ref()?;
    text.push_str("\n\nnode logs (tails):\n");
    text.push_str(&cluster.log_tails(LOG_TAIL_LINES));
    if let Some(kept) = cluster.keep_files() {
        text.push_str(&format!("\ndata directories kept in {}\n", kept.display()));
    }
    let path = dir.join(format!("seed-{}.txt", report.seed));
    match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text)) {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("kith-fault: cannot write {}: {e}", path.display());
            None
        }
    }
}

/// Totals over a run, and the table the binary prints.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub schedules: usize,
    pub ops_invoked: usize,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_unknown: usize,
    pub faults: BTreeMap<FaultKind, u32>,
    pub violations: usize,
    pub violating_seeds: Vec<u64>,
    pub violation_kinds: BTreeMap<&'static str, usize>,
    pub acked_lost: usize,
    pub undecided_keys: usize,
    pub watch_events: usize,
    pub etcd_ops: usize,
    pub chat_messages: usize,
    /// File uploads checked on every node.
    pub files_checked: usize,
    pub self_exits: usize,
    pub proof: String,
    pub elapsed: Duration,
}

impl Summary {
    pub fn add(&mut self, r: &ScheduleReport) {
        self.schedules += 1;
        self.ops_invoked += r.ops_invoked;
        self.ops_ok += r.ops_ok;
        self.ops_failed += r.ops_failed;
        self.ops_unknown += r.ops_unknown;
        for (k, n) in &r.faults {
            *self.faults.entry(*k).or_default() += n;
        }
        self.violations += r.violations.len();
        if !r.violations.is_empty() {
            self.violating_seeds.push(r.seed);
        }
        for v in &r.violations {
            *self.violation_kinds.entry(v.kind).or_default() += 1;
        }
        self.acked_lost += r.acked_lost;
        self.undecided_keys += r.undecided_keys;
        self.watch_events += r.watch_events;
        self.etcd_ops += r.etcd_ops;
        self.chat_messages += r.chat_messages;
        self.files_checked += r.files_checked;
        self.self_exits += r.self_exits;
    }

    /// A Markdown table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("schedules".into(), self.schedules.to_string()),
            ("ops invoked".into(), self.ops_invoked.to_string()),
            (
                "ops ok / failed / unknown".into(),
                format!(
                    "{} / {} / {}",
                    self.ops_ok, self.ops_failed, self.ops_unknown
                ),
            ),
        ];
        let total: u32 = self.faults.values().sum();
        rows.push((
            "register ops answered through etcd's API".into(),
            self.etcd_ops.to_string(),
        ));
        rows.push(("watch events checked".into(), self.watch_events.to_string()));
        rows.push((
            "chat messages checked".into(),
            self.chat_messages.to_string(),
        ));
        rows.push((
            "file uploads checked".into(),
            self.files_checked.to_string(),
        ));
        rows.push(("faults injected".into(), total.to_string()));
        for (kind, n) in &self.faults {
            rows.push((format!("  {}", kind.name()), n.to_string()));
        }
        rows.push(("violations".into(), self.violations.to_string()));
        for (kind, n) in &self.violation_kinds {
            rows.push((format!("  {kind}"), n.to_string()));
        }
        if !self.violating_seeds.is_empty() {
            rows.push((
                "violating seeds".into(),
                format!("{:?}", self.violating_seeds),
            ));
        }
        rows.push((
            "acknowledged writes lost".into(),
            self.acked_lost.to_string(),
        ));
        rows.push((
            "keys the checker could not decide".into(),
            self.undecided_keys.to_string(),
        ));
        rows.push((
            "nodes that exited on their own (restarted at the heal)".into(),
            self.self_exits.to_string(),
        ));
        rows.push((
            "time".into(),
            format!("{:.1} s", self.elapsed.as_secs_f64()),
        ));
        let mut out = String::from("| metric | value |\n| --- | ---: |\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out
    }
}

/// Opens this run's firewall, proves partitions bite, and runs `seeds`. `on_report` sees
/// each schedule's report as it finishes; returning false stops the run early.
pub async fn run_suite(
    config: &SuiteConfig,
    seeds: &[u64],
    mut on_report: impl FnMut(&ScheduleReport) -> bool,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let fw = Firewall::open()?;
    let mut summary = Summary {
        proof: prove_partitions_bite(config, &fw).await?,
        ..Default::default()
    };
    for seed in seeds {
        let report = run_schedule(config, &fw, *seed)
            .await
            .with_context(|| format!("schedule for seed {seed}"))?;
        summary.add(&report);
        if !on_report(&report) {
            break;
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}
