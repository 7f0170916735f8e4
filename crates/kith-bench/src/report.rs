//! `Report`: the figures of one run, printed for people and written as JSON (`--json`).
//! Latencies come from an HDR histogram in microseconds (3 significant digits), so the
//! percentiles have bounded error and the memory is bounded whatever the run's length.

use std::collections::BTreeMap;
use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procs::ProcUsage;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// The options that shaped the run, echoed so a JSON file explains itself.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    pub target: String,
    pub workload: String,
    pub consistency: String,
    pub clients: usize,
    pub conns: usize,
    pub http: String,
    /// Where writes went: "leader" or "any" (see `--route`).
    pub route: String,
    pub total: u64,
    pub warmup: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential_keys: bool,
    pub read_percent: u8,
    /// `None` for a closed loop.
    pub rate_ops_s: Option<f64>,
    pub seed: u64,
    pub endpoints: Vec<String>,
}

/// The figures of one run (the measured phase only; warm-up is left out).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub config: RunConfig,
    /// Operations that succeeded (reads of absent keys included).
    pub ops: u64,
    /// Reads that found no such key (part of `ops`).
    pub not_found: u64,
    /// Operations that failed.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub duration_s: f64,
    /// `ops / duration_s`.
    pub throughput_ops_s: f64,
    /// Latency of successful operations; in `--rate` mode measured from the scheduled start.
    pub latency: Latency,
    /// The longest time between two consecutive successful completions: under a leader
    /// kill this is the window in which nothing could be done.
    pub success_gap_ms_max: f64,
    /// The target's processes (from `--pids` or `--proc-name`).
    pub processes: Vec<ProcUsage>,
    pub target_cpu_s: f64,
    /// CPU seconds the target used per 1,000 successful operations.
    pub target_cpu_ms_per_kop: f64,
    /// The largest peak RSS among the target's processes.
    pub target_rss_peak_kb_max: u64,
    /// CPU seconds this load generator used during the measured phase.
    pub client_cpu_s: f64,
    /// The load generator's CPU milliseconds per 1,000 successful operations.
    pub client_cpu_ms_per_kop: f64,
    /// `jobs` only: the queue's own figures and the `put` baseline. In a `jobs` report
    /// `ops` counts completed jobs, `throughput_ops_s` is jobs per second, `latency` runs
    /// from enqueue to claim, and the processes' CPU covers the jobs run alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobsFigures>,
}

/// The figures particular to `kith bench jobs`.
#[derive(Clone, Debug, Serialize)]
pub struct JobsFigures {
    /// The fresh queue the run used.
    pub queue: String,
    pub producers: usize,
    pub workers: usize,
    pub enqueued: u64,
    pub enqueue_failed: u64,
    /// Claims that returned a job (a job whose lease ran out can be claimed twice).
    pub claimed: u64,
    /// Claims answered 204 after their long poll.
    pub empty_claims: u64,
    pub completed: u64,
    /// Completed jobs per second (enqueue, claim and complete: three replicated commands).
    pub jobs_per_s: f64,
    /// From just before the enqueue request to the claim's answer.
    pub enqueue_to_claim: Latency,
    /// From just before the enqueue request to the completion's acknowledgement.
    pub enqueue_to_complete: Latency,
    /// The `put` run made first with `producers + workers` clients, one connection each.
    pub put: PutBaseline,
    /// `jobs_per_s / (put.throughput_ops_s / 3)`: 1.0 means a job costs exactly what its
    /// three replicated commands cost as puts.
    pub ratio_to_put_per_3: f64,
}

/// The `put` run a `jobs` run is compared with.
#[derive(Clone, Debug, Serialize)]
pub struct PutBaseline {
    pub clients: usize,
    pub conns: usize,
    pub total: u64,
    pub ops: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub throughput_ops_s: f64,
    pub latency: Latency,
}

impl Report {
    /// The human-readable summary.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let c = &self.config;
        let mode = match c.rate_ops_s {
            Some(r) => format!("open loop at {r} ops/s"),
            None => "closed loop".into(),
        };
        writeln!(
            out,
            "{} {} on {} ({}): {} clients over {} conns (HTTP/{} for kith), writes to {}, {mode}",
            c.target,
            c.workload,
            c.endpoints.join(","),
            c.consistency,
            c.clients,
            c.conns,
            c.http,
            c.route
        )?;
        writeln!(
            out,
            "  ops        {} ok ({} not found), {} errors in {:.2} s",
            self.ops, self.not_found, self.errors, self.duration_s
        )?;
        writeln!(out, "  throughput {:.0} ops/s", self.throughput_ops_s)?;
        let l = &self.latency;
        writeln!(
            out,
            "  latency    mean {:.2} ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
            l.mean_us / 1e3,
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        )?;
        if self.jobs.is_none() {
            writeln!(
                out,
                "  longest gap between successes {:.1} ms",
                self.success_gap_ms_max
            )?;
        }
        if let Some(j) = &self.jobs {
            writeln!(
                out,
                "  jobs       {} completed, {} enqueued ({} failed), {} claims ({} empty), \
                 {} producers + {} workers, queue {}",
                j.completed,
                j.enqueued,
                j.enqueue_failed,
                j.claimed,
                j.empty_claims,
                j.producers,
                j.workers,
                j.queue
            )?;
            for (label, l) in [
                ("enqueue→claim   ", &j.enqueue_to_claim),
                ("enqueue→complete", &j.enqueue_to_complete),
            ] {
                writeln!(
                    out,
                    "  {label} p50 {:.2} ms  p90 {:.2}  p99 {:.2}  max {:.2} ms",
                    ms(l.p50_us),
                    ms(l.p90_us),
                    ms(l.p99_us),
                    ms(l.max_us)
                )?;
            }
            let p = &j.put;
            writeln!(
                out,
                "  put first  {} ok, {} errors with {} clients over {} conns: {:.0} ops/s, \
                 p50 {:.2} ms  p99 {:.2} ms",
                p.ops,
                p.errors,
                p.clients,
                p.conns,
                p.throughput_ops_s,
                ms(p.latency.p50_us),
                ms(p.latency.p99_us)
            )?;
            writeln!(
                out,
                "  ratio      jobs/s ÷ (put ops/s ÷ 3) = {:.2} ({:.0} ÷ {:.0})",
                j.ratio_to_put_per_3,
                j.jobs_per_s,
                p.throughput_ops_s / 3.0
            )?;
        }
        for (kind, n) in &self.errors_by_kind {
            writeln!(out, "  error      {n} × {kind}")?;
        }
        for p in &self.processes {
            writeln!(
                out,
                "  process    {} ({}) cpu {:.2} s  rss {} MiB  peak {} MiB",
                p.pid,
                p.name,
                p.cpu_s,
                p.rss_kb / 1024,
                p.rss_peak_kb / 1024
            )?;
        }
        if !self.processes.is_empty() {
            writeln!(
                out,
                "  target cpu {:.2} s ({:.1} ms per 1000 ops); load generator cpu {:.2} s",
                self.target_cpu_s, self.target_cpu_ms_per_kop, self.client_cpu_s
            )?;
        }
        Ok(())
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}
