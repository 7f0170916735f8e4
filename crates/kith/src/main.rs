//! `kith`: the one binary. `serve` runs a node, `dev` runs a local cluster, and the other
//! subcommands are clients of a running cluster.
//!
//! Modules: [`serve`] (one node), [`backup`] (`kith backup` and `kith restore`), [`recover`] (`kith recover`), [`config`] (`kith serve --config FILE` and its precedence), [`init`] (certificates for a cluster with TLS), [`dev`] (the local-cluster supervisor), [`commands`] (the
//! client subcommands and their table/json output), [`chat`] (the terminal chat client),
//! [`worker`] (`kith worker`, which runs jobs), [`files`] (`kith files`, transfers with
//! progress bars), [`out`] (standard output that ends quietly when its reader goes).

#[macro_use]
mod out;

mod backup;
mod chat;
mod commands;
mod config;
mod dev;
mod files;
mod init;
mod recover;
mod serve;
mod worker;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: under many concurrent writes a node allocates and
/// frees small buffers on every thread (HTTP, postcard, redb pages), and glibc's
/// `malloc`/`free`/`malloc_consolidate` showed up as a large share of a node's CPU in
/// profiles (docs/history/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Endpoints of the cluster `kith dev` starts by default.
pub const DEV_ENDPOINTS: &str = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003";

#[derive(Parser)]
#[command(
    name = "kith",
    version,
    about = "One small binary per computer; together they behave like one dependable machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run one node.
    Serve(serve::ServeArgs),
    /// Create a cluster identity: CA, node certificates, first admin token.
    Init(init::InitArgs),
    /// Start a local cluster of child processes on 127.0.0.1; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Key-value store: put, get, del, ls.
    Kv(commands::KvArgs),
    /// Cluster membership and status.
    Cluster(commands::ClusterArgs),
    /// The ledger: prove that every replica holds the same history.
    Ledger(commands::LedgerArgs),
    /// Chat in a room from the terminal.
    Chat(chat::ChatArgs),
    /// The job queue: push, ls, get, dead, retry, cancel.
    Jobs(commands::JobsArgs),
    /// Pull jobs from a queue and run a command for each.
    Worker(worker::WorkerArgs),
    /// Replicated files: put, get, ls, rm, share, unshare, where.
    Files(files::FilesArgs),
    /// Client tokens: create, ls, revoke.
    Token(commands::TokenArgs),
    /// Save a consistent copy of the cluster's state to FILE.
    Backup(backup::BackupArgs),
    /// Make a new cluster member's data directory from a backup (once per member).
    Restore(backup::RestoreArgs),
    /// After losing a quorum: make a survivor the one member of a new cluster.
    Recover(recover::RecoverArgs),
    /// Load generator for kith (or etcd): throughput, latency percentiles, errors.
    Bench(kith_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let argv = match config::with_config_file(std::env::args_os().collect(), &Cli::command()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("kith: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    kith_client::tls::install_default_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kith: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Top::Serve(args) => serve::run(args).await,
            Top::Init(args) => init::run(args),
            Top::Dev(args) => dev::run(args).await,
            Top::Kv(args) => commands::kv(args).await,
            Top::Cluster(args) => commands::cluster(args).await,
            Top::Ledger(args) => commands::ledger(args).await,
            Top::Chat(args) => chat::run(args).await,
            Top::Jobs(args) => commands::jobs(args).await,
            Top::Worker(args) => worker::run(args).await,
            Top::Files(args) => files::run(args).await,
            Top::Token(args) => commands::token(args).await,
            Top::Backup(args) => backup::backup(args).await,
            Top::Restore(args) => backup::restore(args).await,
            Top::Recover(args) => recover::run(args),
            Top::Bench(args) => kith_bench::run(args).await.map(drop).map_err(Into::into),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output has gone (`kith … | head`): nothing more to say.
        Err(e) if out::is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
