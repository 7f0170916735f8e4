//! `kith files put|get|ls|rm|share|unshare|where`: the files API (docs/FILES.md) from the
//! terminal, on `kith-client`'s failover client.
//!
//! Transfers stream (nothing holds a whole file) and draw a progress bar on stderr when it
//! is a terminal. A download goes to `LOCAL.kith-part` first and is renamed over `LOCAL` only
//! once complete, so a failed download never leaves a truncated file under the real name.
//! Errors go to stderr with a non-zero exit.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use kith_client::{
    validate_path, ByteRange, Client, Consistency, DownloadOptions, FileExplain, FileInfo,
    UploadOptions, UploadSource,
};

use crate::commands::{print_table, Common, Output};

/// Longest share link the node accepts (docs/FILES.md: 1 s to 30 days).
const SHARE_S_MAX: u64 = 30 * 24 * 3600;
/// Files asked for per list request (the API's maximum page).
const LIST_PAGE: usize = 1000;
/// Most files `ls` prints, whatever `--limit` says.
const LS_LIMIT_MAX: usize = 1_000_000;

#[derive(Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    command: FilesCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum FilesCommand {
    /// Upload LOCAL (a file, or `-` for stdin) to PATH.
    Put {
        /// The local file, or `-` for stdin.
        local: String,
        /// The path in the cluster, e.g. `photos/cat.jpg`.
        path: String,
        /// Stored with the file and sent back on download (default: guessed from the name).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download PATH to LOCAL (default: PATH's last segment here; `-` for stdout).
    Get {
        /// The path in the cluster.
        path: String,
        /// Where to write: a file, a directory, or `-` for stdout.
        local: Option<String>,
        /// Only these bytes: `A-B` (inclusive), `A-` or `-N` (the last N).
        #[arg(long)]
        range: Option<String>,
        /// Read the manifest from the contacted node's local state (may be behind).
        #[arg(long)]
        stale: bool,
    },
    /// List files whose path starts with PREFIX.
    Ls {
        /// Only paths starting with this (default: every file).
        #[arg(default_value = "")]
        prefix: String,
        /// Print at most this many files.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete PATH.
    Rm {
        /// The path in the cluster.
        path: String,
    },
    /// Make a link that downloads PATH without credentials; prints its full URL.
    Share {
        /// The path in the cluster.
        path: String,
        /// How long the link works: `90s`, `15m`, `1h`, `7d` (at most 30 days).
        #[arg(long, default_value = "1d")]
        expires: String,
    },
    /// Revoke a share link by its TOKEN (the last part of its URL).
    Unshare {
        /// The 32 hex digits after `/s/` in the link.
        token: String,
    },
    /// Where each chunk of PATH lives, and where it should live.
    Where {
        /// The path in the cluster.
        path: String,
    },
}

pub async fn run(args: FilesArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let json_out = args.common.output == Output::Json;
    match args.command {
        FilesCommand::Put {
            local,
            path,
            content_type,
        } => put(&client, &local, &path, content_type, json_out).await,
        FilesCommand::Get {
            path,
            local,
            range,
            stale,
        } => get(&client, &path, local.as_deref(), range.as_deref(), stale).await,
        FilesCommand::Ls { prefix, limit } => ls(&client, &prefix, limit, json_out).await,
        FilesCommand::Rm { path } => {
            check_path(&path)?;
            let deleted = client.delete_file(&path).await?;
            if json_out {
                outln!("{}", json!({"path": path, "deleted": deleted}));
            } else if deleted {
                outln!("deleted {path}");
            } else {
                bail!("no such file: {path}");
            }
            Ok(())
        }
        FilesCommand::Share { path, expires } => {
            check_path(&path)?;
            let seconds = parse_duration_s(&expires)?;
            let share = client.share_file(&path, Some(seconds)).await?;
            let url = format!("{}{}", client.endpoints()[0], share.url());
            if json_out {
                outln!(
                    "{}",
                    json!({"url": url, "token": share.token, "path": share.path,
                           "expires_at_ms": share.expires_at_ms})
                );
            } else {
                outln!("{url}");
            }
            Ok(())
        }
        FilesCommand::Unshare { token } => {
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("a share token is the hex string at the end of the link's URL");
            }
            if !client.unshare(&token).await? {
                bail!("no such share: {token}");
            }
            if json_out {
                outln!("{}", json!({"token": token, "revoked": true}));
            } else {
                outln!("revoked {token}");
            }
            Ok(())
        }
        FilesCommand::Where { path } => {
            check_path(&path)?;
            let explain = client
                .explain_file(&path)
                .await?
                .with_context(|| format!("no such file: {path}"))?;
            if json_out {
                outln!("{}", explain_json(&explain));
            } else {
                print_placement(&explain);
            }
            Ok(())
        }
    }
}

