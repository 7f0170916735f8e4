//! The systems under test behind one interface: `Target::exec(conn, op)` sends one
//! operation over connection `conn` and says how it went. kith is reached over HTTP
//! ([`kith`]), etcd over its native gRPC API ([`etcd`], behind the `etcd` feature).
//!
//! Both keep exactly `--conns` connections, spread over the endpoints round-robin, and
//! move a connection to the next endpoint when its endpoint refuses it, so a run keeps
//! going when a node dies (that is how the failover measurement works). With `--route
//! leader` (the default) connections that carry writes move to the leader (see
//! [`crate::args::Route`]).

pub mod kith;

#[cfg(feature = "etcd")]
pub mod etcd;

use std::time::Duration;

use crate::args::{BenchArgs, ReadConsistency, Route, TargetKind};
use crate::conn::ClientTls;
use crate::error::BenchError;
use crate::plan::Op;

/// How long one connection attempt may take before the next endpoint is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a successful operation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The write was acknowledged, or the read returned a value.
    Done,
    /// The read found no such key (a valid answer, counted apart).
    NotFound,
}

/// Why one operation failed. Its `kind` is what the report counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// No answer within `--timeout-ms`.
    Timeout,
    /// The connection could not be opened.
    Connect,
    /// The connection broke during the request.
    Transport,
    /// kith answered with an error status and code.
    Status { status: u16, code: String },
    /// etcd answered with a gRPC status.
    Grpc { code: String, message: String },
}

/// Longest code or message kept in an error kind, so kinds stay few and short.
const KIND_PART_BYTES_MAX: usize = 48;

fn clip(s: &str) -> &str {
    let mut end = s.len().min(KIND_PART_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl OpError {
    /// The category this error is counted under in the report.
    pub fn kind(&self) -> String {
        match self {
            OpError::Timeout => "timeout".into(),
            OpError::Connect => "connect".into(),
            OpError::Transport => "transport".into(),
            OpError::Status { status, code } => format!("http {status} {}", clip(code)),
            OpError::Grpc { code, message } => format!("grpc {code}: {}", clip(message)),
        }
    }
}

/// The system under test, with its connections open (or opened on first use).
pub enum Target {
    Kith(kith::KithTarget),
    #[cfg(feature = "etcd")]
    Etcd(etcd::EtcdTarget),
}

impl Target {
    /// Builds the target named by `--target`; connections open lazily on first use.
    /// `tls` is the run's TLS configuration towards kith (see [`crate::conn`]).
    pub fn new(args: &BenchArgs, tls: Option<&ClientTls>) -> Result<Self, BenchError> {
        let stale = args.consistency == ReadConsistency::Stale;
        let timeout = Duration::from_millis(args.timeout_ms);
        match args.target {
            TargetKind::Kith => Ok(Target::Kith(kith::KithTarget::new(
                &args.endpoints,
                args.conns,
                kith::KithOptions {
                    http: args.http,
                    stale,
                    timeout,
                    follow_leader: args.route == Route::Leader,
                    tls: tls.cloned(),
                    token: args.token.clone(),
                },
            )?)),
            #[cfg(feature = "etcd")]
            TargetKind::Etcd => Ok(Target::Etcd(etcd::EtcdTarget::new(
                &args.endpoints,
                args.conns,
                stale,
                timeout,
                // Only runs with writes: reads stay spread over the endpoints.
                args.route == Route::Leader && args.workload != crate::args::Workload::Get,
                etcd::tls_options(args)?,
                args.user
                    .as_deref()
                    .and_then(|u| u.split_once(':'))
                    .map(|(name, password)| (name.to_owned(), password.to_owned())),
            ))),
            #[cfg(not(feature = "etcd"))]
            TargetKind::Etcd => Err(BenchError::EtcdNotBuilt),
        }
    }

    /// Sends `op` over connection `conn` (< `--conns`), bounded by `--timeout-ms`.
    pub async fn exec(&self, conn: usize, op: &Op) -> Result<Outcome, OpError> {
        match self {
            Target::Kith(t) => t.exec(conn, op).await,
            #[cfg(feature = "etcd")]
            Target::Etcd(t) => t.exec(conn, op).await,
        }
    }
}
