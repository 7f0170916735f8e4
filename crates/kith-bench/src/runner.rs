//! `run_phase`: `--clients` worker tasks send the operations of one phase and tally them.
//!
//! ```text
//!  next: AtomicU64 ──claim i──▶ worker w (conn w mod K) ──Plan::op(i)──▶ Target::exec
//!                                   │ closed loop: start now
//!                                   │ --rate R:    start at phase_start + i/R (sleep)
//!                                   ▼
//!                 own Tally (HDR histogram, errors by kind)  ──merged at the end──▶ Phase
//! ```
//!
//! Each worker keeps its own histogram, so recording takes no lock; only the counters the
//! progress line and the gap measurement read are shared atomics. In `--rate` mode latency
//! runs from the operation's *scheduled* start, so a stalled target is charged for the
//! requests it kept waiting (no coordinated omission).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::error::BenchError;
use crate::plan::Plan;
use crate::targets::{Outcome, Target};

/// Highest latency the histogram records (one hour, in microseconds); longer is clamped.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Most distinct error kinds kept; the rest are counted under "other".
const ERROR_KINDS_MAX: usize = 32;
/// A closed-loop client pauses this long after a failed operation, as a real client
/// would, rather than spinning on a refusing endpoint.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// How often the live progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One worker's (and, merged, one phase's) results.
pub struct Tally {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub not_found: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            not_found: 0,
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

    fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds");
        self.ok += other.ok;
        self.not_found += other.not_found;
        for (kind, n) in other.errors {
            self.count_error(kind, n);
        }
    }
}

/// The merged results of one phase.
pub struct Phase {
    pub tally: Tally,
    pub duration: Duration,
    pub success_gap_max: Duration,
}

/// What the workers share.
struct Shared {
    /// The next operation index to claim.
    next: AtomicU64,
    total: u64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Nanoseconds from the phase start to the latest successful completion.
    last_ok_ns: AtomicU64,
    /// The longest interval between two successful completions seen so far.
    gap_max_ns: AtomicU64,
}

/// The shape of one phase.
#[derive(Clone, Copy, Debug)]
pub struct PhaseSpec {
    pub clients: usize,
    pub conns: usize,
    pub total: u64,
    /// `None` for a closed loop.
    pub rate: Option<f64>,
    /// Names the phase on the progress line.
    pub label: &'static str,
    /// Whether to draw the progress line (only ever on a terminal).
    pub progress: bool,
}

/// Runs `spec.total` operations of `plan` with `spec.clients` workers over `target`.
pub async fn run_phase(
    target: Arc<Target>,
    plan: Arc<Plan>,
    spec: &PhaseSpec,
) -> Result<Phase, BenchError> {
    let PhaseSpec {
        clients,
        conns,
        total,
        rate,
        label,
        progress,
    } = *spec;
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        total,
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_ok_ns: AtomicU64::new(0),
        gap_max_ns: AtomicU64::new(0),
    });
    let start = Instant::now();
    let mut workers = Vec::with_capacity(clients);
    for w in 0..clients {
        let (target, plan, shared) = (target.clone(), plan.clone(), shared.clone());
        workers.push(tokio::spawn(worker(
            target,
            plan,
            shared,
            w % conns,
            start,
            rate,
        )));
    }
    let done = Arc::new(AtomicBool::new(false));
    let progress_task = (progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(draw_progress(shared.clone(), done.clone(), start, label)));

    let mut tally = Tally::new();
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(t),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    let duration = start.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(task) = progress_task {
        let _ = task.await;
    }
    if let Some(e) = failure {
        return Err(BenchError::Worker(e));
    }
    // A run that ends in an outage counts the time from the last success to the end.
    let tail =
        (duration.as_nanos() as u64).saturating_sub(shared.last_ok_ns.load(Ordering::Relaxed));
    let gap = shared.gap_max_ns.load(Ordering::Relaxed).max(tail);
    Ok(Phase {
        tally,
        duration,
        success_gap_max: Duration::from_nanos(gap),
    })
}

async fn worker(
    target: Arc<Target>,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    conn: usize,
    start: Instant,
    rate: Option<f64>,
) -> Tally {
    let mut tally = Tally::new();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.total {
            break;
        }
        let scheduled = match rate {
            Some(r) => {
                let at = start + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(at).await;
                at
            }
            None => Instant::now(),
        };
        let op = plan.op(i);
        let result = target.exec(conn, &op).await;
        let now = Instant::now();
        match result {
            Ok(outcome) => {
                let us = (now - scheduled).as_micros() as u64;
                tally
                    .latency_us
                    .record(us.clamp(1, LATENCY_US_MAX))
                    .expect("a clamped value is in range");
                tally.ok += 1;
                if outcome == Outcome::NotFound {
                    tally.not_found += 1;
                }
                shared.ok.fetch_add(1, Ordering::Relaxed);
                let t = (now - start).as_nanos() as u64;
                let previous = shared.last_ok_ns.fetch_max(t, Ordering::Relaxed);
                if t > previous {
                    shared.gap_max_ns.fetch_max(t - previous, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tally.count_error(e.kind(), 1);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                if rate.is_none() {
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
    }
    tally
}

async fn draw_progress(shared: Arc<Shared>, done: Arc<AtomicBool>, start: Instant, label: &str) {
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let finished = done.load(Ordering::Relaxed);
        let ok = shared.ok.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (ok - last.0) as f64 / (now - last.1).as_secs_f64();
        last = (ok, now);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{label}: {}/{} ops, {rate:.0} ops/s, {failed} errors, {:.0} s   ",
            ok + failed,
            shared.total,
            start.elapsed().as_secs_f64()
        );
        let _ = err.flush();
        if finished {
            let _ = writeln!(err);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_every_count_and_bounds_the_kinds() {
        let mut a = Tally::new();
        for i in 0..ERROR_KINDS_MAX {
            a.count_error(format!("k{i}"), 1);
        }
        let mut b = Tally::new();
        b.count_error("new".into(), 2);
        b.count_error("k0".into(), 1);
        b.ok = 5;
        a.merge(b);
        assert_eq!(a.errors.values().sum::<u64>(), ERROR_KINDS_MAX as u64 + 3);
        assert_eq!(a.errors["other"], 2);
        assert_eq!(a.errors["k0"], 2);
        assert_eq!(a.ok, 5);
        assert!(a.errors.len() <= ERROR_KINDS_MAX + 1);
    }
}