fn check_path(path: &str) -> anyhow::Result<()> {
    validate_path(path).map_err(|why| anyhow::anyhow!("invalid path {path:?}: {why}"))
}

async fn put(
    client: &Client,
    local: &str,
    path: &str,
    content_type: Option<String>,
    json_out: bool,
) -> anyhow::Result<()> {
    check_path(path)?;
    let (source, length, content_type) = if local == "-" {
        let stdin: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(tokio::io::stdin());
        (UploadSource::Reader(stdin), None, content_type)
    } else {
        let meta = std::fs::metadata(local).with_context(|| format!("cannot read {local}"))?;
        if !meta.is_file() {
            bail!("{local} is not a regular file");
        }
        let guessed = content_type.or_else(|| guess_content_type(local).map(str::to_owned));
        (
            UploadSource::File(PathBuf::from(local)),
            Some(meta.len()),
            guessed,
        )
    };
    let bar = progress_bar(length, "uploading");
    let options = UploadOptions {
        content_type,
        progress: Some(progress_callback(&bar)),
    };
    let outcome = client.put_file(path, source, options).await;
    bar.finish_and_clear();
    let info = outcome?;
    if json_out {
        outln!("{}", info_json(&info));
    } else {
        outln!(
            "stored {} ({}, {} × {} copies, version {})",
            info.path,
            human_bytes(info.size),
            plural(info.chunk_count, "chunk"),
            info.replicas,
            info.version
        );
    }
    Ok(())
}

async fn get(
    client: &Client,
    path: &str,
    local: Option<&str>,
    range: Option<&str>,
    stale: bool,
) -> anyhow::Result<()> {
    check_path(path)?;
    let range = match range {
        Some(text) => Some(
            ByteRange::parse(text)
                .with_context(|| format!("--range {text:?}: expected A-B, A- or -N"))?,
        ),
        None => None,
    };
    let consistency = if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    };
    // The bar's length, when a whole file is fetched and someone is watching.
    let length = if range.is_none() && std::io::stderr().is_terminal() {
        client.stat_file(path).await.ok().flatten().map(|s| s.size)
    } else {
        None
    };
    let bar = progress_bar(length, "downloading");
    let options = DownloadOptions {
        range,
        consistency,
        progress: Some(progress_callback(&bar)),
    };
    if local == Some("-") {
        let mut out = tokio::io::stdout();
        let outcome = client.get_file(path, &mut out, options).await;
        bar.finish_and_clear();
        outcome?.with_context(|| format!("no such file: {path}"))?;
        return Ok(());
    }
    let target = match local {
        Some(l) => PathBuf::from(l),
        None => PathBuf::from(path.rsplit('/').next().unwrap_or(path)),
    };
    let target = if target.is_dir() {
        target.join(path.rsplit('/').next().unwrap_or(path))
    } else {
        target
    };
    let part = part_path(&target);
    let file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let outcome = client.get_file(path, &mut out, options).await;
    bar.finish_and_clear();
    let finished = match outcome {
        Ok(Some(download)) => {
            let file = out.into_inner();
            file.sync_all()
                .await
                .with_context(|| format!("cannot write {}", part.display()))?;
            Ok(download)
        }
        Ok(None) => Err(anyhow::anyhow!("no such file: {path}")),
        Err(e) => Err(e.into()),
    };
    let download = match finished {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, &target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    eprintln!(
        "{} → {} ({}, version {})",
        path,
        target.display(),
        human_bytes(download.bytes),
        download.version
    );
    Ok(())
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".kith-part");
    target.with_file_name(name)
}

