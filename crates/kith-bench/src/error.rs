//! `BenchError`: why a benchmark could not run. Failures of single operations are not
//! errors of the run: they are counted by kind in the report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of bounds or inconsistent with another.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// `--target etcd` in a binary built without the `etcd` feature.
    #[error(
        "this kith was built without etcd support: rebuild with `cargo build --release \
         --features kith/etcd` (needs protoc, Debian package protobuf-compiler)"
    )]
    EtcdNotBuilt,
    /// `--json FILE` could not be written.
    #[error("cannot write the report to {path}: {source}")]
    WriteReport {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every measured operation failed: the figures would be meaningless.
    #[error("all {errors} operations failed (first kinds: {kinds})")]
    AllFailed { errors: u64, kinds: String },
    /// A worker task panicked (a bug in the load generator).
    #[error("a benchmark worker failed: {0}")]
    Worker(String),
}
