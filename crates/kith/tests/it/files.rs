//! Files: uploads land on R nodes, read back byte-identical from any node, survive a dead
//! holder, are repaired after a removal or a corrupt copy, cut-off uploads leave nothing,
//! share links obey expiry and revocation, and memory stays flat for a gigabyte.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::harness::{wait_until, TestCluster};

const MIB: usize = 1024 * 1024;

/// `len` pseudo-random bytes from `seed` (BLAKE3 in XOF mode: fast and reproducible).
fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Every chunk file on a node's disk (temporary files excluded).
fn chunk_files(node_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(node_dir.join("data/chunks")) else {
        return out;
    };
    for shard in shards.flatten() {
        for file in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = file.path();
            if path.extension().is_none() {
                out.push(path);
            }
        }
    }
    out
}

/// How many nodes (of `ids`) hold a file named `hash`.
fn copies(cluster: &TestCluster, ids: &[u64], hash: &str) -> usize {
    cluster
        .nodes()
        .iter()
        .filter(|n| ids.contains(&n.id))
        .filter(|n| {
            chunk_files(&n.dir)
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == hash))
        })
        .count()
}

async fn put_file(cluster: &TestCluster, id: u64, path: &str, bytes: Vec<u8>) -> Value {
    let response = cluster
        .http()
        .put(format!("{}/v1/files/{path}", cluster.url(id)))
        .header("content-type", "application/x-kith-test")
        .body(bytes)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::CREATED, "upload of {path}");
    response.json().await.expect("manifest json")
}

