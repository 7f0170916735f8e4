//! What this node's last messages to each peer found: the link's state, as the dashboard
//! shows it.
//!
//! Owns: one [`LinkStatus`] per peer address this node has sent to, updated by the
//! transport after every Raft RPC and pooled call (up when the peer answered, down with the
//! error when it did not). A link changes its `since` only when it flips, so the dashboard
//! can say how long a link has been down, and `last_ms` moves on every message, so it can
//! tell a link in use from one idle since its last message; `messages` counts every message
//! sent on it, and `kinds` the same messages by what they were ([`MessageKind`]), so a reader
//! taking two readings sees the traffic per second, and of what. Counting takes the lock the
//! link's state needs anyway and allocates only for an address seen for the first time.
//! Bounded: at most
//! [`LINKS_MAX`] addresses are kept; past it the one least recently heard of goes (a removed
//! member's).
//!
//! Refuses: probing peers on its own — it only records what real traffic found (a follower
//! that sends nothing to a peer has no link to it to show).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Peer addresses kept.
pub const LINKS_MAX: usize = 64;
/// Longest error text kept per link.
const ERROR_CHARS_MAX: usize = 200;

/// What a message to a peer was, for [`MessageCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// An append carrying log entries.
    Append,
    /// An append without entries: the leader saying it is alive (and how far it committed).
    Heartbeat,
    /// A request for a vote.
    Vote,
    /// One piece of a snapshot.
    Snapshot,
    /// Writes a follower passes to the leader.
    Forward,
    /// Any other request to the leader: a read's commit point, replication progress, a
    /// membership change.
    Query,
    /// A file chunk stored on, fetched from, or asked of the peer.
    Chunk,
}

/// Messages sent on one link, by kind; they add up to the link's `messages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageCounts {
    pub appends: u64,
    pub heartbeats: u64,
    pub votes: u64,
    pub snapshots: u64,
    pub forwards: u64,
    pub queries: u64,
    pub chunks: u64,
}

impl MessageCounts {
    fn add(&mut self, kind: MessageKind) {
        let counter = match kind {
            MessageKind::Append => &mut self.appends,
            MessageKind::Heartbeat => &mut self.heartbeats,
            MessageKind::Vote => &mut self.votes,
            MessageKind::Snapshot => &mut self.snapshots,
            MessageKind::Forward => &mut self.forwards,
            MessageKind::Query => &mut self.queries,
            MessageKind::Chunk => &mut self.chunks,
        };
        *counter = counter.saturating_add(1);
    }
}

/// One link, from this node to the peer at `addr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub addr: String,
    /// Whether the last message got an answer (any answer: a refusal is an answer, and its
    /// text is in `error`).
    pub up: bool,
    /// Whether the link speaks TLS.
    pub tls: bool,
    /// Wall-clock milliseconds when the link last went up or down.
    pub since_ms: u64,
    /// The last failure, while the link is down or a peer refused a message.
    pub error: Option<String>,
    /// Wall-clock milliseconds of the last message on the link: a link this node has not
    /// used for a while (a follower's, between elections) is idle, its state old news.
    pub last_ms: u64,
    /// Messages sent on the link since this node started (answered or not). Defaults to 0
    /// when a peer's report predates the counter.
    #[serde(default)]
    pub messages: u64,
    /// The same messages by kind (all 0 in a peer's report that predates them).
    #[serde(default)]
    pub kinds: MessageCounts,
}

/// Every link this node has used.
#[derive(Debug, Default)]
pub struct Links {
    tls: bool,
    links: Mutex<BTreeMap<String, LinkStatus>>,
}

impl Links {
    pub fn new(tls: bool) -> Self {
        Links {
            tls,
            links: Mutex::default(),
        }
    }

    /// Records the outcome of one message of `kind` to `addr`: `None` when it was answered,
    /// or why not.
    pub fn note(&self, addr: &str, kind: MessageKind, failure: Option<&dyn std::fmt::Display>) {
        let now = crate::node::wall_clock_ms();
        let up = failure.is_none();
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if !links.contains_key(addr) {
            if links.len() >= LINKS_MAX {
                let oldest = links
                    .values()
                    .min_by_key(|l| l.last_ms)
                    .map(|l| l.addr.clone());
                if let Some(oldest) = oldest {
                    links.remove(&oldest);
                }
            }
            links.insert(
                addr.to_owned(),
                LinkStatus {
                    addr: addr.to_owned(),
                    up,
                    tls: self.tls,
                    since_ms: now,
                    error: None,
                    last_ms: now,
                    messages: 0,
                    kinds: MessageCounts::default(),
                },
            );
        }
        let link = links.get_mut(addr).expect("inserted above if absent");
        link.messages = link.messages.saturating_add(1);
        link.kinds.add(kind);
        if link.up != up {
            link.up = up;
            link.since_ms = now;
        }
        link.last_ms = now;
        if let Some(failure) = failure {
            link.error = Some(failure.to_string().chars().take(ERROR_CHARS_MAX).collect());
        } else {
            link.error = None;
        }
    }

    /// The links to the addresses in `peers`, in that order.
    pub fn to(&self, peers: &[String]) -> Vec<LinkStatus> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().filter_map(|a| links.get(a).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_remembers_when_it_flipped_and_why_it_failed() {
        let links = Links::new(true);
        links.note("a:1", MessageKind::Heartbeat, None);
        let up = links.to(&["a:1".into()]);
        assert!(up[0].up && up[0].tls && up[0].error.is_none());
        links.note("a:1", MessageKind::Append, Some(&"connection refused"));
        let down = links.to(&["a:1".into()]);
        assert!(!down[0].up);
        assert_eq!(down[0].error.as_deref(), Some("connection refused"));
        assert!(down[0].since_ms >= up[0].since_ms);
        links.note("a:1", MessageKind::Heartbeat, None);
        assert!(links.to(&["a:1".into()])[0].error.is_none());
        assert!(links.to(&["b:2".into()]).is_empty());
        assert_eq!(
            links.to(&["a:1".into()])[0].messages,
            3,
            "every message counts"
        );
        let kinds = links.to(&["a:1".into()])[0].kinds;
        assert_eq!((kinds.heartbeats, kinds.appends, kinds.votes), (2, 1, 0));
    }

    #[test]
    fn each_kind_has_its_own_counter_and_they_add_up() {
        let links = Links::new(false);
        let all = [
            MessageKind::Append,
            MessageKind::Heartbeat,
            MessageKind::Vote,
            MessageKind::Snapshot,
            MessageKind::Forward,
            MessageKind::Query,
            MessageKind::Chunk,
        ];
        for (i, kind) in all.iter().enumerate() {
            for _ in 0..=i {
                links.note("a:1", *kind, None);
            }
        }
        let link = &links.to(&["a:1".into()])[0];
        let k = link.kinds;
        assert_eq!(
            [
                k.appends,
                k.heartbeats,
                k.votes,
                k.snapshots,
                k.forwards,
                k.queries,
                k.chunks
            ],
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(link.messages, 28);
    }

    #[test]
    fn at_most_links_max_addresses_are_kept() {
        let links = Links::new(false);
        for i in 0..LINKS_MAX + 10 {
            links.note(&format!("h:{i}"), MessageKind::Vote, None);
        }
        let all: Vec<String> = (0..LINKS_MAX + 10).map(|i| format!("h:{i}")).collect();
        assert_eq!(links.to(&all).len(), LINKS_MAX);
    }
}
