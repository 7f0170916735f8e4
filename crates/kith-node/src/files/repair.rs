//! The background work that keeps every chunk on enough nodes: repair, scrub and garbage
//! collection (the rules are in the [module docs](super)). Each node runs its own loop and
//! only ever pulls; there is no coordinator.
//!
//! Refuses: serving chunks to peers ([`super::peers`]) and deciding placement
//! ([`super::placement`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::blocking;
use crate::node::Consistency;
use crate::{Node, NodeError};
use kith_core::files::{hex, Hash};

/// Referenced chunks examined per page of a repair pass, and local chunks per page of a GC
/// pass (each GC page starts with its own read index).
const PASS_PAGE: usize = 1000;
/// Chunks one repair pass may fetch; the rest wait for the next pass.
const REPAIRS_PER_PASS_MAX: usize = 10_000;

impl Node {
    /// Starts the repair, scrub and garbage-collection loop.
    pub(crate) fn start_file_tasks(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        let task = tokio::spawn(file_tasks(node));
        *self.files.task.lock().expect("task lock") = Some(task);
    }

    /// One repair pass: fetch every referenced chunk this node should hold but lacks.
    /// Returns how many chunks it repaired.
    pub async fn repair_pass(&self) -> Result<u64, NodeError> {
        let members = self.file_members();
        // Probe every peer, so liveness reflects now rather than the last transfer.
        for (id, _) in &members {
            if *id != self.config.id {
                let _ = self.ask_have(*id, &members, &[]).await;
            }
        }
        let mut repaired = 0;
        let mut attempts = 0;
        let mut after: Option<Hash> = None;
        loop {
            // This node's own view: a chunk committed since then is repaired by the next pass.
            let page = self
                .read_stale()
                .referenced_chunks(after.as_ref(), PASS_PAGE)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            for hash in page {
                if !self
                    .desired_holders(&hash, &members)
                    .contains(&self.config.id)
                    || self.files.store.has(&hash)
                {
                    continue;
                }
                attempts += 1;
                if attempts > REPAIRS_PER_PASS_MAX {
                    return Ok(repaired);
                }
                match self.fetch_chunk(hash).await {
                    Ok(_) if self.files.store.has(&hash) => repaired += 1,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("repair of chunk {}: {e}", hex(&hash)),
                }
            }
        }
        Ok(repaired)
    }

    /// One garbage-collection pass over the local chunks; returns how many it deleted.
    pub async fn gc_pass(&self) -> Result<u64, NodeError> {
        let grace = self.config.file_gc_grace;
        let mut collected = 0;
        let mut after: Option<Hash> = None;
        let mut seen_unreferenced = Vec::new();
        loop {
            // A read index first: every manifest committed before now is in the local state.
            let state = self.read(Consistency::Linearizable).await?;
            let store = self.files.store.clone();
            let from = after;
            let page = blocking(move || store.list(from.as_ref(), PASS_PAGE)).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.hash);
            for info in page {
                if state.chunk_referenced(&info.hash)? {
                    continue;
                }
                seen_unreferenced.push(info.hash);
                let since = *self
                    .files
                    .unreferenced_since
                    .lock()
                    .expect("gc lock")
                    .entry(info.hash)
                    .or_insert_with(Instant::now);
                let old_file = info.modified.elapsed().unwrap_or_default() >= grace;
                if since.elapsed() >= grace && old_file {
                    let store = self.files.store.clone();
                    let hash = info.hash;
                    if blocking(move || store.remove_if_older(&hash, grace)).await? {
                        collected += 1;
                    }
                }
            }
        }
        // Forget chunks that became referenced again or are gone.
        let mut tracked = self.files.unreferenced_since.lock().expect("gc lock");
        let keep: std::collections::HashSet<Hash> = seen_unreferenced.into_iter().collect();
        tracked.retain(|hash, _| keep.contains(hash) && self.files.store.has(hash));
        self.files
            .counters
            .chunks_collected
            .fetch_add(collected, Ordering::Relaxed);
        Ok(collected)
    }

    /// Re-hashes up to `bytes_budget` bytes of local chunks starting after `after`; returns
    /// where it stopped (`None` after the last chunk) and the bytes it read.
    async fn scrub_step(
        self: &Arc<Self>,
        after: Option<Hash>,
        bytes_budget: u64,
    ) -> Result<(Option<Hash>, u64), NodeError> {
        let store = self.files.store.clone();
        let page = blocking(move || store.list(after.as_ref(), 64)).await?;
        let mut read = 0;
        let mut cursor = after;
        for info in page {
            if read >= bytes_budget {
                return Ok((cursor, read));
            }
            cursor = Some(info.hash);
            read += info.bytes;
            // `local_chunk` verifies, deletes a corrupt copy and starts its repair.
            self.local_chunk(info.hash).await?;
        }
        if cursor == after {
            return Ok((None, read));
        }
        Ok((cursor, read))
    }
}

/// The node's background files loop: scrub continuously at its byte rate; repair and GC
/// every `file_repair_interval`. Holds only a weak reference, so it ends with the node.
async fn file_tasks(node: Weak<Node>) {
    let mut scrub_cursor: Option<Hash> = None;
    let mut last_pass = Instant::now();
    let tick = Duration::from_millis(250);
    loop {
        tokio::time::sleep(tick).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let rate = node.config.file_scrub_bytes_per_s;
        if rate > 0 {
            let budget = (rate / 4).max(1);
            match node.scrub_step(scrub_cursor, budget).await {
                Ok((cursor, bytes)) => {
                    scrub_cursor = cursor;
                    node.files
                        .counters
                        .bytes_scrubbed
                        .fetch_add(bytes, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!("scrub: {e}"),
            }
        }
        if last_pass.elapsed() < node.config.file_repair_interval {
            continue;
        }
        last_pass = Instant::now();
        if !node.health().ready {
            continue;
        }
        match node.repair_pass().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("repair: fetched {n} chunks this node should hold"),
            Err(e) => tracing::debug!("repair: {e}"),
        }
        match node.gc_pass().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("gc: deleted {n} unreferenced chunks"),
            Err(e) => tracing::debug!("gc: {e}"),
        }
    }
}
