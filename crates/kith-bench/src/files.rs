//! `kith bench files`: upload and download throughput of one large file, set against the
//! physical limit measured in the same run.
//!
//! ```text
//! 1. disk:     write DISK_BYTES in 1 MiB writes to a temp file in --disk-dir, fsync  → MB/s
//! 2. upload:   PUT  /v1/files/bench/…  (generated body, --bytes)  on the first endpoint
//! 3. download: GET  the same file      (every byte counted)       on the last endpoint
//! 4. delete the file
//! limit = disk MB/s ÷ replicas (every byte is written durably R times, on one disk here)
//! ```
//!
//! The body is generated while it is sent: a 4 MiB pseudo-random pool, with the file offset
//! stamped into every 4 KiB block, so that no two chunks are alike (a content-addressed store
//! would otherwise deduplicate them and the upload would measure nothing) and the bench never
//! holds the file in memory. Point `--disk-dir` at the filesystem of the cluster's data
//! directories, or the limit is the limit of some other disk.
//!
//! Like the rest of kith-bench it measures and refuses to judge: no thresholds.

use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::args::HttpVersion;
use crate::conn::{self, ClientTls, Endpoint};
use crate::error::BenchError;
use crate::report::{Latency, Report};
use crate::BenchArgs;

/// Bytes written to measure the disk (the brief's 256 MiB), or `--bytes` if smaller.
const DISK_BYTES: u64 = 256 << 20;
/// One write of the disk measurement, and one body piece of the upload.
const PIECE_BYTES: usize = 1 << 20;
/// The pool the body is cut from, and the block size the offset is stamped into.
const POOL_BYTES: usize = 4 << 20;
const STAMP_EVERY: usize = 4096;
/// Slowest transfer rate a run waits for before giving up (bounds every phase).
const RATE_FLOOR_BYTES_S: u64 = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a JSON answer read.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// The figures of one `kith bench files` run (printed, and written to `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct FilesReport {
    pub bytes: u64,
    pub replicas: u64,
    pub chunk_count: u64,
    pub upload_endpoint: String,
    pub download_endpoint: String,
    pub upload_s: f64,
    pub download_s: f64,
    /// MB = 10^6 bytes.
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    pub disk_dir: PathBuf,
    pub disk_bytes: u64,
    pub disk_s: f64,
    /// Sequential write with one fsync at the end.
    pub disk_mb_s: f64,
    /// `disk_mb_s / replicas`.
    pub limit_mb_s: f64,
    /// `upload_mb_s / limit_mb_s`.
    pub upload_to_limit: f64,
    pub download_to_upload: f64,
}