async fn get_file(
    cluster: &TestCluster,
    id: u64,
    path: &str,
    range: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = cluster
        .http()
        .get(format!("{}/v1/files/{path}", cluster.url(id)))
        .timeout(Duration::from_secs(120));
    if let Some(r) = range {
        request = request.header("range", r);
    }
    let response = request.send().await.expect("download");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

async fn get_json(cluster: &TestCluster, id: u64, path_and_query: &str) -> Value {
    cluster
        .http()
        .get(format!("{}{path_and_query}", cluster.url(id)))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON answer")
}

async fn explain(cluster: &TestCluster, id: u64, path: &str) -> Vec<Value> {
    let v = get_json(cluster, id, &format!("/v1/files/{path}?explain=1")).await;
    v["chunks"].as_array().expect("chunks").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_read_back_identical_from_another_node_with_ranges() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let data = random_bytes("fifty", 50 * 1000 * 1000);
    let manifest = put_file(&cluster, 1, "big/fifty.bin", data.clone()).await;
    assert_eq!(manifest["size"], data.len());
    assert_eq!(manifest["chunk_count"], data.len().div_ceil(MIB));
    assert_eq!(manifest["blake3"], blake3::hash(&data).to_hex().as_str());

    let (status, headers, body) = get_file(&cluster, 3, "big/fifty.bin", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "node 3 returns the same 50 MB");
    assert_eq!(headers["content-type"], "application/x-kith-test");
    let etag = headers["etag"].to_str().unwrap().to_owned();

    // Every chunk has R = 3 copies, on the nodes rendezvous hashing chose.
    for chunk in explain(&cluster, 2, "big/fifty.bin").await {
        assert_eq!(chunk["holders"].as_array().unwrap().len(), 3, "{chunk}");
        let hash = chunk["hash"].as_str().unwrap();
        assert_eq!(copies(&cluster, &[1, 2, 3], hash), 3);
    }

    // Ranges, including ones that cross chunk boundaries.
    let cases: Vec<(String, usize, usize)> = vec![
        (
            format!("bytes={}-{}", MIB - 10, MIB + 9),
            MIB - 10,
            MIB + 10,
        ),
        (
            format!("bytes={}-{}", 3 * MIB - 1, 5 * MIB),
            3 * MIB - 1,
            5 * MIB + 1,
        ),
        ("bytes=0-0".into(), 0, 1),
        ("bytes=-100".into(), data.len() - 100, data.len()),
        (
            format!("bytes={}-", data.len() - 7),
            data.len() - 7,
            data.len(),
        ),
    ];
    for (range, start, end) in cases {
        let (status, headers, body) = get_file(&cluster, 3, "big/fifty.bin", Some(&range)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            headers["content-range"],
            format!("bytes {start}-{}/{}", end - 1, data.len()).as_str()
        );
        assert!(body == data[start..end], "{range} returns the right bytes");
    }
    let (status, headers, _) = get_file(
        &cluster,
        2,
        "big/fifty.bin",
        Some(&format!("bytes={}-", data.len())),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        headers["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );

    // Conditional requests on the ETag (the whole-file hash).
    let r = cluster
        .http()
        .get(format!("{}/v1/files/big/fifty.bin", cluster.url(2)))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = cluster
        .http()
        .get(format!("{}/v1/files/big/fifty.bin", cluster.url(2)))
        .header("if-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = cluster
        .http()
        .head(format!("{}/v1/files/big/fifty.bin", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-length"],
        data.len().to_string().as_str()
    );

    // Overwrite: readers get the new file whole; listing shows one file with a new version.
    let small = random_bytes("small", 3 * MIB + 5);
    let replaced = put_file(&cluster, 2, "big/fifty.bin", small.clone()).await;
    assert!(replaced["version"].as_u64() > manifest["version"].as_u64());
    let (_, _, body) = get_file(&cluster, 1, "big/fifty.bin", None).await;
    assert!(body == small);
    let listing = get_json(&cluster, 3, "/v1/files?prefix=big/").await;
    assert_eq!(listing["files"].as_array().unwrap().len(), 1);
    assert_eq!(listing["files"][0]["size"], small.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_survive_a_dead_holder_and_removal_is_repaired_to_r_copies() {
    let mut cluster = TestCluster::start(
        4,
        &[
            "--file-chunk-bytes",
            "262144",
            "--file-repair-interval-ms",
            "300",
        ],
    );
    cluster
        .wait_for_leader(&[1, 2, 3, 4], Duration::from_secs(20))
        .await;
    let mut files = Vec::new();
    for i in 0..3 {
        let data = random_bytes(&format!("file-{i}"), 3 * MIB + i * 1000);
        put_file(
            &cluster,
            1 + i as u64,
            &format!("docs/{i}.bin"),
            data.clone(),
        )
        .await;
        files.push((format!("docs/{i}.bin"), data));
    }
    let mut hashes = Vec::new();
    for (path, _) in &files {
        for chunk in explain(&cluster, 1, path).await {
            hashes.push(chunk["hash"].as_str().unwrap().to_owned());
        }
    }
    for hash in &hashes {
        assert_eq!(copies(&cluster, &[1, 2, 3, 4], hash), 3, "chunk {hash}");
    }
    let held_by_4 = hashes
        .iter()
        .filter(|h| copies(&cluster, &[4], h) == 1)
        .count();
    assert!(held_by_4 > 0, "node 4 holds some chunks");

    // Kill node 4: every file still reads correctly from every survivor.
    cluster.kill(4);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    for id in [1, 2, 3] {
        for (path, data) in &files {
            let (status, _, body) = get_file(&cluster, id, path, None).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body == *data, "{path} from node {id}");
        }
    }

    // Remove node 4 from the cluster: the repairer brings every chunk back to 3 copies
    // among the remaining members (counted on their disks).
    let r = cluster
        .http()
        .delete(format!("{}/v1/cluster/members/4", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "remove node 4: {}", r.status());
    wait_until(
        "every chunk to have 3 copies on nodes 1-3",
        Duration::from_secs(60),
        || async {
            hashes
                .iter()
                .all(|h| copies(&cluster, &[1, 2, 3], h) == 3)
                .then_some(())
        },
    )
    .await;
    for chunk in explain(&cluster, 2, &files[0].0).await {
        assert_eq!(chunk["holders"], serde_json::json!([1, 2, 3]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_member_unreachable_too_long_are_copied_elsewhere() {
    // Node 4 stays a member but is gone longer than --file-down-after-s.
    let mut cluster = TestCluster::start(
        4,
        &[
            "--file-chunk-bytes",
            "262144",
            "--file-repair-interval-ms",
            "300",
            "--file-down-after-s",
            "1",
        ],
    );
    cluster
        .wait_for_leader(&[1, 2, 3, 4], Duration::from_secs(20))
        .await;
    let data = random_bytes("unreachable", 4 * MIB);
    put_file(&cluster, 1, "u.bin", data.clone()).await;
    let hashes: Vec<String> = explain(&cluster, 1, "u.bin")
        .await
        .iter()
        .map(|c| c["hash"].as_str().unwrap().to_owned())
        .collect();
    assert!(hashes.iter().any(|h| copies(&cluster, &[1, 2, 3], h) < 3));
    cluster.kill(4);
    wait_until(
        "every chunk to have 3 copies on the reachable members",
        Duration::from_secs(60),
        || async {
            hashes
                .iter()
                .all(|h| copies(&cluster, &[1, 2, 3], h) == 3)
                .then_some(())
        },
    )
    .await;
    let (_, _, body) = get_file(&cluster, 2, "u.bin", None).await;
    assert!(body == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_upload_survives_a_leader_crash_during_uploads() {
    let mut cluster = TestCluster::start(3, &["--file-chunk-bytes", "65536"]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let file = |i: usize| random_bytes(&format!("crash-{i}"), 200_000 + i * 1_000);
    // Uploads through every node in turn, from their own task, while the test kills the
    // leader once ten have been acknowledged (so the crash lands in the middle of the flow).
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let uploader = {
        let done = done.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            let mut refused = 0;
            for i in 0..30 {
                let sent = http
                    .put(format!("{}/v1/files/crash/{i}", urls[i % 3]))
                    .body(file(i))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acknowledged.push(i);
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // The dead node, or a 503 while the survivors elect: not acknowledged.
                    _ => refused += 1,
                }
            }
            (acknowledged, refused)
        })
    };
    wait_until(
        "ten acknowledged uploads",
        Duration::from_secs(60),
        || async { (done.load(std::sync::atomic::Ordering::SeqCst) >= 10).then_some(()) },
    )
    .await;
    let sent_before_crash = done.load(std::sync::atomic::Ordering::SeqCst) + 1;
    cluster.kill(leader);
    let (acknowledged, refused) = uploader.await.expect("uploader");
    assert!(
        acknowledged.len() >= 15,
        "most uploads succeed ({refused} refused)"
    );
    assert!(
        acknowledged.iter().any(|i| *i > sent_before_crash),
        "uploads go on after the crash"
    );

    // The old leader comes back; every acknowledged file reads back whole from every node.
    cluster.spawn(leader);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
        .await;
    for id in [1, 2, 3] {
        for i in &acknowledged {
            let path = format!("crash/{i}");
            let status = wait_until(
                &format!("{path} on node {id}"),
                Duration::from_secs(20),
                || {
                    let path = path.clone();
                    let cluster = &cluster;
                    async move {
                        let (status, _, body) = get_file(cluster, id, &path, None).await;
                        match status {
                            StatusCode::SERVICE_UNAVAILABLE => None,
                            StatusCode::OK => Some((status, body)),
                            other => Some((other, Vec::new())),
                        }
                    }
                },
            )
            .await;
            assert_eq!(status.0, StatusCode::OK, "{path} lost (node {id})");
            assert!(status.1 == file(*i), "{path} intact (node {id})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_copies_are_never_served_and_are_repaired() {
    let cluster = TestCluster::start(
        3,
        &[
            "--file-repair-interval-ms",
            "300",
            "--file-scrub-bytes-per-s",
            "67108864",
        ],
    );
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let data = random_bytes("corrupt", 4 * MIB);
    put_file(&cluster, 1, "c.bin", data.clone()).await;
    let chunks = explain(&cluster, 1, "c.bin").await;
    let flip = |node: u64, hash: &str| -> PathBuf {
        let dir = &cluster.nodes().iter().find(|n| n.id == node).unwrap().dir;
        let path = chunk_files(dir)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|f| f == hash))
            .expect("the node holds the chunk");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0x55;
        bytes[2000] ^= 0xaa;
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let is_whole = |path: &Path, hash: &str| {
        std::fs::read(path).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == hash)
    };

    // Read path: node 2's copy of chunk 0 is damaged; a read through node 2 is still right.
    let hash0 = chunks[0]["hash"].as_str().unwrap().to_owned();
    let damaged0 = flip(2, &hash0);
    let (status, _, body) = get_file(&cluster, 2, "c.bin", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "a corrupt local copy is never served");

    // Scrubber: node 3's copy of chunk 1 is damaged and nobody reads it.
    let hash1 = chunks[1]["hash"].as_str().unwrap().to_owned();
    let damaged1 = flip(3, &hash1);
    wait_until(
        "both damaged copies to be replaced by good ones",
        Duration::from_secs(30),
        || async { (is_whole(&damaged0, &hash0) && is_whole(&damaged1, &hash1)).then_some(()) },
    )
    .await;
    for id in [1, 2, 3] {
        let (_, _, body) = get_file(&cluster, id, "c.bin", None).await;
        assert!(body == data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_upload_stores_nothing_and_its_chunks_are_collected() {
    let cluster = TestCluster::start(
        3,
        &["--file-gc-grace-s", "2", "--file-repair-interval-ms", "300"],
    );
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let kept = random_bytes("kept", 2 * MIB);
    put_file(&cluster, 1, "kept.bin", kept.clone()).await;
    let kept_chunks: Vec<String> = explain(&cluster, 1, "kept.bin")
        .await
        .iter()
        .map(|c| c["hash"].as_str().unwrap().to_owned())
        .collect();
    let baseline: usize = cluster
        .nodes()
        .iter()
        .map(|n| chunk_files(&n.dir).len())
        .sum();
    assert_eq!(baseline, 2 * 3);

    // Announce 5 MiB, send 3 MiB, then hang up.
    let addr = cluster.url(2).trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/files/cut.bin HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        5 * MIB
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
        .write_all(&random_bytes("cut", 3 * MIB))
        .await
        .unwrap();
    socket.flush().await.unwrap();
    // The node stores whole chunks as they arrive: wait until some orphans exist.
    wait_until(
        "the cut-off upload's first chunks",
        Duration::from_secs(10),
        || async {
            let total: usize = cluster
                .nodes()
                .iter()
                .map(|n| chunk_files(&n.dir).len())
                .sum();
            (total > baseline).then_some(())
        },
    )
    .await;
    drop(socket);

    // A linearizable read can answer 503 on a loaded machine; wait for a definite answer.
    let status = wait_until(
        "a definite answer for cut.bin",
        Duration::from_secs(20),
        || async {
            let (status, _, _) = get_file(&cluster, 1, "cut.bin", None).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
        },
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a cut-off upload is not visible"
    );
    wait_until(
        "the orphan chunks to be collected after the grace period",
        Duration::from_secs(30),
        || async {
            let total: usize = cluster
                .nodes()
                .iter()
                .map(|n| chunk_files(&n.dir).len())
                .sum();
            (total == baseline).then_some(())
        },
    )
    .await;
    // Collection spared the committed file's chunks.
    for hash in &kept_chunks {
        assert_eq!(copies(&cluster, &[1, 2, 3], hash), 3);
    }
    let (_, _, body) = get_file(&cluster, 3, "kept.bin", None).await;
    assert!(body == kept);
    let listing = get_json(&cluster, 2, "/v1/files").await;
    assert_eq!(listing["files"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_work_on_every_node_until_expiry_or_revocation() {
    let cluster = TestCluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let data = random_bytes("shared", MIB + 17);
    put_file(&cluster, 1, "pics/holiday photo.jpg", data.clone()).await;
    let cluster = &cluster;
    let share = |expires_in_s: u64| async move {
        let r = cluster
            .http()
            .post(format!(
                "{}/v1/files/pics/holiday%20photo.jpg/share",
                cluster.url(2)
            ))
            .json(&serde_json::json!({ "expires_in_s": expires_in_s }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        assert_eq!(token.len(), 32, "128 bits, hex");
        assert_eq!(v["url"], format!("/s/{token}").as_str());
        token
    };
    let fetch = |id: u64, token: String| async move {
        let r = reqwest::Client::new()
            .get(format!("{}/s/{token}", cluster.url(id)))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let disposition = r
            .headers()
            .get("content-disposition")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, disposition, r.bytes().await.unwrap().to_vec())
    };
    let short = share(3).await;
    let long = share(3600).await;
    for id in [1, 2, 3] {
        let (status, disposition, body) = fetch(id, long.clone()).await;
        assert_eq!(status, StatusCode::OK, "node {id}");
        assert!(body == data);
        assert!(disposition.unwrap().contains("holiday photo.jpg"));
    }

    // Revoked: gone on every node at once.
    let r = cluster
        .http()
        .delete(format!("{}/v1/shares/{long}", cluster.url(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for id in [1, 2, 3] {
        assert_eq!(fetch(id, long.clone()).await.0, StatusCode::NOT_FOUND);
    }
    let r = cluster
        .http()
        .delete(format!("{}/v1/shares/{long}", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "revoking twice");

    // Expired: 410 on every node once its time has passed.
    assert_eq!(fetch(1, short.clone()).await.0, StatusCode::OK);
    wait_until("the short link to expire", Duration::from_secs(15), || {
        let short = short.clone();
        async move { (fetch(2, short).await.0 == StatusCode::GONE).then_some(()) }
    })
    .await;
    for id in [1, 3] {
        assert_eq!(fetch(id, short.clone()).await.0, StatusCode::GONE);
    }
    let unknown = "0123456789abcdef0123456789abcdef".to_owned();
    assert_eq!(fetch(1, unknown).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_file_requests_are_refused_and_store_nothing() {
    let cluster = TestCluster::start(1, &["--file-bytes-max", "3000000"]);
    cluster.wait_for_leader(&[1], Duration::from_secs(20)).await;
    let url = cluster.url(1);
    let http = cluster.http();
    // Sent raw: an HTTP client library would normalise `..` away before sending.
    let addr = url.trim_start_matches("http://").to_owned();
    let long = "n".repeat(256);
    for bad in [
        "a/../b",
        "a/%2e%2e/b",
        "..",
        "./a",
        "a//b",
        "a/%00b",
        "a%5Cb",
        "%2Fabs",
        long.as_str(),
    ] {
        let answer = raw_request(
            &addr,
            &format!("PUT /v1/files/{bad} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
        assert!(answer.contains("invalid_path"), "{bad}: {answer}");
    }
    // Over the configured maximum: refused from its Content-Length, before the body is read
    // (sent raw and without the body: a client still writing it when the node answers and
    // closes would see a broken pipe instead of the answer).
    let answer = raw_request(
        &addr,
        &format!("PUT /v1/files/too-big HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3000001\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        chunk_files(&cluster.nodes()[0].dir).is_empty(),
        "refused before a byte was stored"
    );
    // …and, without one, once the streamed bytes pass it. The chunks cut before that point
    // are orphans, reclaimed by garbage collection (see the cut-off upload test).
    let stream = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![1u8; MIB])));
    // Its own client: the node answers before reading the rest of the body and then closes
    // the connection, which must not be handed back to the shared pool.
    let r = reqwest::Client::new()
        .put(format!("{url}/v1/files/too-big"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Unknown files, shares and malformed requests.
    let cases = [
        ("GET", "/v1/files/nope", "", StatusCode::NOT_FOUND),
        ("POST", "/v1/files/nope/share", "", StatusCode::NOT_FOUND),
        (
            "POST",
            "/v1/files/nope/share",
            "{\"expires_in_s\": 99999999999}",
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/s/not-a-token", "", StatusCode::NOT_FOUND),
        ("GET", "/v1/files?limit=100000", "", StatusCode::BAD_REQUEST),
        ("GET", "/v1/files?bogus=1", "", StatusCode::BAD_REQUEST),
    ];
    for (method, path, body, expected) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(method.clone(), format!("{url}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "{method} {path} {body}");
    }

    // A body shorter than its Content-Length: the client hangs up early.
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket
        .write_all(
            format!("PUT /v1/files/short HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\nonly this")
                .as_bytes(),
        )
        .await
        .unwrap();
    socket.shutdown().await.unwrap();
    drop(socket);

    // Nothing of all that was stored.
    let listing: Value = http
        .get(format!("{url}/v1/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["files"], serde_json::json!([]));
}

/// Sends `request` as-is and returns the whole answer as text.
async fn raw_request(addr: &str, request: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_through_a_gigabyte_upload_and_download() {
    const GIB: usize = 1024 * MIB;
    let cluster = TestCluster::start(3, &["--file-scrub-bytes-per-s", "0"]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    // Warm the node up so the baseline includes its steady-state buffers.
    put_file(&cluster, 1, "warm.bin", random_bytes("warm", 8 * MIB)).await;
    let pid = cluster.pid(1);
    let baseline = rss_bytes(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                // The sampling period of the peak, not a wait for anything: the sampler
                // runs until the transfers are done and is then aborted.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Upload 1 GiB generated on the fly, 1 MiB at a time, every MiB different (identical
    // chunks would be stored once).
    let block = |i: usize| random_bytes(&format!("gig-{i}"), MIB);
    let mut whole = blake3::Hasher::new();
    for i in 0..GIB / MIB {
        whole.update(&block(i));
    }
    let stream = futures::stream::iter(
        (0..GIB / MIB).map(move |i| Ok::<_, std::io::Error>(bytes::Bytes::from(block(i)))),
    );
    let r = cluster
        .http()
        .put(format!("{}/v1/files/gig.bin", cluster.url(1)))
        .header("content-length", GIB.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .timeout(Duration::from_secs(1200))
        .send()
        .await
        .unwrap();
    // The upload needs about 3 GiB free on the test's disk (3 copies of every chunk); the
    // body says which limit refused it.
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "upload answered {body}");
    let manifest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(manifest["blake3"], whole.finalize().to_hex().as_str());

    // Download it through the same node, hashing as it streams.
    let r = cluster
        .http()
        .get(format!("{}/v1/files/gig.bin", cluster.url(1)))
        .timeout(Duration::from_secs(1200))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut hasher = blake3::Hasher::new();
    let mut received = 0usize;
    let mut body = r.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        received += piece.len();
        hasher.update(&piece);
    }
    sampler.abort();
    assert_eq!(received, GIB);
    assert_eq!(manifest["blake3"], hasher.finalize().to_hex().as_str());
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed) - baseline;
    eprintln!(
        "1 GiB up and down: node 1 RSS baseline {} MiB, peak growth {} MiB",
        baseline / MIB as u64,
        growth / MIB as u64
    );
    assert!(
        growth < 48 * MIB as u64,
        "node 1's resident memory grew by {} MiB (baseline {} MiB)",
        growth / MIB as u64,
        baseline / MIB as u64
    );
}
