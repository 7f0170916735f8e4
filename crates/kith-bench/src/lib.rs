//! `kith-bench`: the load generator behind `kith bench put|get|mixed`, modelled on etcd's
//! `benchmark` tool, for kith (HTTP) and etcd (gRPC, `etcd` feature) alike.
//!
//! ```text
//! BenchArgs ──validate──▶ Target (K connections) ◀──exec── C workers ◀── Plan (seeded keys)
//!                                                             │
//!   Procs (/proc CPU, peak RSS of the target's pids) ─────────┴──▶ Report ──▶ stdout, --json
//! ```
//!
//! Modules: [`args`] (options and their bounds), [`plan`] (the deterministic operation
//! sequence), [`targets`] (kith over HTTP, etcd over gRPC), [`conn`] (kith endpoints and
//! their plain or TLS connections), [`runner`] (workers, rate control, progress line),
//! [`procs`] (target CPU time and RSS), [`report`] (figures, summary, JSON), [`error`].
//!
//! It measures; it refuses to judge. No thresholds, no pass/fail on figures: the caller
//! (bench/vs-etcd.sh, the smoke test) decides what a run means.

pub mod args;
pub mod conn;
pub mod error;
pub mod files;
pub mod jobs;
pub mod plan;
pub mod procs;
pub mod report;
pub mod runner;
pub mod targets;

use std::sync::Arc;

pub use args::BenchArgs;
pub use error::BenchError;
pub use report::Report;

use args::{HttpVersion, ReadConsistency, Route, TargetKind, Workload};
use conn::ClientTls;
use plan::Plan;
use procs::Procs;
use report::{JobsFigures, Latency, PutBaseline, RunConfig};
use runner::PhaseSpec;
use targets::Target;

/// Runs the benchmark `args` describes: warm-up (unmeasured), then the measured phase;
/// prints the summary to stdout and writes `--json`. A run in which every operation failed
/// is an error (after the report is written), since its figures mean nothing.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    args.validate()?;
    let pids = match &args.proc_name {
        Some(name) => procs::discover(name, &args.endpoints),
        None => args.pids.clone(),
    };
    let tls = client_tls(&args)?;
    if args.workload == Workload::Jobs {
        let report = run_jobs(&args, &pids, tls.as_ref()).await?;
        return finish(&args, report);
    }
    if args.workload == Workload::Files {
        return files::run(&args, tls.as_ref()).await;
    }
    let target = Arc::new(Target::new(&args, tls.as_ref())?);
    let spec = |total, label| PhaseSpec {
        clients: args.clients,
        conns: args.conns,
        total,
        rate: args.rate,
        label,
        progress: !args.quiet,
    };
    if args.warmup > 0 {
        let plan = Arc::new(Plan::new(&args, 0));
        runner::run_phase(target.clone(), plan, &spec(args.warmup, "warm-up")).await?;
    }
    let procs = Procs::start(&pids);
    let client_cpu_s_start = procs::own_cpu_s();
    let plan = Arc::new(Plan::new(&args, 1));
    let phase = runner::run_phase(target, plan, &spec(args.total, "measure")).await?;
    let processes = procs.finish();
    let client_cpu_s = procs::own_cpu_s() - client_cpu_s_start;

    let duration_s = phase.duration.as_secs_f64();
    let ops = phase.tally.ok;
    let errors: u64 = phase.tally.errors.values().sum();
    let target_cpu_s: f64 = processes.iter().map(|p| p.cpu_s).sum();
    let per_kop = |cpu_s: f64| {
        if ops > 0 {
            cpu_s * 1e3 / (ops as f64 / 1e3)
        } else {
            0.0
        }
    };
    let report = Report {
        config: config(&args),
        ops,
        not_found: phase.tally.not_found,
        errors,
        errors_by_kind: phase.tally.errors.clone(),
        duration_s,
        throughput_ops_s: if duration_s > 0.0 {
            ops as f64 / duration_s
        } else {
            0.0
        },
        latency: Latency::from_histogram(&phase.tally.latency_us),
        success_gap_ms_max: phase.success_gap_max.as_secs_f64() * 1e3,
        target_cpu_ms_per_kop: per_kop(target_cpu_s),
        target_cpu_s,
        target_rss_peak_kb_max: processes.iter().map(|p| p.rss_peak_kb).max().unwrap_or(0),
        processes,
        client_cpu_s,
        client_cpu_ms_per_kop: per_kop(client_cpu_s),
        jobs: None,
    };
    finish(&args, report)
}

/// Prints the summary, writes `--json`, and refuses a run in which everything failed.
fn finish(args: &BenchArgs, report: Report) -> Result<Report, BenchError> {
    let (ops, errors) = (report.ops, report.errors);
    let _ = report.print(&mut std::io::stdout().lock());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).expect("a report always serialises");
        std::fs::write(path, json).map_err(|source| BenchError::WriteReport {
            path: path.clone(),
            source,
        })?;
    }
    if ops == 0 && errors > 0 {
        let kinds: Vec<&str> = report
            .errors_by_kind
            .keys()
            .map(String::as_str)
            .take(3)
            .collect();
        return Err(BenchError::AllFailed {
            errors,
            kinds: kinds.join(", "),
        });
    }
    Ok(report)
}

