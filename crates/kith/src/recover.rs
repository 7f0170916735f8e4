//! `kith recover --data DIR --force-new-cluster`: the last resort after a cluster lost its
//! quorum for good. Turns one stopped member's data into a one-member cluster that other
//! nodes then join with `kith serve --join`.
//!
//! Owns: the command's refusals and what it tells the operator. The rewrite itself is
//! `kith_storage::force_new_cluster`. Refuses: running without `--force-new-cluster` (it
//! then only says what it would do), and a directory a running node holds.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use kith_core::NodeId;

#[derive(Args)]
pub struct RecoverArgs {
    /// The stopped node's data directory.
    #[arg(long)]
    data: PathBuf,
    /// Make this node the only member of a new cluster, committing everything in its log.
    /// Required: without it the command only says what it would do.
    #[arg(long)]
    force_new_cluster: bool,
    /// The node's id, for a data directory that does not record it (`node-id`).
    #[arg(long)]
    id: Option<NodeId>,
}

pub fn run(args: RecoverArgs) -> anyhow::Result<()> {
    let stored = kith_storage::stored_node_id(&args.data)
        .with_context(|| format!("cannot read {}", args.data.display()))?;
    let id = match (stored, args.id) {
        (Some(stored), Some(given)) if stored != given => {
            bail!(
                "{} belongs to node {stored}, not node {given}",
                args.data.display()
            )
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => bail!(
            "{} does not record its node id ({}): give --id N",
            args.data.display(),
            kith_storage::NODE_ID_FILE
        ),
    };
    if !args.force_new_cluster {
        bail!(
            "this would make node {id} ({}) the only member of a new cluster: it commits every \
             entry in its log, and entries it never received are lost; the other members must \
             then be wiped and join it. Stop the node first, and pass --force-new-cluster to \
             go ahead",
            args.data.display()
        );
    }
    let done = kith_storage::force_new_cluster(&args.data, id)?;
    let old: Vec<String> = done.old_voters.iter().map(|v| v.to_string()).collect();
    outln!(
        "recovered node {} ({}): membership entry at index {} (term {}) names only this node",
        done.node_id,
        done.addr,
        done.index,
        done.term
    );
    outln!("the old voters were {}", old.join(", "));
    outln!(
        "next: start it with `kith serve --id {} --data {} …` (no --peers, no --join); it elects \
         itself and commits its log",
        done.node_id,
        args.data.display()
    );
    outln!(
        "then wipe every other old member's data directory and start each with `kith serve \
         --join http(s)://{}` and a fresh --data; never restart one on its old data",
        done.addr
    );
    Ok(())
}