async fn ls(client: &Client, prefix: &str, limit: usize, json_out: bool) -> anyhow::Result<()> {
    if limit == 0 || limit > LS_LIMIT_MAX {
        bail!("--limit must be in 1..={LS_LIMIT_MAX}");
    }
    let mut files: Vec<FileInfo> = Vec::new();
    let mut after: Option<String> = None;
    let mut more = false;
    // Bounded: each round adds a page or stops, and `limit` caps the total.
    while files.len() < limit {
        let want = (limit - files.len()).min(LIST_PAGE);
        let page = client.list_files(prefix, after.as_deref(), want).await?;
        let got = page.files.len();
        files.extend(page.files);
        match page.next {
            Some(next) if got > 0 => after = Some(next),
            _ => break,
        }
        if files.len() >= limit {
            more = true;
        }
    }
    if json_out {
        let list: Vec<_> = files.iter().map(info_json).collect();
        outln!("{}", json!({"files": list, "more": more}));
        return Ok(());
    }
    let rows: Vec<[String; 5]> = files
        .iter()
        .map(|f| {
            [
                f.path.clone(),
                human_bytes(f.size),
                f.version.to_string(),
                f.content_type.clone(),
                f.blake3.chars().take(16).collect(),
            ]
        })
        .collect();
    print_table(&["PATH", "SIZE", "VERSION", "TYPE", "BLAKE3"], &rows);
    if more {
        outln!("(more files match; raise --limit)");
    }
    Ok(())
}

fn info_json(f: &FileInfo) -> serde_json::Value {
    json!({
        "path": f.path, "size": f.size, "blake3": f.blake3, "content_type": f.content_type,
        "created_ms": f.created_ms, "version": f.version, "chunk_bytes": f.chunk_bytes,
        "chunk_count": f.chunk_count, "replicas": f.replicas,
    })
}

fn explain_json(e: &FileExplain) -> serde_json::Value {
    let chunks: Vec<_> = e
        .chunks
        .iter()
        .map(|c| {
            json!({"index": c.index, "offset": c.offset, "size": c.size, "hash": c.hash,
                   "holders": c.holders, "desired": c.desired})
        })
        .collect();
    let f = &e.file;
    json!({"path": f.path, "size": f.size, "blake3": f.blake3, "version": f.version,
           "replicas": f.replicas, "chunks": chunks})
}

/// One row per chunk: where it is, where it should be, and whether that is enough.
fn print_placement(e: &FileExplain) {
    outln!(
        "{}: {} in {}, {} copies wanted, version {}",
        e.file.path,
        human_bytes(e.file.size),
        plural(e.chunks.len() as u64, "chunk"),
        e.file.replicas,
        e.file.version
    );
    let ids = |v: &[u64]| {
        let s: Vec<String> = v.iter().map(u64::to_string).collect();
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.join(",")
        }
    };
    let rows: Vec<[String; 7]> = e
        .chunks
        .iter()
        .map(|c| {
            [
                c.index.to_string(),
                c.offset.to_string(),
                human_bytes(u64::from(c.size)),
                c.hash.chars().take(12).collect(),
                ids(&c.holders),
                ids(&c.desired),
                placement_state(&c.holders, &c.desired, e.file.replicas).to_owned(),
            ]
        })
        .collect();
    print_table(
        &[
            "CHUNK", "OFFSET", "SIZE", "HASH", "HOLDERS", "DESIRED", "STATE",
        ],
        &rows,
    );
}