/// Runs the benchmark; prints the table and writes `--json`. The returned [`Report`] holds
/// the two transfers as its operations (the files figures are in the printed table and the
/// JSON file).
pub async fn run(args: &BenchArgs, tls: Option<&ClientTls>) -> Result<Report, BenchError> {
    let authorization = conn::authorization(args.token.as_deref())?;
    let reach = Reach {
        tls,
        authorization: authorization.as_ref(),
    };
    let bytes = args.bytes;
    let disk_dir = args.disk_dir.clone().unwrap_or_else(std::env::temp_dir);
    let upload_endpoint = args.endpoints[0].trim_end_matches('/').to_owned();
    let download_endpoint = args.endpoints[args.endpoints.len() - 1]
        .trim_end_matches('/')
        .to_owned();
    let bound = Duration::from_secs(60 + bytes / RATE_FLOOR_BYTES_S);

    let disk_bytes = DISK_BYTES.min(bytes.max(PIECE_BYTES as u64));
    note(
        args,
        &format!(
            "disk: writing {} MiB to {} with fsync…",
            disk_bytes >> 20,
            disk_dir.display()
        ),
    );
    let dir = disk_dir.clone();
    let disk = tokio::task::spawn_blocking(move || disk_write_rate(&dir, disk_bytes))
        .await
        .map_err(|e| BenchError::Worker(e.to_string()))?
        .map_err(|e| BenchError::InvalidArgs(format!("--disk-dir {}: {e}", disk_dir.display())))?;

    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let path = format!("/v1/files/bench/files-{}-{unix_ms}.bin", std::process::id());
    note(
        args,
        &format!("upload: {} bytes to {upload_endpoint}{path}…", bytes),
    );
    let started = Instant::now();
    let manifest = tokio::time::timeout(bound, upload(&upload_endpoint, reach, &path, bytes))
        .await
        .map_err(|_| failed(format!("the upload took longer than {bound:?}")))??;
    let upload_s = started.elapsed().as_secs_f64();
    let replicas = manifest["replicas"].as_u64().unwrap_or(0);
    if manifest["size"].as_u64() != Some(bytes) {
        return Err(failed(format!(
            "the stored size is not {bytes}: {manifest}"
        )));
    }

    note(args, &format!("download: from {download_endpoint}{path}…"));
    let started = Instant::now();
    let got = tokio::time::timeout(bound, download(&download_endpoint, reach, &path))
        .await
        .map_err(|_| failed(format!("the download took longer than {bound:?}")))??;
    let download_s = started.elapsed().as_secs_f64();
    if got != bytes {
        return Err(failed(format!("downloaded {got} bytes of {bytes}")));
    }
    // Leave nothing behind; a failed delete only leaves a file for garbage collection.
    let _ = tokio::time::timeout(bound, call(&upload_endpoint, reach, Method::DELETE, &path)).await;

    let mb_s = |b: u64, s: f64| if s > 0.0 { b as f64 / 1e6 / s } else { 0.0 };
    let upload_mb_s = mb_s(bytes, upload_s);
    let download_mb_s = mb_s(bytes, download_s);
    let disk_mb_s = mb_s(disk_bytes, disk.as_secs_f64());
    let limit_mb_s = disk_mb_s / replicas.max(1) as f64;
    let report = FilesReport {
        bytes,
        replicas,
        chunk_count: manifest["chunk_count"].as_u64().unwrap_or(0),
        upload_endpoint,
        download_endpoint,
        upload_s,
        download_s,
        upload_mb_s,
        download_mb_s,
        disk_dir: disk_dir.clone(),
        disk_bytes,
        disk_s: disk.as_secs_f64(),
        disk_mb_s,
        limit_mb_s,
        upload_to_limit: if limit_mb_s > 0.0 {
            upload_mb_s / limit_mb_s
        } else {
            0.0
        },
        download_to_upload: if upload_mb_s > 0.0 {
            download_mb_s / upload_mb_s
        } else {
            0.0
        },
    };
    let _ = print(&report, &mut std::io::stdout().lock());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).expect("a report always serialises");
        std::fs::write(path, json).map_err(|source| BenchError::WriteReport {
            path: path.clone(),
            source,
        })?;
    }
    let duration_s = upload_s + download_s;
    Ok(Report {
        config: crate::config(args),
        ops: 2,
        not_found: 0,
        errors: 0,
        errors_by_kind: Default::default(),
        duration_s,
        throughput_ops_s: 2.0 / duration_s.max(f64::MIN_POSITIVE),
        latency: Latency::default(),
        success_gap_ms_max: 0.0,
        target_cpu_s: 0.0,
        target_cpu_ms_per_kop: 0.0,
        target_rss_peak_kb_max: 0,
        processes: Vec::new(),
        client_cpu_s: 0.0,
        client_cpu_ms_per_kop: 0.0,
        jobs: None,
    })
}

fn note(args: &BenchArgs, line: &str) {
    if !args.quiet {
        eprintln!("{line}");
    }
}

fn failed(message: String) -> BenchError {
    BenchError::AllFailed {
        errors: 1,
        kinds: message,
    }
}