/// `kith bench jobs`: first a `put` run with `producers + workers` clients (one connection
/// each, `--warmup` puts before it), then the jobs run on a fresh queue with the same
/// number of connections. The report's main figures are the jobs run's.
async fn run_jobs(
    args: &BenchArgs,
    pids: &[u32],
    tls: Option<&ClientTls>,
) -> Result<Report, BenchError> {
    let clients = args.producers + args.workers;
    let mut put_args = args.clone();
    put_args.workload = Workload::Put;
    put_args.clients = clients;
    put_args.conns = clients;
    // As many puts as the jobs run makes replicated commands.
    put_args.total = args.total.saturating_mul(3).min(args::TOTAL_MAX);
    let spec = |total, label| PhaseSpec {
        clients,
        conns: clients,
        total,
        rate: None,
        label,
        progress: !args.quiet,
    };
    let put_target = Arc::new(Target::new(&put_args, tls)?);
    if args.warmup > 0 {
        let plan = Arc::new(Plan::new(&put_args, 0));
        runner::run_phase(put_target.clone(), plan, &spec(args.warmup, "warm-up")).await?;
    }
    let plan = Arc::new(Plan::new(&put_args, 1));
    let put = runner::run_phase(put_target, plan, &spec(put_args.total, "put first")).await?;
    let put_duration_s = put.duration.as_secs_f64();
    let put_ops_s = if put_duration_s > 0.0 {
        put.tally.ok as f64 / put_duration_s
    } else {
        0.0
    };
    let baseline = PutBaseline {
        clients,
        conns: clients,
        total: put_args.total,
        ops: put.tally.ok,
        errors: put.tally.errors.values().sum(),
        duration_s: put_duration_s,
        throughput_ops_s: put_ops_s,
        latency: Latency::from_histogram(&put.tally.latency_us),
    };

    let target = Arc::new(targets::kith::KithTarget::new(
        &args.endpoints,
        clients,
        targets::kith::KithOptions {
            http: args.http,
            stale: false,
            timeout: std::time::Duration::from_millis(args.timeout_ms),
            follow_leader: args.route == Route::Leader,
            tls: tls.cloned(),
            token: args.token.clone(),
        },
    )?);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let spec = jobs::JobsSpec {
        queue: format!("bench-{}-{unix_ms}", std::process::id()),
        producers: args.producers,
        workers: args.workers,
        total: args.total,
    };
    let procs = Procs::start(pids);
    let client_cpu_s_start = procs::own_cpu_s();
    let phase = jobs::run_jobs(target, &spec).await?;
    let processes = procs.finish();
    let client_cpu_s = procs::own_cpu_s() - client_cpu_s_start;

    let t = &phase.tally;
    let duration_s = phase.duration.as_secs_f64();
    let jobs_per_s = if duration_s > 0.0 {
        t.completed as f64 / duration_s
    } else {
        0.0
    };
    let per_kop = |cpu_s: f64| {
        if t.completed > 0 {
            cpu_s * 1e3 / (t.completed as f64 / 1e3)
        } else {
            0.0
        }
    };
    let target_cpu_s: f64 = processes.iter().map(|p| p.cpu_s).sum();
    let mut config = config(args);
    config.clients = clients;
    config.conns = clients;
    Ok(Report {
        config,
        ops: t.completed,
        not_found: 0,
        errors: t.errors.values().sum(),
        errors_by_kind: t.errors.clone(),
        duration_s,
        throughput_ops_s: jobs_per_s,
        latency: Latency::from_histogram(&t.to_claim_us),
        // Completions are not timed one by one against the run's start here.
        success_gap_ms_max: 0.0,
        target_cpu_ms_per_kop: per_kop(target_cpu_s),
        target_cpu_s,
        target_rss_peak_kb_max: processes.iter().map(|p| p.rss_peak_kb).max().unwrap_or(0),
        processes,
        client_cpu_s,
        client_cpu_ms_per_kop: per_kop(client_cpu_s),
        jobs: Some(JobsFigures {
            queue: spec.queue,
            producers: args.producers,
            workers: args.workers,
            enqueued: t.enqueued,
            enqueue_failed: t.enqueue_failed,
            claimed: t.claimed,
            empty_claims: t.empty_claims,
            completed: t.completed,
            jobs_per_s,
            enqueue_to_claim: Latency::from_histogram(&t.to_claim_us),
            enqueue_to_complete: Latency::from_histogram(&t.to_complete_us),
            put: baseline,
            ratio_to_put_per_3: if put_ops_s > 0.0 {
                jobs_per_s / (put_ops_s / 3.0)
            } else {
                0.0
            },
        }),
    })
}

/// The run's one TLS configuration towards kith, when it has `https` endpoints (etcd's
/// client builds its own: see `targets::etcd`).
fn client_tls(args: &BenchArgs) -> Result<Option<ClientTls>, BenchError> {
    let https = args.endpoints.iter().any(|e| e.starts_with("https://"));
    // `BenchArgs::validate` refused https endpoints without --ca.
    let (Some(ca), true, TargetKind::Kith) = (args.ca.as_deref(), https, args.target) else {
        return Ok(None);
    };
    let identity = args.cert.as_deref().zip(args.key.as_deref());
    ClientTls::new(ca, identity).map(Some)
}

fn config(args: &BenchArgs) -> RunConfig {
    RunConfig {
        target: match args.target {
            TargetKind::Kith => "kith",
            TargetKind::Etcd => "etcd",
        }
        .into(),
        workload: match args.workload {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Jobs => "jobs",
            Workload::Files => "files",
        }
        .into(),
        consistency: match args.consistency {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Stale => "stale",
        }
        .into(),
        clients: args.clients,
        conns: args.conns,
        http: match args.http {
            HttpVersion::Http1 => "1.1",
            HttpVersion::Http2 => "2",
        }
        .into(),
        route: match args.route {
            Route::Leader => "leader",
            Route::Any => "any",
        }
        .into(),
        total: args.total,
        warmup: args.warmup,
        key_size: args.key_size,
        val_size: args.val_size,
        key_space: args.key_space,
        sequential_keys: args.sequential_keys,
        read_percent: args.read_percent,
        rate_ops_s: args.rate,
        seed: args.seed,
        endpoints: args.endpoints.clone(),
    }
}
