//! engine-choice: redb vs fjall as the storage engine for kith's Raft log.
//!
//! A Raft log is append-mostly: every entry must be durable (fsync) before the
//! node acknowledges it, followers/leader read it back in key order to replicate,
//! and after a snapshot the prefix is purged. So we measure exactly that, with
//! u64 big-endian keys (`[u8; 8]` in both engines) and 256-byte values:
//!
//! 1. append+fsync, 1 entry per commit  : 2000 durable commits (commits/s, p50/p99)
//! 2. append+fsync, 64 entries per commit: 500 durable group commits (entries/s)
//! 3. range read: scan 10,000 sequential entries (the oldest ones) (entries/s)
//! 4. purge prefix: delete the first half of all keys in one durable commit (ms)
//!
//! Durability: redb uses its default `Durability::Immediate` write transaction;
//! fjall writes (single insert / WriteBatch) then `Database::persist(SyncAll)`.
//! Both engines run on a fresh temp dir under ./tmp (same disk as the repo),
//! alternately redb/fjall, `ROUNDS` times; the table shows medians.
use std::path::Path;
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use redb::{ReadableDatabase, TableDefinition};

const SINGLE_COMMITS: u64 = 2000;
const GROUP_COMMITS: u64 = 500;
const GROUP_SIZE: u64 = 64;
const READ_ENTRIES: u64 = 10_000;
const VALUE_LEN: usize = 256;
const ROUNDS: usize = 3;
const TOTAL: u64 = SINGLE_COMMITS + GROUP_COMMITS * GROUP_SIZE; // 34,000 entries

const LOG: TableDefinition<[u8; 8], &[u8]> = TableDefinition::new("raft_log");

