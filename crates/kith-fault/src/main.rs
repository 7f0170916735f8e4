//! `kith-fault`: long fault-injection runs against a `kith` binary.
//!
//! ```text
//! cargo build --release -p kith
//! cargo run -p kith-fault --release -- --kith target/release/kith --seeds 200 --ops 1000
//! ```
//!
//! Runs as root (nftables). Prints each schedule's line as it finishes and a summary table at
//! the end; every violation is printed and written to `--report-dir/seed-N.txt` with the
//! schedule as run and the minimal failing sub-history. Exits 1 if anything was found.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kith_fault::{run_suite, FaultKind, SuiteConfig};

#[derive(Parser)]
#[command(name = "kith-fault", about = "Jepsen-style fault injection for kith")]
struct Args {
    /// The kith binary to run as nodes.
    #[arg(long, default_value = "target/release/kith")]
    kith: PathBuf,
    /// How many schedules (seeds) to run.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed; schedules use seed-start, seed-start + 1, …
    #[arg(long, default_value_t = 1)]
    seed_start: u64,
    /// Operations per schedule.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Offered load per schedule, operations per second.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Cluster size (default: 3, or 5 for one seed in four).
    #[arg(long)]
    nodes: Option<u64>,
    /// Only partitions (minority, leader, one-way): the quickest way to expose stale reads.
    #[arg(long)]
    partitions_only: bool,
    /// Only these kinds of fault, comma-separated by name (e.g. `membership,kill`).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind, conflicts_with = "partitions_only")]
    kinds: Vec<FaultKind>,
    /// Plant a known bug in the nodes (needs a kith built with test hooks, as `cargo test`
    /// builds it): e.g. `stale_reads`.
    #[arg(long)]
    plant_bug: Option<String>,
    /// Where violation reports go.
    #[arg(long, default_value = "kith-fault-reports")]
    report_dir: PathBuf,
    /// Stop at the first schedule with a violation.
    #[arg(long)]
    stop_on_violation: bool,
    /// Start no new schedule after this many minutes (the summary covers those run).
    #[arg(long)]
    minutes_max: Option<f64>,
    /// Print each schedule's fault log.
    #[arg(long, short)]
    verbose: bool,
    /// Run the nodes with TLS (certificates from `kith init`, `kith serve --tls`).
    #[arg(long)]
    tls: bool,
}

fn parse_kind(name: &str) -> Result<FaultKind, String> {
    FaultKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault kind; one of {}", names.join(", "))
        })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.kith.exists() {
        eprintln!(
            "kith-fault: no kith binary at {} (build it: cargo build --release -p kith)",
            args.kith.display()
        );
        return ExitCode::from(2);
    }
    let mut config = SuiteConfig::new(&args.kith);
    config.workload.ops = args.ops;
    config.workload.rate_per_s = args.rate;
    config.nodes = args.nodes;
    config.report_dir = Some(args.report_dir.clone());
    config.verbose = args.verbose;
    config.tls = args.tls;
    if args.partitions_only {
        config.kinds = FaultKind::PARTITIONS.to_vec();
    }
    if !args.kinds.is_empty() {
        config.kinds = args.kinds.clone();
    }
    if let Some(bug) = &args.plant_bug {
        config.node_env.push(("KITH_TEST_BUG".into(), bug.clone()));
    }
    let seeds: Vec<u64> = (args.seed_start..args.seed_start + args.seeds).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kith-fault: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let total = seeds.len();
    let mut done = 0usize;
    let started = std::time::Instant::now();
    let deadline = args
        .minutes_max
        .map(|m| started + Duration::from_secs_f64(m * 60.0));
    let result = runtime.block_on(run_suite(&config, &seeds, |r| {
        done += 1;
        let faults: u32 = r.faults.values().sum();
        println!(
            "[{done}/{total}] seed {:>5}  n={}  ops {:>5} (ok {}, fail {}, unknown {})  faults {:>2}  violations {}  {:.1} s{}",
            r.seed,
            r.nodes,
            r.ops_invoked,
            r.ops_ok,
            r.ops_failed,
            r.ops_unknown,
            faults,
            r.violations.len(),
            r.elapsed.as_secs_f64(),
            r.report_file
                .as_ref()
                .map(|p| format!("  → {}", p.display()))
                .unwrap_or_default()
        );
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            println!("time budget of {:?} minutes spent; stopping after {done} schedules", args.minutes_max.unwrap_or_default());
            return false;
        }
        !args.stop_on_violation || r.violations.is_empty()
    }));
    // Nodes and the nftables table are gone by now (dropped inside run_suite).
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(summary) => {
            println!("\n{}\n", summary.proof);
            println!("{}", summary.table());
            if summary.violations == 0 && summary.acked_lost == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kith-fault: the run could not be completed: {e:#}");
            ExitCode::from(2)
        }
    }
}
