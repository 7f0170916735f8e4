//! `BenchArgs`: the options of `kith bench`, modelled on etcd's `benchmark` tool, and the
//! bounds every one of them must respect. Validation happens once, before any connection.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::error::BenchError;

/// Endpoints of the cluster `kith dev` starts (the same default as every other client
/// subcommand of the binary).
pub const DEV_ENDPOINTS: &str = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003";
/// Most concurrent clients (tasks issuing requests).
pub const CLIENTS_MAX: usize = 10_000;
/// Most connections to the target.
pub const CONNS_MAX: usize = 1_024;
/// Most operations in one run (warm-up excluded), so a run always ends.
pub const TOTAL_MAX: u64 = 1_000_000_000;
/// Longest key: kith's own key limit.
pub const KEY_BYTES_MAX: usize = 4_096;
/// Largest value: kith's default value limit (1 MiB).
pub const VAL_BYTES_MAX: usize = 1 << 20;
/// Largest `files` upload: kith's default file limit (10 GiB).
pub const FILE_BYTES_MAX: u64 = 10 << 30;
/// Longest per-operation timeout.
pub const TIMEOUT_MS_MAX: u64 = 600_000;

/// What each operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Write a `--val-size` value to a key.
    Put,
    /// Read a key with `--consistency`.
    Get,
    /// Reads and writes, `--read-percent` of them reads.
    Mixed,
    /// The job queue end to end: `--producers` enqueue `--total` no-op jobs while
    /// `--workers` claim and complete them; preceded by a `put` run with as many clients.
    Jobs,
    /// Upload then download one `--bytes` file, against the disk's fsynced write rate
    /// divided by the replicas (see `files.rs`).
    Files,
}

/// Read consistency, as kith and etcd both name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadConsistency {
    /// kith: read index through the leader; etcd: the default (linearizable) range.
    Linearizable,
    /// kith: `?consistency=stale`; etcd: a serializable range.
    Stale,
}

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// kith's HTTP API (`/v1/kv/{key}`).
    Kith,
    /// etcd's gRPC API (needs a binary built with the `etcd` feature).
    Etcd,
}

/// HTTP protocol towards kith.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HttpVersion {
    /// One request at a time per connection: clients sharing a connection queue for it.
    #[value(name = "1")]
    Http1,
    /// HTTP/2 (h2c with prior knowledge; over TLS, agreed by ALPN): clients multiplex over
    /// each connection.
    #[value(name = "2")]
    Http2,
}

/// Where a connection sends the writes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Route {
    /// Straight to the leader. kith: a connection whose write is answered with a
    /// `kith-leader` header naming another of the endpoints moves there, as kith's client
    /// does. etcd: a connection of a run with writes (`put`, `mixed`) asks its member for
    /// the leader when it connects, and connects to the leader instead when it is one of
    /// the endpoints (etcd's own client does not do this; it is etcd at its best).
    Leader,
    /// Each connection stays on its endpoint, and a follower forwards the writes it gets.
    Any,
}

/// `kith bench put|get|mixed|jobs|files [options]`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// The operation mix.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Concurrent clients; each issues one request at a time. (`jobs`: set by
    /// `--producers` and `--workers` instead.)
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// `jobs`: tasks enqueueing jobs, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// `jobs`: in-process workers, each on its own connection, looping claim (long poll
    /// of 1 s) then complete.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Connections the clients share (client i uses connection i mod conns).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Operations to measure (after the warm-up).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Operations run first and left out of every figure.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Key length in bytes (keys are zero-padded decimal numbers).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Number of distinct keys; must fit in `--key-size` decimal digits.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// Key i is i mod key-space instead of a seeded random key (to pre-fill a key space).
    #[arg(long)]
    pub sequential_keys: bool,
    /// Percent of operations that are reads in `mixed`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Read consistency for `get` and `mixed`.
    #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
    pub consistency: ReadConsistency,
    /// Fixed offered load in operations per second over all clients (open loop; latency
    /// is measured from each operation's scheduled start). Default: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seed of the key sequence; the same seed gives the same keys in the same order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The system under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Kith)]
    pub target: TargetKind,
    /// HTTP version towards kith.
    #[arg(long, value_enum, default_value_t = HttpVersion::Http1)]
    pub http: HttpVersion,
    /// Where writes go: straight to the leader, or to whichever endpoint a connection has.
    #[arg(long, value_enum, default_value_t = Route::Leader)]
    pub route: Route,
    /// Comma-separated endpoint URLs; connections are spread over them round-robin.
    /// Default: the `kith dev` cluster.
    #[arg(long, env = "KITH_ENDPOINTS", value_delimiter = ',', default_value = DEV_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// The CA to trust for `https://` endpoints (PEM; kith: `DIR/ca.crt` from `kith init`).
    /// No system roots are trusted.
    #[arg(long, env = "KITH_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to present over TLS, with `--key` (etcd run with
    /// `--client-cert-auth` needs one).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The token to present to kith (`ID.SECRET`; a cluster with TLS asks every request
    /// for one).
    #[arg(long, env = "KITH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// etcd only: authenticate as this user (`NAME:PASSWORD`, as etcdctl's `--user`), for an
    /// etcd with `auth enable`; each connection gets its token once, when it connects.
    #[arg(
        long,
        env = "ETCD_USER",
        hide_env_values = true,
        value_name = "NAME:PASSWORD"
    )]
    pub user: Option<String>,
    /// The private key (PEM) of `--cert`.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Per-operation timeout in milliseconds; a timed-out operation counts as an error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Pids of the target's processes, whose CPU time and peak RSS the report records.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Find the target's processes by name instead: processes called NAME whose command
    /// line mentions one of the endpoints' HOST:PORT.
    #[arg(long, conflicts_with = "pids")]
    pub proc_name: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Never print the live progress line (it is shown only on a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
    /// `files`: the file's size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// `files`: where to measure the disk (default: the temp dir); the cluster's data
    /// directories should be on this filesystem.
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
}