/// One run's results: single-commit rate, p50, p99, group entries/s, read entries/s, purge time.
#[derive(Clone, Copy, Default)]
struct Run {
    single_cps: f64,
    p50_ms: f64,
    p99_ms: f64,
    group_eps: f64,
    read_eps: f64,
    purge_ms: f64,
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    ms(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

/// Shared driver: the per-engine closures do one durable commit / scan / purge.
fn drive(
    mut commit: impl FnMut(std::ops::Range<u64>),
    mut scan: impl FnMut(std::ops::Range<u64>) -> u64,
    mut purge: impl FnMut(std::ops::Range<u64>),
) -> Run {
    // 1. one entry per durable commit
    let mut lat = Vec::with_capacity(SINGLE_COMMITS as usize);
    let t = Instant::now();
    for i in 0..SINGLE_COMMITS {
        let t1 = Instant::now();
        commit(i..i + 1);
        lat.push(t1.elapsed());
    }
    let single = t.elapsed();
    lat.sort();
    // 2. group commit
    let t = Instant::now();
    for c in 0..GROUP_COMMITS {
        let start = SINGLE_COMMITS + c * GROUP_SIZE;
        commit(start..start + GROUP_SIZE);
    }
    let group = t.elapsed();
    // 3. range scan of the oldest entries
    let t = Instant::now();
    let n = scan(0..READ_ENTRIES);
    let read = t.elapsed();
    assert_eq!(n, READ_ENTRIES, "range scan returned wrong count");
    // 4. purge first half, one durable commit
    let t = Instant::now();
    purge(0..TOTAL / 2);
    let purge_t = t.elapsed();
    assert_eq!(scan(0..TOTAL), TOTAL - TOTAL / 2, "purge left wrong count");
    Run {
        single_cps: SINGLE_COMMITS as f64 / single.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        group_eps: (GROUP_COMMITS * GROUP_SIZE) as f64 / group.as_secs_f64(),
        read_eps: READ_ENTRIES as f64 / read.as_secs_f64(),
        purge_ms: ms(purge_t),
    }
}

fn run_redb(dir: &Path) -> Run {
    let db = redb::Database::create(dir.join("log.redb")).unwrap();
    drive(
        |keys| {
            let tx = db.begin_write().unwrap(); // default Durability::Immediate
            {
                let mut t = tx.open_table(LOG).unwrap();
                for i in keys {
                    t.insert(key(i), value(i).as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        },
        |keys| {
            let tx = db.begin_read().unwrap();
            let t = tx.open_table(LOG).unwrap();
            let mut n = 0;
            for e in t.range(key(keys.start)..key(keys.end)).unwrap() {
                let (_k, v) = e.unwrap();
                n += (v.value().len() == VALUE_LEN) as u64;
            }
            n
        },
        |keys| {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(LOG).unwrap();
                t.retain_in(key(keys.start)..key(keys.end), |_, _| false)
                    .unwrap();
            }
            tx.commit().unwrap();
        },
    )
}

fn run_fjall(dir: &Path) -> Run {
    let db = Database::builder(dir.join("fjall")).open().unwrap();
    let ks = db
        .keyspace("raft_log", KeyspaceCreateOptions::default)
        .unwrap();
    drive(
        |keys| {
            if keys.end - keys.start == 1 {
                ks.insert(key(keys.start), value(keys.start)).unwrap();
            } else {
                let mut b = db.batch();
                for i in keys {
                    b.insert(&ks, key(i), value(i));
                }
                b.commit().unwrap();
            }
            db.persist(PersistMode::SyncAll).unwrap();
        },
        |keys| {
            let mut n = 0;
            for g in ks.range(key(keys.start)..key(keys.end)) {
                let (_k, v) = g.into_inner().unwrap();
                n += (v.len() == VALUE_LEN) as u64;
            }
            n
        },
        |keys| {
            // fjall 3 has no range delete: one atomic batch of point tombstones.
            let mut b = db.batch();
            for i in keys {
                b.remove(&ks, key(i));
            }
            b.commit().unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        },
    )
}

/// Picks one number out of a run (used to build the summary table).
type Metric = fn(&Run) -> f64;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn main() {
    println!("command: cd bench/engine-choice && CARGO_TARGET_DIR=/tmp/engine-choice-target cargo run --release");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tmp");
    std::fs::create_dir_all(&root).unwrap();
    let (mut r, mut f) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        for (name, runner, out) in [
            ("redb", run_redb as fn(&Path) -> Run, &mut r),
            ("fjall", run_fjall as fn(&Path) -> Run, &mut f),
        ] {
            let dir = tempfile::tempdir_in(&root).unwrap(); // removed on drop
            let run = runner(dir.path());
            println!(
                "round {round} {name:5}: {:7.0} commits/s p50 {:.2}ms p99 {:.2}ms | group {:8.0} e/s | read {:9.0} e/s | purge {:.1}ms",
                run.single_cps, run.p50_ms, run.p99_ms, run.group_eps, run.read_eps, run.purge_ms
            );
            out.push(run);
        }
    }
    let _ = std::fs::remove_dir(&root); // only succeeds if empty
    let med = |v: &[Run], f: Metric| median(v.iter().map(f).collect());
    let rows: [(&str, Metric, bool); 6] = [
        ("1/commit: commits/s", |x| x.single_cps, true),
        ("1/commit: p50 latency (ms)", |x| x.p50_ms, false),
        ("1/commit: p99 latency (ms)", |x| x.p99_ms, false),
        ("64/commit: entries/s", |x| x.group_eps, true),
        ("range read 10k: entries/s", |x| x.read_eps, true),
        ("purge 17k prefix: ms", |x| x.purge_ms, false),
    ];
    println!(
        "\nmedian of {ROUNDS} alternating rounds; {TOTAL} entries of {VALUE_LEN} B, u64 BE keys\n"
    );
    println!("| measurement | redb | fjall | fjall/redb | better |");
    println!("|---|---:|---:|---:|---|");
    for (label, get, higher_better) in rows {
        let (a, b) = (med(&r, get), med(&f, get));
        let better = if (b > a) == higher_better {
            "fjall"
        } else {
            "redb"
        };
        let fmt = |x: f64| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        };
        println!(
            "| {label} | {} | {} | {:.2}x | {better} |",
            fmt(a),
            fmt(b),
            b / a
        );
    }
}