pub fn print(r: &FilesReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "files: {:.2} GiB, {} chunks × {} copies (MB = 10^6 bytes)",
        r.bytes as f64 / (1u64 << 30) as f64,
        r.chunk_count,
        r.replicas
    )?;
    let rows = [
        (
            format!("upload via {}", host_port(&r.upload_endpoint)),
            r.upload_mb_s,
            Some(r.upload_s),
        ),
        (
            format!("download via {}", host_port(&r.download_endpoint)),
            r.download_mb_s,
            Some(r.download_s),
        ),
        ("disk write + fsync".to_owned(), r.disk_mb_s, Some(r.disk_s)),
        (
            format!("limit (disk ÷ {})", r.replicas.max(1)),
            r.limit_mb_s,
            None,
        ),
    ];
    let w = rows
        .iter()
        .map(|(n, _, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    writeln!(out, "  {:<w$} {:>9} {:>9}", "", "MB/s", "seconds")?;
    for (name, mb_s, s) in rows {
        let seconds = s.map(|s| format!("{s:.2}")).unwrap_or_default();
        let line = format!("  {name:<w$} {mb_s:>9.1} {seconds:>9}");
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(
        out,
        "  upload ÷ limit {:.2}, download ÷ upload {:.2}",
        r.upload_to_limit, r.download_to_upload
    )
}

fn host_port(endpoint: &str) -> &str {
    endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
}

/// Writes `bytes` in 1 MiB writes to a new temp file in `dir`, fsyncs it and removes it;
/// returns the time from the first write to the end of the fsync.
fn disk_write_rate(dir: &Path, bytes: u64) -> std::io::Result<Duration> {
    let mut pool = Pool::new();
    let path = dir.join(format!(".kith-bench-disk-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)?;
    let started = Instant::now();
    let mut written = 0u64;
    let mut outcome = Ok(());
    while written < bytes {
        let n = (bytes - written).min(PIECE_BYTES as u64) as usize;
        let piece = pool.piece(written, n);
        if let Err(e) = file.write_all(&piece) {
            outcome = Err(e);
            break;
        }
        written += n as u64;
    }
    let outcome = outcome.and_then(|()| file.sync_all());
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    outcome.map(|()| elapsed)
}

/// The source of generated bytes: a fixed pseudo-random pool, stamped with the offset.
struct Pool {
    pool: Vec<u8>,
}

impl Pool {
    fn new() -> Self {
        // xorshift64*: any fixed, incompressible-looking bytes will do.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut pool = Vec::with_capacity(POOL_BYTES);
        while pool.len() < POOL_BYTES {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            pool.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Pool { pool }
    }

    /// `n` bytes for file offset `offset` (a multiple of `STAMP_EVERY`).
    fn piece(&mut self, offset: u64, n: usize) -> Bytes {
        debug_assert_eq!(offset % STAMP_EVERY as u64, 0, "pieces start on a block");
        let start = (offset % POOL_BYTES as u64) as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let from = (start + out.len()) % POOL_BYTES;
            let take = (n - out.len()).min(POOL_BYTES - from);
            out.extend_from_slice(&self.pool[from..from + take]);
        }
        for (i, block) in out.chunks_mut(STAMP_EVERY).enumerate() {
            let stamp = (offset + (i * STAMP_EVERY) as u64).to_le_bytes();
            let k = block.len().min(8);
            block[..k].copy_from_slice(&stamp[..k]);
        }
        Bytes::from(out)
    }
}

/// The upload body: `remaining` generated bytes, one piece per frame.
struct Generated {
    pool: Pool,
    offset: u64,
    total: u64,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset >= self.total {
            return Poll::Ready(None);
        }
        let n = (self.total - self.offset).min(PIECE_BYTES as u64) as usize;
        let offset = self.offset;
        let piece = self.pool.piece(offset, n);
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.offset)
    }
}

/// How every request of the run reaches the cluster: TLS, and the token's header.
#[derive(Clone, Copy)]
struct Reach<'a> {
    tls: Option<&'a ClientTls>,
    authorization: Option<&'a hyper::header::HeaderValue>,
}

impl Reach<'_> {
    fn authorize(&self, request: hyper::http::request::Builder) -> hyper::http::request::Builder {
        match self.authorization {
            Some(value) => request.header(hyper::header::AUTHORIZATION, value),
            None => request,
        }
    }
}

