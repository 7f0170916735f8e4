//! `kith backup FILE`, `kith restore FILE --data DIR --id N --peers …` and
//! `kith recover --data DIR --force-new-cluster`.
//!
//! A backup is saved as `FILE.tmp`, checked whole (every record and the checksum,
//! `kith_storage::backup::verify_backup`) and only then renamed to FILE, so a FILE that exists
//! is a whole backup. A restore is run once per member of the new cluster, each with the same
//! FILE and `--peers`; it checks the file whole before it creates anything (see
//! `kith_storage::backup` for what the new data directory holds).
//!
//! Refuses: overwriting a FILE, restoring into a non-empty directory, and `--with-files`,
//! which would carry the files' bytes: backups hold the files' manifests but not their
//! chunks yet.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use crate::commands::{Common, Output};
use kith_core::NodeId;

#[derive(Args)]
pub struct BackupArgs {
    /// Where to save the backup (must not exist).
    file: PathBuf,
    /// Also carry every file's bytes (not available yet: backups hold the files'
    /// manifests, and each node's chunks stay in its DATA/chunks).
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
    if args.with_files {
        bail!(
            "--with-files is not available yet: backups carry every file's manifest but not \
             its bytes; copy each node's DATA/chunks directory alongside"
        );
    }
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
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let progress = |bytes: u64| {
        if terminal {
            let s = started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\r  {:.1} MiB  {:.1} MiB/s   ",
                bytes as f64 / 1048576.0,
                bytes as f64 / 1048576.0 / s
            );
            let _ = std::io::stderr().flush();
        }
    };
    let saved = client.backup(&mut out, &progress).await;
    if terminal {
        eprintln!();
    }
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

#[derive(Args)]
pub struct RecoverArgs {
    /// The data directory of a surviving member (its `kith serve` stopped).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Make DIR's node the one member of a new cluster, keeping the state it applied: the
    /// last resort after losing a quorum (entries only the lost members held are gone).
    #[arg(long)]
    force_new_cluster: bool,
    /// The node DIR belongs to, for a directory that does not record it (`DIR/node-id`,
    /// which `kith serve` writes).
    #[arg(long)]
    id: Option<NodeId>,
}

pub async fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    if !args.force_new_cluster {
        bail!(
            "kith recover --force-new-cluster turns this member's data into a one-member \
             cluster, keeping the state it applied and dropping its log past that; the other \
             members must then be wiped and rejoin with --join. Anything only the lost \
             members held is gone. Add --force-new-cluster to do it."
        );
    }
    let recorded = kith_storage::backup::recorded_node_id(&args.data)?;
    let id = match (recorded, args.id) {
        (Some(r), Some(given)) if r != given => {
            bail!(
                "{} holds node {r}'s data, not node {given}'s",
                args.data.display()
            )
        }
        (Some(r), _) => r,
        (None, Some(given)) => given,
        (None, None) => bail!(
            "{} does not say which node it belongs to; give --id N",
            args.data.display()
        ),
    };
    let recovered = kith_storage::backup::force_new_cluster(&args.data, id)
        .await
        .with_context(|| {
            format!(
                "recover {} (is its kith serve still running?)",
                args.data.display()
            )
        })?;
    outln!(
        "node {id} is now the only member of a new cluster: kept its state up to log index {} \
         (revision {}), dropped {} log entries past it; the old state and log are beside it \
         as *{}. Start it with `kith serve --id {id} --data {} …`, then wipe every other \
         member's data directory and start it with --join.",
        recovered.point.index,
        recovered.point.revision,
        recovered.dropped_entries,
        kith_storage::backup::SET_ASIDE,
        args.data.display()
    );
    Ok(())
}
