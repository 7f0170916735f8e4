//! `kith files` end to end: the real CLI binary against a real 3-node cluster. A 5 MiB
//! random file goes up through the CLI, is listed, comes back byte for byte (whole, by a range
//! across a chunk boundary, and to stdout), shows three holders per chunk, is shared and
//! fetched by plain HTTP from every node, unshared, and removed. Bad input fails clearly.
//! With the first endpoint killed, uploads and downloads fail over to the others.
//! Also a `kith bench files` smoke run (no figure asserted).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::TestCluster;

const FILE_BYTES: usize = 5 << 20;
const CHUNK_BYTES: usize = 1 << 20;

/// Deterministic bytes that no chunk shares with another (xorshift64*).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Runs `kith files ARGS… --endpoints …` and returns its output.
fn files(cluster: &TestCluster, args: &[&str]) -> Output {
    files_with_stdin(cluster, args, None)
}

fn files_with_stdin(cluster: &TestCluster, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("files")
        .args(args)
        .args(["--endpoints", &cluster.endpoints()])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kith files");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(bytes).expect("write stdin");
    }
    child.wait_with_output().expect("wait for kith files")
}

/// Runs `kith files ARGS…`, asserts success, returns stdout.
fn ok(cluster: &TestCluster, args: &[&str]) -> Vec<u8> {
    let out = files(cluster, args);
    assert!(
        out.status.success(),
        "kith files {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `kith files ARGS…`, asserts a non-zero exit, returns stderr.
fn fails(cluster: &TestCluster, args: &[&str]) -> String {
    let out = files(cluster, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "kith files {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_ls_get_where_share_rm_through_the_cli() {
    let mut cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = random_bytes(FILE_BYTES, 7);
    let local = dir.path().join("five.bin");
    std::fs::write(&local, &data).expect("write the local file");
    let local = local.to_str().expect("utf-8 path");

    // put: the manifest names the size, the chunks and three copies.
    let put = json(&ok(&cluster, &["put", local, "cli/five.bin", "-o", "json"]));
    assert_eq!(put["path"], "cli/five.bin", "{put}");
    assert_eq!(put["size"], FILE_BYTES as u64, "{put}");
    assert_eq!(
        put["chunk_count"],
        (FILE_BYTES / CHUNK_BYTES) as u64,
        "{put}"
    );
    assert_eq!(put["replicas"], 3, "{put}");
    let table = String::from_utf8(ok(&cluster, &["put", local, "cli/again.bin"])).expect("utf-8");
    assert!(table.starts_with("stored cli/again.bin"), "{table}");

    // ls: both files, in path order; a prefix narrows it.
    let ls = json(&ok(&cluster, &["ls", "cli/", "-o", "json"]));
    let paths: Vec<&str> = ls["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["cli/again.bin", "cli/five.bin"]);
    let ls = String::from_utf8(ok(&cluster, &["ls", "cli/f"])).expect("utf-8");
    assert!(ls.contains("cli/five.bin") && !ls.contains("again"), "{ls}");

    // get: to a file, byte for byte, and nothing left beside it.
    let back = dir.path().join("back.bin");
    ok(
        &cluster,
        &["get", "cli/five.bin", back.to_str().expect("utf-8")],
    );
    assert!(
        std::fs::read(&back).expect("downloaded") == data,
        "bytes differ"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".kith-part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // get a range across the first chunk boundary, to stdout.
    let (a, b) = (CHUNK_BYTES - 10, CHUNK_BYTES + 9);
    let range = format!("{a}-{b}");
    let piece = ok(&cluster, &["get", "cli/five.bin", "-", "--range", &range]);
    assert_eq!(piece, data[a..=b]);

    // stdin in, stdout out.
    let small = b"hello through a pipe\n";
    let out = files_with_stdin(&cluster, &["put", "-", "cli/pipe.txt"], Some(small));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&cluster, &["get", "cli/pipe.txt", "-"]), small);

    // where: every chunk is on three nodes, including every node it should be on.
    let placement = json(&ok(&cluster, &["where", "cli/five.bin", "-o", "json"]));
    let chunks = placement["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), FILE_BYTES / CHUNK_BYTES, "{placement}");
    for c in chunks {
        let holders: Vec<u64> = serde_json::from_value(c["holders"].clone()).expect("holders");
        let desired: Vec<u64> = serde_json::from_value(c["desired"].clone()).expect("desired");
        assert_eq!(desired.len(), 3, "{c}");
        assert!(desired.iter().all(|d| holders.contains(d)), "{c}");
    }
    let table = String::from_utf8(ok(&cluster, &["where", "cli/five.bin"])).expect("utf-8");
    assert_eq!(
        table.lines().filter(|l| l.ends_with(" ok")).count(),
        5,
        "{table}"
    );

    // share: the printed URL downloads without credentials, from every node.
    let url = String::from_utf8(ok(&cluster, &["share", "cli/five.bin", "--expires", "1h"]))
        .expect("utf-8")
        .trim()
        .to_owned();
    let (origin, link) = url.split_once("/s/").expect("a /s/ link");
    assert_eq!(origin, cluster.url(1), "the link is on the first endpoint");
    for id in [1, 2, 3] {
        let response = cluster
            .http()
            .get(format!("{}/s/{link}", cluster.url(id)))
            .send()
            .await
            .expect("GET the share link");
        assert_eq!(response.status(), 200, "node {id}");
        let body = response.bytes().await.expect("body");
        assert!(body == data, "node {id} served other bytes");
    }
    ok(&cluster, &["unshare", link]);
    let gone = cluster.http().get(&url).send().await.expect("GET");
    assert_eq!(gone.status(), 404);
    assert!(fails(&cluster, &["unshare", link]).contains("no such share"));

    // rm: gone from the list, and a get says so.
    let rm = String::from_utf8(ok(&cluster, &["rm", "cli/five.bin"])).expect("utf-8");
    assert!(rm.contains("deleted cli/five.bin"), "{rm}");
    let ls = json(&ok(&cluster, &["ls", "cli/", "-o", "json"]));
    assert_eq!(ls["files"].as_array().expect("files").len(), 2, "{ls}");
    assert!(fails(&cluster, &["get", "cli/five.bin", "-"]).contains("no such file"));
    assert!(fails(&cluster, &["rm", "cli/five.bin"]).contains("no such file"));

    // Bad input: a clear message, a non-zero exit, and nothing stored.
    assert!(fails(&cluster, &["put", local, "../escape"]).contains("invalid path"));
    assert!(fails(&cluster, &["put", local, "/abs"]).contains("invalid path"));
    assert!(fails(&cluster, &["put", "/no/such/file", "x"]).contains("cannot read"));
    assert!(fails(&cluster, &["get", "cli/pipe.txt", "-", "--range", "9-1"]).contains("--range"));
    assert!(fails(&cluster, &["share", "cli/pipe.txt", "--expires", "40d"]).contains("--expires"));
    assert!(fails(&cluster, &["where", "cli/none"]).contains("no such file"));
    let ls = json(&ok(&cluster, &["ls", "-o", "json"]));
    assert_eq!(ls["files"].as_array().expect("files").len(), 2, "{ls}");

    // The first endpoint dies: the CLI carries on through the others, both ways.
    cluster.kill(1);
    ok(&cluster, &["put", local, "cli/after-kill.bin"]);
    let back = dir.path().join("after-kill.bin");
    ok(
        &cluster,
        &["get", "cli/after-kill.bin", back.to_str().expect("utf-8")],
    );
    assert!(
        std::fs::read(&back).expect("downloaded") == data,
        "bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_files_reports_upload_download_and_the_disk_limit() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let report = dir.path().join("files.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kith"))
        .args(["bench", "files", "--bytes", "3000000", "--quiet"])
        .args(["--endpoints", &cluster.endpoints()])
        .arg("--disk-dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&report)
        .output()
        .expect("run kith bench files");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("upload ÷ limit"), "{stdout}");
    let report = json(&std::fs::read(&report).expect("the --json report"));
    assert_eq!(report["bytes"], 3_000_000, "{report}");
    assert_eq!(report["replicas"], 3, "{report}");
    for figure in ["upload_mb_s", "download_mb_s", "disk_mb_s", "limit_mb_s"] {
        assert!(report[figure].as_f64().expect(figure) > 0.0, "{report}");
    }
    // It cleans up after itself.
    let ls = json(&ok(&cluster, &["ls", "bench/", "-o", "json"]));
    assert_eq!(ls["files"].as_array().expect("files").len(), 0, "{ls}");
}
