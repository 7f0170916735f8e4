//! `GET /metrics`: the node's state and counters in the Prometheus text format.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use kith_node::{Health, Node};

pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let h = node.health();
    let mut out = String::new();
    gauges(&mut out, &node, &h);
    counters(&mut out, &node, &h);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// One metric in the text format: its help, its type and its value.
fn metric(out: &mut String, kind: &str, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP kith_{name} {help}");
    let _ = writeln!(out, "# TYPE kith_{name} {kind}");
    let _ = writeln!(out, "kith_{name} {value}");
}

/// What the node holds now: Raft positions, store sizes, open waits, quota.
fn gauges(out: &mut String, node: &Node, h: &Health) {
    let mut gauge = |name: &str, help: &str, value: u64| metric(out, "gauge", name, help, value);
    gauge(
        "is_leader",
        "1 if this node is the leader.",
        u64::from(h.role == "leader"),
    );
    gauge("term", "Current Raft term.", h.term);
    gauge(
        "commit_index",
        "Highest log index known committed.",
        h.commit_index,
    );
    gauge(
        "applied_index",
        "Highest log index applied.",
        h.applied_index,
    );
    gauge(
        "last_log_index",
        "Highest log index stored.",
        h.last_log_index,
    );
    gauge("kv_revision", "Key-value store revision.", h.revision);
    gauge(
        "ledger_index",
        "Log index of the ledger head.",
        h.ledger_index,
    );
    gauge(
        "disk_bytes",
        "Bytes in the node's data files.",
        h.disk_bytes,
    );
    gauge(
        "ready",
        "1 if the node knows a leader and is a member.",
        u64::from(h.ready),
    );
    gauge("file_chunks", "File chunks held.", h.file_chunks);
    let claim_waits = kith_node::node::CLAIM_WAITS_MAX - node.claim_waits.available_permits();
    gauge(
        "claim_waits",
        "Claim long-polls open on this node (bounded by CLAIM_WAITS_MAX).",
        claim_waits as u64,
    );
    let streams = node.config.watchers_max - node.watchers.available_permits();
    gauge(
        "streams",
        "Watch and room streams open on this node (bounded by --watchers-max).",
        streams as u64,
    );
    gauge(
        "file_chunk_bytes",
        "Bytes of file chunks held.",
        h.file_chunk_bytes,
    );
    gauge(
        "quota_used_bytes",
        "Bytes this node stores, as the storage quota measures them.",
        h.quota.used_bytes,
    );
    gauge(
        "quota_bytes",
        "The storage quota (--quota-bytes).",
        h.quota.quota_bytes,
    );
    gauge(
        "quota_exceeded",
        "1 while the node is past its storage quota and refuses growing writes (507).",
        u64::from(h.quota.exceeded),
    );
}

/// What the node has done since it started: requests served, files work.
fn counters(out: &mut String, node: &Node, h: &Health) {
    let mut counter =
        |name: &str, help: &str, value: u64| metric(out, "counter", name, help, value);
    counter(
        "requests_total",
        "Public API requests served.",
        h.requests_total,
    );
    counter(
        "writes_total",
        "Public API requests that change state.",
        h.writes_total,
    );
    let files = &node.files.counters;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    counter(
        "file_chunks_repaired_total",
        "Chunk copies this node fetched because it should hold them (repair).",
        load(&files.chunks_repaired),
    );
    counter(
        "file_chunks_collected_total",
        "Unreferenced chunks this node deleted after the grace period.",
        load(&files.chunks_collected),
    );
    counter(
        "file_corrupt_chunks_total",
        "Corrupt chunk copies this node found and deleted.",
        load(&files.corrupt_found),
    );
    counter(
        "file_scrubbed_bytes_total",
        "Bytes of stored chunks the scrubber re-hashed.",
        load(&files.bytes_scrubbed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_help_type_and_value() {
        let mut out = String::new();
        metric(&mut out, "gauge", "term", "Current Raft term.", 7);
        assert_eq!(
            out,
            "# HELP kith_term Current Raft term.\n# TYPE kith_term gauge\nkith_term 7\n"
        );
    }
}
