//! `kith backup FILE` and `kith restore FILE --data DIR --id N --peers …`.
//!
//! A backup is saved as `FILE.tmp`, checked whole (every record and the checksum,
//! `kith_storage::backup::verify_backup`) and only then renamed to FILE, so a FILE that exists
//! is a whole backup. A restore is run once per member of the new cluster, each with the same
//! FILE and `--peers`; it checks the file whole before it creates anything (see
//! `kith_storage::backup` for what the new data directory holds).
//!
//! `--with-files` makes the backup carry every file's bytes too, and a restore gives each
//! member all of them.
//!
//! Refuses: overwriting a FILE, and restoring into a non-empty directory.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::commands::{Common, Output};
use kith_core::NodeId;

#[derive(Args)]
pub struct BackupArgs {
    /// Where to save the backup (must not exist).
    file: PathBuf,
    /// Also carry every file's bytes (without it the backup holds the files' manifests,
    /// and a restored cluster cannot read them back).
    #[arg(long)]
    with_files: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup `kith backup` saved.
    file: PathBuf,
    /// The data directory to create for this member (absent or empty).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// This member's id in the new cluster (one of `--peers`).
    #[arg(long)]
    id: NodeId,
    /// Every member of the new cluster, `1=HOST:PORT,2=HOST:PORT,…`: the same on every
    /// member's restore.
    #[arg(long)]
    peers: String,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let client = args.common.client()?;
    if args.file.exists() {
        bail!(
            "{} exists; a backup never overwrites a file",
            args.file.display()
        );
    }
    let mut tmp_name = args.file.clone().into_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| {
            format!(
                "cannot create {} (left by an interrupted backup? remove it)",
                tmp.display()
            )
        })?;
    let mut out = tokio::fs::File::from_std(file);
    // The node writes the whole copy before the first byte, so the bar spins until the
    // answer says how long it is.
    let bar = crate::files::progress_bar(None, "backing up");
    let progress = |bytes: u64, total: Option<u64>| {
        if let (Some(total), None) = (total, bar.length()) {
            bar.set_length(total);
            bar.set_style(crate::files::bar_style(true));
        }
        bar.set_position(bytes);
    };
    let saved = client.backup(&mut out, args.with_files, &progress).await;
    bar.finish_and_clear();
    let result = async {
        let saved = saved?;
        out.sync_all().await.context("sync the backup")?;
        drop(out);
        let checked = kith_storage::backup::verify_backup(&tmp)
            .with_context(|| format!("the backup received in {} is not whole", tmp.display()))?;
        if (checked.index, checked.revision) != (saved.index, saved.revision) {
            bail!(
                "the backup's content (index {}, revision {}) is not what the node announced \
                 (index {}, revision {})",
                checked.index,
                checked.revision,
                saved.index,
                saved.revision
            );
        }
        std::fs::rename(&tmp, &args.file)
            .with_context(|| format!("rename {} to {}", tmp.display(), args.file.display()))?;
        Ok(saved)
    }
    .await;
    let saved = match result {
        Ok(saved) => saved,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if args.common.output == Output::Json {
        outln!(
            "{}",
            serde_json::json!({
                "file": args.file.display().to_string(),
                "bytes": saved.bytes,
                "index": saved.index,
                "term": saved.term,
                "revision": saved.revision,
            })
        );
    } else {
        outln!(
            "saved {}: {} bytes, revision {}, log index {} (term {})",
            args.file.display(),
            saved.bytes,
            saved.revision,
            saved.index,
            saved.term
        );
    }
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let peers = crate::serve::parse_peers(&args.peers)?;
    let Some(me) = peers.get(&args.id) else {
        bail!("--peers does not list this member's id {}", args.id);
    };
    let addr = me.addr.clone();
    let count = peers.len();
    let point = kith_storage::backup::restore(&args.file, &args.data, args.id, peers)
        .await
        .with_context(|| format!("restore {}", args.file.display()))?;
    outln!(
        "restored revision {} (log index {}) into {} as node {} of a new cluster of {count}; \
         start it with `kith serve --id {} --listen {addr} --data {}` (its membership is the \
         --peers given here)",
        point.revision,
        point.index,
        args.data.display(),
        args.id,
        args.id,
        args.data.display()
    );
    Ok(())
}
