//! `kith backup` under write load and `kith restore` into a fresh cluster: every write
//! acknowledged before the backup began is there, the ledger agrees at the backup's index,
//! revisions go on from the backup's, and a damaged backup is refused without creating
//! anything.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kith_client::{
    Client, Consistency, DownloadOptions, UploadOptions, UploadSource, WatchControl,
};
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

/// Restores `file` into a new cluster of three on new ports and waits for its leader;
/// returns a client of it, its URLs and its processes (which stop when dropped).
async fn restored_cluster(
    file: &std::path::Path,
    dir: &std::path::Path,
) -> (Client, Vec<String>, Vec<crate::harness::Node>) {
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
        let data = dir.join(format!("restored-{id}"));
        let out = restore(file, &data, id, &peers);
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
            &dir.join(format!("restored-{id}.log")),
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
    (restored, urls, nodes)
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

    let (restored, urls, _nodes) = restored_cluster(&file, dir.path()).await;

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

/// Bytes that do not compress or repeat: a chunk's hash differs from every other's.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_files_restores_files_that_read_back_byte_identical() {
    let cluster = TestCluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], WITHIN).await;
    let client = cluster.client_over(&[1, 2, 3]);
    // Three chunks and a piece, and a small file of one chunk.
    let files = [
        ("photos/big.bin", noise(3 * 1024 * 1024 + 12_345, 7)),
        ("notes/small.txt", b"a small file".to_vec()),
    ];
    for (path, bytes) in &files {
        client
            .put_file(
                path,
                UploadSource::Bytes(bytes.clone().into()),
                UploadOptions::default(),
            )
            .await
            .expect("upload");
    }
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    let dir = tempfile::tempdir().expect("temp dir");
    let (plain, with_files) = (dir.path().join("plain"), dir.path().join("with-files"));
    let endpoints = cluster.endpoints();
    for (file, extra) in [(&plain, None), (&with_files, Some("--with-files"))] {
        let mut args = vec!["backup", file.to_str().unwrap(), "--endpoints", &endpoints];
        args.extend(extra);
        let out = kith(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).expect("backup").len() as usize;
    assert!(
        size(&plain) < total / 100,
        "a backup without files holds their bytes ({} bytes)",
        size(&plain)
    );
    assert!(
        size(&with_files) > total,
        "a backup with files is smaller than them"
    );

    let (_restored, urls, _nodes) = restored_cluster(&with_files, dir.path()).await;
    // Every member holds every chunk (four of the big file, one of the small), so none
    // needs a peer to give a file back.
    for id in 1..=3 {
        let chunks = dir.path().join(format!("restored-{id}/chunks"));
        let held = walk(&chunks)
            .iter()
            .filter(|p| p.extension().is_none())
            .count();
        assert_eq!(held, 5, "chunks in {}", chunks.display());
    }
    for url in &urls {
        let one = Client::new(std::slice::from_ref(url)).expect("client");
        for (path, bytes) in &files {
            let mut got = Vec::new();
            one.get_file(path, &mut got, DownloadOptions::default())
                .await
                .expect("download")
                .unwrap_or_else(|| panic!("{path} is missing on {url}"));
            assert!(got == *bytes, "{path} read back differently from {url}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