/// `ok` when every desired node holds the chunk; `under` when fewer than the wanted copies
/// exist; `moving` when there are enough copies but not yet on the desired nodes.
fn placement_state(holders: &[u64], desired: &[u64], replicas: u64) -> &'static str {
    if desired.iter().all(|d| holders.contains(d)) {
        "ok"
    } else if (holders.len() as u64) < replicas.max(desired.len() as u64) {
        "under"
    } else {
        "moving"
    }
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal (scripts, tests).
pub(crate) fn progress_bar(length: Option<u64>, verb: &'static str) -> ProgressBar {
    let bar = match length {
        Some(n) => ProgressBar::new(n).with_style(bar_style(true)),
        None => ProgressBar::no_length().with_style(bar_style(false)),
    };
    bar.set_message(verb);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// A bar's look: with a length, a bar and an eta; without, a spinner and the bytes so far.
pub(crate) fn bar_style(with_length: bool) -> ProgressStyle {
    let template = if with_length {
        "{msg} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {msg} {bytes} {binary_bytes_per_sec}"
    };
    ProgressStyle::with_template(template).expect("a valid template")
}

fn progress_callback(bar: &ProgressBar) -> kith_client::Progress {
    let bar = bar.clone();
    Arc::new(move |done| bar.set_position(done))
}

/// `90`, `90s`, `15m`, `1h`, `7d` → seconds, within the node's bounds for a share.
fn parse_duration_s(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (number, unit_s) = match text.chars().last() {
        Some('s') => (&text[..text.len() - 1], 1),
        Some('m') => (&text[..text.len() - 1], 60),
        Some('h') => (&text[..text.len() - 1], 3600),
        Some('d') => (&text[..text.len() - 1], 86_400),
        _ => (text, 1),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("--expires {text:?}: expected e.g. 90s, 15m, 1h or 7d"))?;
    let seconds = n.saturating_mul(unit_s);
    if seconds == 0 || seconds > SHARE_S_MAX {
        bail!("--expires must be between 1s and 30d");
    }
    Ok(seconds)
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A content type for common file name extensions; `None` leaves the node's default.
fn guess_content_type(name: &str) -> Option<&'static str> {
    let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "md" | "log" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "csv" => "text/csv",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "wasm" => "application/wasm",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_within_bounds() {
        assert_eq!(parse_duration_s("90").expect("plain seconds"), 90);
        assert_eq!(parse_duration_s("15m").expect("minutes"), 900);
        assert_eq!(parse_duration_s("1h").expect("hours"), 3600);
        assert_eq!(parse_duration_s("30d").expect("days"), SHARE_S_MAX);
        assert!(parse_duration_s("31d").is_err());
        assert!(parse_duration_s("0s").is_err());
        assert!(parse_duration_s("soon").is_err());
        assert!(parse_duration_s("").is_err());
    }

    #[test]
    fn placement_states() {
        assert_eq!(placement_state(&[1, 2, 3], &[1, 2, 3], 3), "ok");
        assert_eq!(placement_state(&[3, 1, 2, 4], &[1, 2, 3], 3), "ok");
        assert_eq!(placement_state(&[1, 2], &[1, 2, 3], 3), "under");
        assert_eq!(placement_state(&[1, 2, 4], &[1, 2, 3], 3), "moving");
    }

    #[test]
    fn partial_downloads_sit_beside_the_target() {
        assert_eq!(
            part_path(Path::new("/tmp/x/cat.jpg")),
            PathBuf::from("/tmp/x/cat.jpg.kith-part")
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(guess_content_type("a/b.PNG"), Some("image/png"));
        assert_eq!(guess_content_type("noext"), None);
    }
}
