//! `run_jobs`: the job queue end to end. `--producers` tasks enqueue `--total` no-op jobs
//! into a fresh queue while `--workers` tasks loop claim (long poll) → complete.
//!
//! ```text
//!  producer p (conn p)      ──POST /v1/queues/Q/jobs {"payload":{"t_ns"}}──▶ kith
//!  worker w (conn P + w)    ──POST /v1/queues/Q/claim?wait=1──▶ 200 job | 204
//!                           ──POST /v1/jobs/{id}/complete {"attempt"}──▶ 200
//!                                  │ now − t_ns: enqueue→claim, enqueue→complete
//!                                  ▼
//!                 own JobsTally (two HDR histograms, errors by stage and kind) ──▶ merged
//! ```
//!
//! `t_ns` is read from one monotonic clock (`Instant`) that every task of this process
//! shares, just before the enqueue request is sent; a worker subtracts it from the same
//! clock when the claim's answer arrives. Every task has its own connection, since a claim
//! holds an HTTP/1.1 connection for its whole wait. The run ends when every job is
//! completed (or its enqueue failed), or when nothing completes for [`STALL`] after the
//! producers are done (a completion refused after its lease ran out leaves a job that only
//! comes back once the lease expires).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::error::BenchError;
use crate::targets::kith::{status_error, KithTarget};
use crate::targets::OpError;

/// Highest latency the histograms record (one hour, in microseconds); longer is clamped.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// The long poll of each claim, in seconds.
const CLAIM_WAIT_S: u64 = 1;
/// The lease of each claim, in seconds: a job whose completion was lost comes back after it.
const LEASE_S: u64 = 10;
/// With the producers done, the run gives up after this long without a completion.
const STALL: Duration = Duration::from_secs(2 * LEASE_S + 5);
/// A task pauses this long after a failed request rather than spinning.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Most distinct error kinds kept; the rest are counted under "other".
const ERROR_KINDS_MAX: usize = 32;

/// One task's (and, merged, the run's) results.
pub struct JobsTally {
    /// Enqueue sent → claim answered, per claim.
    pub to_claim_us: Histogram<u64>,
    /// Enqueue sent → completion acknowledged, per completed job.
    pub to_complete_us: Histogram<u64>,
    pub enqueued: u64,
    pub enqueue_failed: u64,
    pub claimed: u64,
    /// Claims answered 204 (nothing ready within the wait).
    pub empty_claims: u64,
    pub completed: u64,
    /// "STAGE KIND" → count.
    pub errors: BTreeMap<String, u64>,
}

impl JobsTally {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds");
        JobsTally {
            to_claim_us: h(),
            to_complete_us: h(),
            enqueued: 0,
            enqueue_failed: 0,
            claimed: 0,
            empty_claims: 0,
            completed: 0,
            errors: BTreeMap::new(),
        }
    }

    fn count_error(&mut self, kind: String, n: u64) {
        let kind = if self.errors.len() >= ERROR_KINDS_MAX && !self.errors.contains_key(&kind) {
            "other".to_owned()
        } else {
            kind
        };
        *self.errors.entry(kind).or_default() += n;
    }

    fn merge(&mut self, other: JobsTally) {
        self.to_claim_us
            .add(&other.to_claim_us)
            .expect("same bounds");
        self.to_complete_us
            .add(&other.to_complete_us)
            .expect("same bounds");
        self.enqueued += other.enqueued;
        self.enqueue_failed += other.enqueue_failed;
        self.claimed += other.claimed;
        self.empty_claims += other.empty_claims;
        self.completed += other.completed;
        for (kind, n) in other.errors {
            self.count_error(kind, n);
        }
    }
}

fn record(h: &mut Histogram<u64>, us: u64) {
    h.record(us.clamp(1, LATENCY_US_MAX))
        .expect("a clamped value is in range");
}

/// The shape of one jobs run.
#[derive(Clone, Debug)]
pub struct JobsSpec {
    pub queue: String,
    pub producers: usize,
    pub workers: usize,
    pub total: u64,
}

/// The merged results of a jobs run.
pub struct JobsPhase {
    pub tally: JobsTally,
    pub duration: Duration,
}