impl BenchArgs {
    /// Checks every bound; nothing connects before this passes.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::InvalidArgs(m));
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return bad(format!("--clients must be in 1..={CLIENTS_MAX}"));
        }
        if self.conns == 0 || self.conns > CONNS_MAX {
            return bad(format!("--conns must be in 1..={CONNS_MAX}"));
        }
        if self.conns > self.clients {
            return bad("--conns cannot exceed --clients".into());
        }
        if self.total == 0 || self.total > TOTAL_MAX {
            return bad(format!("--total must be in 1..={TOTAL_MAX}"));
        }
        if self.warmup > TOTAL_MAX {
            return bad(format!("--warmup must be at most {TOTAL_MAX}"));
        }
        if self.key_size == 0 || self.key_size > KEY_BYTES_MAX {
            return bad(format!("--key-size must be in 1..={KEY_BYTES_MAX}"));
        }
        if self.val_size == 0 || self.val_size > VAL_BYTES_MAX {
            return bad(format!("--val-size must be in 1..={VAL_BYTES_MAX}"));
        }
        if self.key_space == 0 {
            return bad("--key-space must be at least 1".into());
        }
        // Keys are decimal: `key_size` digits hold 10^key_size distinct keys.
        if self.key_size < 20 && self.key_space > 10u64.pow(self.key_size as u32) {
            return bad(format!(
                "--key-space {} needs more than --key-size {} decimal digits",
                self.key_space, self.key_size
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
                return bad("--rate must be in (0, 10000000] operations per second".into());
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > TIMEOUT_MS_MAX {
            return bad(format!("--timeout-ms must be in 1..={TIMEOUT_MS_MAX}"));
        }
        if self.workload == Workload::Jobs {
            if self.target != TargetKind::Kith {
                return bad("`jobs` needs --target kith".into());
            }
            if self.rate.is_some() {
                return bad("`jobs` runs a closed loop: --rate does not apply".into());
            }
            if self.producers == 0 || self.workers == 0 {
                return bad("--producers and --workers must be at least 1".into());
            }
            if self.producers + self.workers > CONNS_MAX {
                return bad(format!(
                    "--producers + --workers must be at most {CONNS_MAX} (one connection each)"
                ));
            }
        }
        if self.workload == Workload::Files {
            if self.target != TargetKind::Kith {
                return bad("`files` needs --target kith".into());
            }
            if !(1..=FILE_BYTES_MAX).contains(&self.bytes) {
                return bad(format!("--bytes must be in 1..={FILE_BYTES_MAX}"));
            }
        }
        if self.endpoints.is_empty() {
            return bad("--endpoints names no endpoint".into());
        }
        if self.target == TargetKind::Kith {
            for e in &self.endpoints {
                crate::conn::Endpoint::parse(e)?;
            }
        }
        if let Some(user) = &self.user {
            if self.target != TargetKind::Etcd {
                return bad("--user is etcd's; kith takes --token".into());
            }
            if !user.contains(':') {
                return bad("--user is NAME:PASSWORD".into());
            }
        }
        if self.ca.is_none() && self.endpoints.iter().any(|e| e.starts_with("https://")) {
            return bad("https endpoints need --ca (the CA to trust)".into());
        }
        Ok(())
    }
}
