//! `kith worker --queue Q [--concurrency N] -- CMD ARGS…`: pulls jobs and runs a command.
//!
//! Each of N slots claims a job (long poll), runs CMD with the payload on stdin and
//! `KITH_JOB_ID` / `KITH_ATTEMPT` / `KITH_QUEUE` / `KITH_WORKER` (the slot's name, as the
//! claim gave it) in its environment, heartbeats while CMD runs, kills it at
//! the job's timeout, and completes the job with CMD's stdout (bounded) on exit 0 or fails it
//! with the tail of its stderr. On SIGTERM or Ctrl-C it stops claiming, lets running commands
//! finish within `--grace`, then kills them and fails their jobs back to the queue. Every
//! call goes through the failover client, so it survives node failures.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use kith_client::{ClaimedJob, Client};

const CONCURRENCY_MAX: usize = 64;
/// Output kept from a command: stdout as the result, the tail of stderr as the error.
const STDOUT_BYTES_MAX: usize = 60 * 1024;
const STDERR_TAIL_BYTES: usize = 2 * 1024;
/// Long-poll wait per claim.
const CLAIM_WAIT_S: u64 = 10;

#[derive(Args)]
pub struct WorkerArgs {
    /// The queue to work on.
    #[arg(long)]
    queue: String,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Lease per claim and heartbeat, in seconds.
    #[arg(long, default_value_t = 30)]
    lease: u64,
    /// On SIGTERM, seconds to let running jobs finish before failing them back.
    #[arg(long, default_value_t = 30)]
    grace: u64,
    /// This worker's name as the cluster shows it (default: host and pid).
    #[arg(long)]
    name: Option<String>,
    /// Exit when the parent process exits (used by `kith dev` so no worker outlives it).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    #[command(flatten)]
    common: crate::commands::Common,
    /// The command to run for each job, and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    // Read first: a parent that dies while this worker starts must still count as gone.
    let parent = std::os::unix::process::parent_id();
    if args.concurrency == 0 || args.concurrency > CONCURRENCY_MAX {
        bail!("--concurrency must be 1 to {CONCURRENCY_MAX}");
    }
    if !(1..=3600).contains(&args.lease) {
        bail!("--lease must be 1 to 3600 seconds");
    }
    kith_core::limits::validate_room(&args.queue).context("invalid --queue")?;
    let client = Arc::new(args.common.client()?);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (kill_tx, kill_rx) = watch::channel(false);
    eprintln!(
        "kith worker {name}: {} slot(s) on queue '{}' running {:?}",
        args.concurrency, args.queue, args.command
    );
    let mut slots = Vec::new();
    for slot in 0..args.concurrency {
        let ctx = Slot {
            client: client.clone(),
            queue: args.queue.clone(),
            command: args.command.clone(),
            lease_s: args.lease,
            worker: format!("{name}/{slot}"),
            stop: stop_rx.clone(),
            kill: kill_rx.clone(),
        };
        slots.push(tokio::spawn(ctx.run()));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = orphaned(args.exit_with_parent, parent) => {}
    }
    eprintln!(
        "kith worker {name}: stopping; running jobs get {} s to finish",
        args.grace
    );
    let _ = stop_tx.send(true);
    let all = futures_join(slots);
    if tokio::time::timeout(Duration::from_secs(args.grace), all)
        .await
        .is_err()
    {
        let _ = kill_tx.send(true);
        // The slots now kill their commands and fail their jobs; give them a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Resolves when the parent process `parent` has gone: this process was re-parented (to
/// init, or to a subreaper). Never without `exit_with_parent`.
async fn orphaned(exit_with_parent: bool, parent: u32) {
    if !exit_with_parent {
        return std::future::pending().await;
    }
    loop {
        let now = std::os::unix::process::parent_id();
        if now != parent || now == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

struct Slot {
    client: Arc<Client>,
    queue: String,
    command: Vec<String>,
    lease_s: u64,
    worker: String,
    /// Set on SIGTERM: claim nothing more.
    stop: watch::Receiver<bool>,
    /// Set when the grace period is over: kill the running command.
    kill: watch::Receiver<bool>,
}

/// How one run of the command ended.
enum Outcome {
    Exited {
        success: bool,
        code: Option<i32>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    TimedOut,
    Killed,
}

impl Slot {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        while !*self.stop.borrow() {
            let claimed = tokio::select! {
                c = self.client.claim(&self.queue, self.lease_s, CLAIM_WAIT_S, &self.worker) => c,
                _ = self.stop.changed() => break,
            };
            match claimed {
                Ok(Some(job)) => {
                    backoff = Duration::from_millis(200);
                    self.work(job).await;
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("kith worker {}: claim failed: {e}", self.worker);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn work(&mut self, job: ClaimedJob) {
        let outcome = self.execute(&job).await;
        let (action, extra) = match outcome {
            Outcome::Exited {
                success: true,
                stdout,
                ..
            } => {
                let text = String::from_utf8_lossy(&stdout).trim().to_owned();
                let result = serde_json::from_str::<Value>(&text).unwrap_or(json!(text));
                ("complete", json!({ "result": result }))
            }
            Outcome::Exited { code, stderr, .. } => {
                let tail = tail(&stderr, STDERR_TAIL_BYTES);
                let error = match code {
                    Some(c) if tail.is_empty() => format!("exit status {c}"),
                    Some(c) => format!("exit status {c}: {tail}"),
                    None => format!("killed by a signal: {tail}"),
                };
                ("fail", json!({ "error": error }))
            }
            Outcome::TimedOut => (
                "fail",
                json!({ "error": format!("timed out after {} s", job.timeout_s) }),
            ),
            Outcome::Killed => (
                "fail",
                json!({ "error": "the worker stopped before the job finished" }),
            ),
        };
        if let Err(e) = self.client.report(job.id, action, job.attempt, extra).await {
            // Refused (the lease ran out and the job moved on) or unreachable: either way the
            // cluster retries the job; nothing is lost.
            eprintln!(
                "kith worker {}: could not {action} job {}: {e}",
                self.worker, job.id
            );
        }
    }

    async fn execute(&mut self, job: &ClaimedJob) -> Outcome {
        let spawned = Command::new(&self.command[0])
            .args(&self.command[1..])
            .env("KITH_JOB_ID", job.id.to_string())
            .env("KITH_ATTEMPT", job.attempt.to_string())
            .env("KITH_QUEUE", &self.queue)
            .env("KITH_WORKER", &self.worker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Exited {
                    success: false,
                    code: Some(127),
                    stdout: Vec::new(),
                    stderr: format!("cannot run {:?}: {e}", self.command[0]).into_bytes(),
                }
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let payload = job.payload.to_string();
            // A command that ignores its stdin may close it early; that is fine.
            let _ = stdin.write_all(payload.as_bytes()).await;
        }
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let read_out = async move {
            let mut buf = Vec::new();
            let _ = (&mut stdout)
                .take(STDOUT_BYTES_MAX as u64)
                .read_to_end(&mut buf)
                .await;
            buf
        };
        let read_err = async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        };
        let outputs = tokio::spawn(async move { tokio::join!(read_out, read_err) });
        let heartbeat_every = Duration::from_secs((self.lease_s / 3).max(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(job.timeout_s);
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat_every,
            heartbeat_every,
        );
        loop {
            tokio::select! {
                status = child.wait() => {
                    let (stdout, stderr) = outputs.await.unwrap_or_default();
                    return match status {
                        Ok(s) => Outcome::Exited { success: s.success(), code: s.code(), stdout, stderr },
                        Err(e) => Outcome::Exited { success: false, code: None, stdout, stderr: e.to_string().into_bytes() },
                    };
                }
                _ = ticker.tick() => {
                    let extra = json!({ "lease": self.lease_s });
                    if let Err(e) = self.client.report(job.id, "heartbeat", job.attempt, extra).await {
                        eprintln!("kith worker {}: heartbeat for job {} failed: {e}", self.worker, job.id);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = child.kill().await;
                    return Outcome::TimedOut;
                }
                _ = self.kill.changed() => {
                    let _ = child.kill().await;
                    return Outcome::Killed;
                }
            }
        }
    }
}

fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}
