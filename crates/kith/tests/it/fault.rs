//! The fault-injection suite (`kith-fault`) on CI's fixed seeds, against this test build of
//! `kith`: real partitions (nftables, as root), kills, pauses and transport faults, with the
//! histories checked for linearizability, lost writes, watch streams and replica agreement.
//!
//! The suite also proves it can fail: with the planted bug `KITH_TEST_BUG=stale_reads`
//! (kith-node's `test-hooks`, which only test builds have) linearizable reads skip the read
//! index, and the suite must report a linearizability violation within a few seeds.

use std::time::Duration;

use kith_fault::{run_suite, FaultKind, ScheduleReport, SuiteConfig};

use crate::harness::TestCluster;

/// CI's schedules: seeds 1–10, 3 or 5 nodes as each seed picks, every kind of fault.
const CI_SEEDS: std::ops::RangeInclusive<u64> = 1..=10;
const CI_OPS: usize = 400;
/// CI's schedules against a cluster with TLS.
const CI_TLS_SEEDS: std::ops::RangeInclusive<u64> = 11..=13;
/// Seeds the planted bug must be caught within.
const BUG_SEEDS: std::ops::RangeInclusive<u64> = 101..=104;

fn config() -> SuiteConfig {
    let mut config = SuiteConfig::new(env!("CARGO_BIN_EXE_kith"));
    config.workload.ops = CI_OPS;
    config.workload.rate_per_s = 100.0;
    config.report_dir = Some(std::env::temp_dir().join("kith-fault-reports"));
    config
}

fn print_line(r: &ScheduleReport) {
    let faults: u32 = r.faults.values().sum();
    eprintln!(
        "fault suite: seed {} n={} ops {} (ok {}, fail {}, unknown {}) faults {faults} violations {} {:.1} s",
        r.seed,
        r.nodes,
        r.ops_invoked,
        r.ops_ok,
        r.ops_failed,
        r.ops_unknown,
        r.violations.len(),
        r.elapsed.as_secs_f64()
    );
    for v in &r.violations {
        eprintln!("  violation [{}]\n{}", v.kind, v.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_seeds_find_no_violation_under_faults() {
    let seeds: Vec<u64> = CI_SEEDS.collect();
    assert_no_violation(&config(), &seeds).await;
}

/// The same schedules with TLS between the nodes (and towards the clients): certificates
/// from `kith init`, joins with `kith init add-node`, membership changes presenting node
/// certificates. The long run is in docs/RELIABILITY.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_seeds_with_tls_find_no_violation_under_faults() {
    let mut config = config();
    config.tls = true;
    let seeds: Vec<u64> = CI_TLS_SEEDS.collect();
    assert_no_violation(&config, &seeds).await;
}

async fn assert_no_violation(config: &SuiteConfig, seeds: &[u64]) {
    let summary = run_suite(config, seeds, |r| {
        print_line(r);
        true
    })
    .await
    .expect("the fault suite must run (nftables as root); it never passes without faults");
    eprintln!("{}\n{}", summary.proof, summary.table());
    assert_eq!(summary.schedules, seeds.len());
    let injected: u32 = summary.faults.values().sum();
    assert!(
        injected as usize >= seeds.len(),
        "too few faults: {injected}"
    );
    assert_eq!(
        summary.violations, 0,
        "violations in seeds {:?}",
        summary.violating_seeds
    );
    assert_eq!(summary.acked_lost, 0);
    assert_eq!(summary.undecided_keys, 0);
    // Half the register clients speak etcd's API on the same keys: the checker's history
    // holds their answers beside /v1/kv's.
    assert!(
        summary.etcd_ops >= seeds.len() * 10,
        "register ops answered through etcd's API: {}",
        summary.etcd_ops
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_stale_reads_bug_is_caught() {
    let mut config = config();
    config.kinds = FaultKind::PARTITIONS.to_vec();
    config.nodes = Some(3);
    config.node_env = vec![("KITH_TEST_BUG".into(), "stale_reads".into())];
    let seeds: Vec<u64> = BUG_SEEDS.collect();
    let summary = run_suite(&config, &seeds, |r| {
        print_line(r);
        // Caught: no need to run the remaining seeds.
        !r.violations.iter().any(|v| v.kind == "linearizability")
    })
    .await
    .expect("the fault suite must run");
    assert!(
        summary.violation_kinds.contains_key("linearizability"),
        "the suite did not catch stale reads within seeds {BUG_SEEDS:?}: {}",
        summary.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_route_is_refused_without_the_flag() {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let r = cluster
        .http()
        .post(format!("{}/internal/faults", cluster.url(1)))
        .json(&serde_json::json!({"delay_ms": 100, "drop_per_million": 0}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
}