struct Shared {
    /// The clock `t_ns` is read from.
    epoch: Instant,
    total: u64,
    next: AtomicU64,
    completed: AtomicU64,
    enqueue_failed: AtomicU64,
    producers_left: AtomicU64,
    /// Nanoseconds since `epoch` of the latest completion (or of the producers' end).
    last_progress_ns: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn finished(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        let accounted =
            self.completed.load(Ordering::Relaxed) + self.enqueue_failed.load(Ordering::Relaxed);
        let stalled = self.producers_left.load(Ordering::Relaxed) == 0
            && self
                .now_ns()
                .saturating_sub(self.last_progress_ns.load(Ordering::Relaxed))
                > STALL.as_nanos() as u64;
        if accounted >= self.total || stalled {
            self.stop.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Runs `spec` against `target`, which must have `producers + workers` connections.
pub async fn run_jobs(target: Arc<KithTarget>, spec: &JobsSpec) -> Result<JobsPhase, BenchError> {
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        total: spec.total,
        next: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        enqueue_failed: AtomicU64::new(0),
        producers_left: AtomicU64::new(spec.producers as u64),
        last_progress_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let queue: Arc<str> = spec.queue.as_str().into();
    let mut tasks = Vec::with_capacity(spec.producers + spec.workers);
    for p in 0..spec.producers {
        let (target, shared, queue) = (target.clone(), shared.clone(), queue.clone());
        tasks.push(tokio::spawn(producer(target, shared, queue, p)));
    }
    for w in 0..spec.workers {
        let (target, shared, queue) = (target.clone(), shared.clone(), queue.clone());
        tasks.push(tokio::spawn(worker(
            target,
            shared,
            queue,
            spec.producers + w,
        )));
    }
    let mut tally = JobsTally::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(t) => tally.merge(t),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    let duration = shared.epoch.elapsed();
    if let Some(e) = failure {
        return Err(BenchError::Worker(e));
    }
    Ok(JobsPhase { tally, duration })
}

async fn producer(
    target: Arc<KithTarget>,
    shared: Arc<Shared>,
    queue: Arc<str>,
    conn: usize,
) -> JobsTally {
    let mut tally = JobsTally::new();
    let path = format!("/v1/queues/{queue}/jobs");
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.total || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let t_ns = shared.now_ns();
        let body = json!({ "payload": { "t_ns": t_ns, "i": i } }).to_string();
        let result = target
            .call(conn, Method::POST, &path, Bytes::from(body), true)
            .await;
        let error = match result {
            Ok((status, _)) if status.is_success() => None,
            Ok((status, body)) => Some(status_error(status, &body)),
            Err(e) => Some(e),
        };
        match error {
            None => tally.enqueued += 1,
            Some(e) => {
                tally.enqueue_failed += 1;
                shared.enqueue_failed.fetch_add(1, Ordering::Relaxed);
                tally.count_error(format!("enqueue {}", e.kind()), 1);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    if shared.producers_left.fetch_sub(1, Ordering::Relaxed) == 1 {
        // The stall clock starts no earlier than the end of the enqueueing.
        shared
            .last_progress_ns
            .fetch_max(shared.now_ns(), Ordering::Relaxed);
    }
    tally
}

async fn worker(
    target: Arc<KithTarget>,
    shared: Arc<Shared>,
    queue: Arc<str>,
    conn: usize,
) -> JobsTally {
    let mut tally = JobsTally::new();
    let claim_path =
        format!("/v1/queues/{queue}/claim?lease={LEASE_S}&wait={CLAIM_WAIT_S}&worker=bench-{conn}");
    while !shared.finished() {
        let claim = target
            .call(conn, Method::POST, &claim_path, Bytes::new(), false)
            .await;
        let claimed_ns = shared.now_ns();
        let job = match claim {
            Ok((StatusCode::NO_CONTENT, _)) => {
                tally.empty_claims += 1;
                continue;
            }
            Ok((status, body)) if status.is_success() => {
                serde_json::from_slice::<serde_json::Value>(&body).ok()
            }
            Ok((status, body)) => {
                tally.count_error(format!("claim {}", status_error(status, &body).kind()), 1);
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
            Err(e) => {
                tally.count_error(format!("claim {}", e.kind()), 1);
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let parsed = job.as_ref().and_then(|v| {
            Some((
                v["id"].as_u64()?,
                v["attempt"].as_u64()?,
                v["payload"]["t_ns"].as_u64()?,
            ))
        });
        let Some((id, attempt, t_ns)) = parsed else {
            tally.count_error("claim unexpected body".into(), 1);
            continue;
        };
        tally.claimed += 1;
        record(
            &mut tally.to_claim_us,
            claimed_ns.saturating_sub(t_ns) / 1_000,
        );
        let body = json!({ "attempt": attempt }).to_string();
        let result = target
            .call(
                conn,
                Method::POST,
                &format!("/v1/jobs/{id}/complete"),
                Bytes::from(body),
                true,
            )
            .await;
        let error: Option<OpError> = match result {
            Ok((status, _)) if status.is_success() => None,
            Ok((status, body)) => Some(status_error(status, &body)),
            Err(e) => Some(e),
        };
        match error {
            None => {
                let now = shared.now_ns();
                record(&mut tally.to_complete_us, now.saturating_sub(t_ns) / 1_000);
                tally.completed += 1;
                shared.completed.fetch_add(1, Ordering::Relaxed);
                shared.last_progress_ns.fetch_max(now, Ordering::Relaxed);
            }
            Some(e) => {
                tally.count_error(format!("complete {}", e.kind()), 1);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    tally
}