async fn connect<B>(
    endpoint: &str,
    tls: Option<&ClientTls>,
) -> Result<(http1::SendRequest<B>, String), BenchError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let endpoint = Endpoint::parse(endpoint)?;
    let authority = endpoint.authority.clone();
    let io = conn::open(&endpoint, tls, HttpVersion::Http1, CONNECT_TIMEOUT)
        .await
        .map_err(failed)?;
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| failed(format!("{authority}: {e}")))?;
    tokio::spawn(connection);
    Ok((sender, authority))
}

async fn upload(
    endpoint: &str,
    reach: Reach<'_>,
    path: &str,
    bytes: u64,
) -> Result<serde_json::Value, BenchError> {
    let (mut sender, authority) = connect::<Generated>(endpoint, reach.tls).await?;
    let body = Generated {
        pool: Pool::new(),
        offset: 0,
        total: bytes,
    };
    let request = reach
        .authorize(Request::builder())
        .method(Method::PUT)
        .uri(path)
        .header(hyper::header::HOST, &authority)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .header(hyper::header::CONTENT_LENGTH, bytes)
        .body(body)
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(format!("upload to {authority}: {e}")))?;
    let status = response.status();
    let answer = read_small(response.into_body()).await?;
    let json: serde_json::Value = serde_json::from_slice(&answer).map_err(|_| {
        failed(format!(
            "upload: {status}: {}",
            String::from_utf8_lossy(&answer)
        ))
    })?;
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return Err(failed(format!("upload: {status}: {json}")));
    }
    Ok(json)
}

/// Downloads `path`, counting (and dropping) every byte; returns the count.
async fn download(endpoint: &str, reach: Reach<'_>, path: &str) -> Result<u64, BenchError> {
    let response = send_empty(endpoint, reach, Method::GET, path).await?;
    let status = response.status();
    if status != StatusCode::OK {
        let answer = read_small(response.into_body()).await?;
        return Err(failed(format!(
            "download: {status}: {}",
            String::from_utf8_lossy(&answer)
        )));
    }
    let mut body = response.into_body();
    let mut count = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| failed(format!("download broke off after {count} bytes: {e}")))?;
        if let Some(data) = frame.data_ref() {
            count += data.len() as u64;
        }
    }
    Ok(count)
}

async fn call(
    endpoint: &str,
    reach: Reach<'_>,
    method: Method,
    path: &str,
) -> Result<StatusCode, BenchError> {
    Ok(send_empty(endpoint, reach, method, path).await?.status())
}

/// Sends a body-less request on a new connection and returns the answer's head and body.
async fn send_empty(
    endpoint: &str,
    reach: Reach<'_>,
    method: Method,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, BenchError> {
    let (mut sender, authority) = connect::<Empty<Bytes>>(endpoint, reach.tls).await?;
    let request = reach
        .authorize(Request::builder())
        .method(method.clone())
        .uri(path)
        .header(hyper::header::HOST, &authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| failed(format!("{method} {path} on {authority}: {e}")))
}

async fn read_small(mut body: hyper::body::Incoming) -> Result<Vec<u8>, BenchError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > ANSWER_BYTES_MAX {
                return Err(failed("an answer larger than 64 KiB".into()));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pieces_are_all_different_and_repeatable() {
        let mut pool = Pool::new();
        let a = pool.piece(0, PIECE_BYTES);
        let b = pool.piece(PIECE_BYTES as u64 * 4, PIECE_BYTES);
        let c = pool.piece(PIECE_BYTES as u64 * 4, PIECE_BYTES);
        assert_eq!(a.len(), PIECE_BYTES);
        // Pieces 0 and 4 share pool bytes (the pool is 4 MiB) but not their stamps.
        assert_ne!(a, b);
        assert_eq!(b, c);
        let tail = pool.piece(4096, 10);
        assert_eq!(tail.len(), 10);
    }

    #[test]
    fn the_disk_measurement_writes_fsyncs_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("kith-bench-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let took = disk_write_rate(&dir, 3 << 20).expect("write");
        assert!(took > Duration::ZERO);
        assert_eq!(
            std::fs::read_dir(&dir).expect("list").count(),
            0,
            "temp file removed"
        );
        std::fs::remove_dir(&dir).expect("remove");
    }
}
