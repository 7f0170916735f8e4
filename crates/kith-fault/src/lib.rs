//! kith-fault: a Jepsen-style fault-injection suite for kith, and a linearizability checker.
//!
//! Real `kith serve` processes, each on its own loopback address, are partitioned with
//! nftables, SIGKILLed, SIGSTOPped, removed from and added back to the membership, and slowed
//! through kith's transport fault layer, on a seeded random schedule, while clients record
//! every operation's invoke time, completion time and outcome. Afterwards everything is
//! healed, and the suite checks that the history is linearizable, that no acknowledged write
//! chat post or file upload was lost, that every node serves one chat history and every
//! acknowledged file intact, and that every replica holds the same state and ledger.
//!
//! Modules, from the bottom up:
//! - [`checker`]: Wing–Gong/Lowe linearizability search with memoisation (Porcupine-style),
//!   and a minimizer for failing histories. Knows nothing about kith.
//! - [`register`]: the sequential model of a kith key (read, write, compare-and-set).
//! - [`nft`]: one nftables table per run — partitions and packet loss between addresses.
//! - [`cleanup`]: undoes tables and kills nodes on Ctrl-C/SIGTERM, which skip destructors.
//! - [`cluster`]: `kith serve` processes on 127.0.B.11, .12, …: start, kill, pause, probe.
//! - [`schedule`]: the seeded sequence of faults.
//! - [`nemesis`]: injects and heals those faults on a running cluster.
//! - [`workload`]: register, set, chat and file-upload clients, and how HTTP outcomes become
//!   ok/fail/unknown.
//! - [`watchers`]: watches on every node through the faults; every revision once, in order.
//! - [`run`]: the proof that partitions bite, one schedule end to end, the suite, the summary.
//!
//! The binary (`src/main.rs`) runs long suites; `crates/kith/tests/it/fault.rs` runs the CI
//! seeds against the test build of `kith`.
//!
//! Refuses: passing without faults. If nftables cannot be installed or used, or partitions
//! do not separate nodes, the run is an error. Traffic never leaves 127.0.0.0/8.

pub mod checker;
pub mod cleanup;
pub mod cluster;
pub mod nemesis;
pub mod nft;
pub mod register;
pub mod run;
pub mod schedule;
pub mod watchers;
pub mod workload;

pub use run::{run_schedule, run_suite, ScheduleReport, SuiteConfig, Summary, Violation};
pub use schedule::FaultKind;
