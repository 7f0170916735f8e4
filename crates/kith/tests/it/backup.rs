//! `kith backup` under write load and `kith restore` into a fresh cluster: every write
//! acknowledged before the backup began is there, the ledger agrees at the backup's index,
//! revisions go on from the backup's, and a damaged backup is refused without creating
//! anything.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kith_client::{Client, Consistency, WatchControl};
use serde_json::Value;

use crate::harness::{free_port, http, serve, wait_until, TestCluster};

const WITHIN: Duration = Duration::from_secs(30);
const WRITERS: usize = 4;

fn kith(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(args)
        .env_remove("KITH_PROFILE")
        .output()
        .expect("run kith")
}

fn restore(
    file: &std::path::Path,
    data: &std::path::Path,
    id: u64,
    peers: &str,
) -> std::process::Output {
    kith(&[
        "restore",
        file.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--id",
        &id.to_string(),
        "--peers",
        peers,
    ])
}

async fn ledger_at(url: &str, index: u64) -> Value {
    http()
        .get(format!("{url}/v1/ledger?index={index}"))
        .send()
        .await
        .expect("ledger")
        .json()
        .await
        .expect("ledger JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_into_a_new_cluster_with_every_acknowledged_write() {
    let cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("kith.backup");

    // Four writers, each recording when each of its writes was acknowledged.
    let acked: Arc<Mutex<Vec<(String, String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = cluster.client_over(&[1, 2, 3]);
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, value) = (format!("w{w}/{n}"), format!("v{w}-{n}"));
                if client.put(&key, value.as_bytes(), None).await.is_ok() {
                    acked.lock().unwrap().push((key, value, Instant::now()));
                }
                n += 1;
            }
        }));
    }
    wait_until("some writes", WITHIN, || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;

    let began = Instant::now();
    let saved = kith(&[
        "backup",
        file.to_str().unwrap(),
        "--endpoints",
        &cluster.endpoints(),
        "-o",
        "json",
    ]);
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let saved: Value = serde_json::from_slice(&saved.stdout).expect("backup JSON");
    // The writers ran through the backup and go on after it.
    let before_end = acked.lock().unwrap().len();
    wait_until("writes after the backup", WITHIN, || async {
        (acked.lock().unwrap().len() > before_end + 20).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let must_have: BTreeMap<String, String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at < began)
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    assert!(must_have.len() >= 50);
    let index = saved["index"].as_u64().expect("index");
    let revision = saved["revision"].as_u64().expect("revision");
    let original_ledger = ledger_at(&cluster.url(1), index).await;

    // A file that is not whole is refused, and nothing is created.
    let bytes = std::fs::read(&file).expect("the backup");
    let truncated = dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = dir.path().join("flipped.backup");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&flipped, &damaged).unwrap();
    for bad in [&truncated, &flipped] {
        let target = dir.path().join("never");
        let out = restore(bad, &target, 1, "1=127.0.0.1:1");
        assert!(!out.status.success(), "{} was accepted", bad.display());
        assert!(
            !target.exists(),
            "a refused restore created {}",
            target.display()
        );
    }

    // A new cluster of three from the backup, on new ports.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let data = dir.path().join(format!("restored-{id}"));
        let out = restore(&file, &data, id, &peers);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listen = format!("127.0.0.1:{port}");
        nodes.push(serve(
            &[
                "--id",
                &id.to_string(),
                "--listen",
                &listen,
                "--data",
                data.to_str().unwrap(),
            ],
            &[],
            &dir.path().join(format!("restored-{id}.log")),
        ));
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let restored = Client::new(&urls).expect("client");
    wait_until("a leader of the restored cluster", WITHIN, || async {
        let cluster = restored.cluster().await.ok()?;
        cluster["leader_id"].as_u64()
    })
    .await;

    for (key, value) in &must_have {
        let got = restored
            .get(key, Consistency::Linearizable)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key}, acknowledged before the backup, is missing"));
        assert_eq!(got.value, value.as_bytes(), "{key}");
    }
    assert_eq!(
        ledger_at(&urls[0], index).await["hash"],
        original_ledger["hash"]
    );

    // Revisions go on from the backup's: a watch from the next revision sees a new put.
    let put = restored
        .put("after/restore", b"yes", None)
        .await
        .expect("put");
    assert!(
        put > revision,
        "revision {put} after a backup at {revision}"
    );
    let mut seen = None;
    restored
        .watch("after/", Some(revision + 1), |e| {
            seen = Some(e.revision);
            WatchControl::Stop
        })
        .await
        .expect("watch");
    assert_eq!(seen, Some(put));
    let members = restored.cluster().await.expect("cluster")["members"].clone();
    assert_eq!(members.as_array().map(Vec::len), Some(3), "{members}");
}
