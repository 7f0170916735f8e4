//! What this node's last messages to each peer found: the link's state, as the dashboard
//! shows it.
//!
//! Owns: one [`LinkStatus`] per peer address this node has sent to, updated by the
//! transport after every Raft RPC and pooled call (up when the peer answered, down with the
//! error when it did not). A link changes its `since` only when it flips, so the dashboard
//! can say how long a link has been down, and `last_ms` moves on every message, so it can
//! tell a link in use from one idle since its last message; `messages` counts every message
//! sent on it, so a reader taking two readings sees the traffic per second. Bounded: at most
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

    /// Records the outcome of one message to `addr`: `None` when it was answered, or why not.
    pub fn note(&self, addr: &str, failure: Option<&dyn std::fmt::Display>) {
        let now = crate::node::wall_clock_ms();
        let up = failure.is_none();
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if !links.contains_key(addr) && links.len() >= LINKS_MAX {
            let oldest = links
                .values()
                .min_by_key(|l| l.last_ms)
                .map(|l| l.addr.clone());
            if let Some(oldest) = oldest {
                links.remove(&oldest);
            }
        }
        let link = links.entry(addr.to_owned()).or_insert_with(|| LinkStatus {
            addr: addr.to_owned(),
            up,
            tls: self.tls,
            since_ms: now,
            error: None,
            last_ms: now,
            messages: 0,
        });
        link.messages = link.messages.saturating_add(1);
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
        links.note("a:1", None);
        let up = links.to(&["a:1".into()]);
        assert!(up[0].up && up[0].tls && up[0].error.is_none());
        links.note("a:1", Some(&"connection refused"));
        let down = links.to(&["a:1".into()]);
        assert!(!down[0].up);
        assert_eq!(down[0].error.as_deref(), Some("connection refused"));
        assert!(down[0].since_ms >= up[0].since_ms);
        links.note("a:1", None);
        assert!(links.to(&["a:1".into()])[0].error.is_none());
        assert!(links.to(&["b:2".into()]).is_empty());
        assert_eq!(
            links.to(&["a:1".into()])[0].messages,
            3,
            "every message counts"
        );
    }

    #[test]
    fn at_most_links_max_addresses_are_kept() {
        let links = Links::new(false);
        for i in 0..LINKS_MAX + 10 {
            links.note(&format!("h:{i}"), None);
        }
        let all: Vec<String> = (0..LINKS_MAX + 10).map(|i| format!("h:{i}")).collect();
        assert_eq!(links.to(&all).len(), LINKS_MAX);
    }
}
