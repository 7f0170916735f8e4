//! `GET /v1/watch?prefix=P&from_revision=N`: a Server-Sent Events stream of every change to
//! keys under a prefix, in revision order, served from this node's own history.
//!
//! Each event's SSE id is its revision, so a client that reconnects — to this node or any
//! other — with `Last-Event-ID: R` resumes at R + 1 with no gap and no duplicate. Events are
//! read from storage page by page as the client consumes them, so a watcher costs one page
//! of memory however far behind it is. A watcher whose next event has been compacted away,
//! or that falls more than `watch_lag_max` revisions behind, gets a final `cut` event that
//! says why, and the stream ends; nothing is ever skipped silently.
//!
//! Events are `put` or `delete`; a key whose TTL ran out arrives as a `delete` with
//! `"expired": true`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::Response;
use base64::Engine as _;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::error::ApiError;
use crate::params::{next_after, Q};
use crate::sse::{self, last_event_id};
use kith_core::{EventKind, KvEvent};
use kith_node::Node;

/// Events scanned from storage per page.
const PAGE_SCAN_MAX: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    #[serde(default)]
    prefix: String,
    from_revision: Option<u64>,
}

pub async fn watch(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Q(query): Q<WatchQuery>,
) -> Result<Response, ApiError> {
    if query.prefix.len() > kith_core::limits::KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "prefix is longer than the longest key",
        ));
    }
    let resume_after = last_event_id(&headers, "revision number")?;
    // A watch serves this node's own history as it applies: no barrier, here or below.
    let state = node.read_stale();
    let current = state.kv_meta()?.revision;
    let from = match (resume_after, query.from_revision) {
        (Some(last), _) => next_after(last, "Last-Event-ID")?,
        (None, Some(0)) => return Err(ApiError::bad_request("from_revision starts at 1")),
        (None, Some(n)) => n,
        (None, None) => current.saturating_add(1),
    };
    let compacted = state.events_compacted()?;
    if from <= compacted {
        return Err(compacted_error(from, compacted));
    }
    let permit = node.watchers.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watchers",
            format!(
                "this node already serves {} watch streams; try another node",
                node.config.watchers_max
            ),
        )
    })?;
    let stop = node.stop_signal();
    let stream = WatchStream {
        revisions: node.applied_changes(),
        node,
        prefix: query.prefix,
        next: from,
        pending: VecDeque::new(),
        sent: (0, 0),
        done: false,
        _permit: permit,
    };
    Ok(sse::response(events(stream), stop))
}

fn compacted_error(from: u64, compacted: u64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "compacted",
        format!(
            "revision {from} has been compacted away on this node; the oldest revision still \
             available is {}",
            compacted + 1
        ),
    )
    .with("oldest_revision", compacted + 1)
}

/// One watcher's position. Holds a permit from the node's watcher bound while it lives.
struct WatchStream {
    node: Arc<Node>,
    /// Wakes the stream when the store's revision changes.
    revisions: watch::Receiver<u64>,
    prefix: String,
    /// The next revision to deliver or skip.
    next: u64,
    /// Events read from storage and not yet sent; at most one page, of whole revisions.
    pending: VecDeque<KvEvent>,
    /// The revision of the last event sent, and its place among that revision's events.
    sent: (u64, u64),
    done: bool,
    _permit: OwnedSemaphorePermit,
}

fn events(stream: WatchStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(stream, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok(event), s))
    })
}

impl WatchStream {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                let index = if self.sent.0 == event.revision {
                    self.sent.1 + 1
                } else {
                    0
                };
                self.sent = (event.revision, index);
                let last = self
                    .pending
                    .front()
                    .is_none_or(|next| next.revision != event.revision);
                return Some(to_sse(&event, index, last));
            }
            let state = self.node.read_stale();
            let compacted = match state.events_compacted() {
                Ok(c) => c,
                Err(e) => return Some(self.cut("error", &e.to_string(), None)),
            };
            if self.next <= compacted {
                let message = format!(
                    "revision {} was compacted away before it could be delivered",
                    self.next
                );
                return Some(self.cut("compacted", &message, Some(compacted + 1)));
            }
            let current = *self.revisions.borrow_and_update();
            if current >= self.next {
                let lag = current - self.next;
                if lag > self.node.config.watch_lag_max {
                    let message = format!(
                        "the watcher is {lag} revisions behind (limit {}); reconnect with \
                         Last-Event-ID to resume",
                        self.node.config.watch_lag_max
                    );
                    return Some(self.cut("slow", &message, None));
                }
                match state.events(self.next, &self.prefix, PAGE_SCAN_MAX) {
                    Ok(page) if page.next_revision == self.next => {
                        // The store is at `current` but holds nothing from `next` on: a
                        // hole in the history. Say so rather than skip it.
                        let message = format!("no history at revision {}", self.next);
                        return Some(self.cut("gap", &message, None));
                    }
                    Ok(page) => {
                        self.next = page.next_revision;
                        self.pending.extend(page.events);
                    }
                    Err(e) => return Some(self.cut("error", &e.to_string(), None)),
                }
                continue;
            }
            if self.revisions.changed().await.is_err() {
                return Some(self.cut("shutdown", "the node is shutting down", None));
            }
        }
    }

    /// The final event of a stream that cannot go on.
    fn cut(&mut self, reason: &str, message: &str, oldest_revision: Option<u64>) -> Event {
        self.done = true;
        let data = json!({
            "reason": reason,
            "message": message,
            "next_revision": self.next,
            "oldest_revision": oldest_revision,
        });
        Event::default().event("cut").data(data.to_string())
    }
}

/// One event as SSE. One revision may hold several events (a transaction's changes through
/// etcd's API): each carries its `index` among them, and only the revision's last event
/// carries the SSE id, so a client that reconnects mid-revision (`Last-Event-ID` = the last
/// whole revision) gets the whole revision again and skips what it already has by index.
fn to_sse(event: &KvEvent, index: u64, last_of_revision: bool) -> Event {
    let mut data = json!({"revision": event.revision, "index": index, "key": event.key});
    let kind = match &event.kind {
        EventKind::Put {
            value,
            create_revision,
            version,
        } => {
            data["create_revision"] = json!(create_revision);
            data["version"] = json!(version);
            match std::str::from_utf8(value) {
                Ok(text) => data["value"] = json!(text),
                Err(_) => {
                    data["value_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(value))
                }
            }
            "put"
        }
        EventKind::Delete => "delete",
        // To a watcher an expiry is a delete; `expired` says why it happened.
        EventKind::Expire => {
            data["expired"] = json!(true);
            "delete"
        }
    };
    data["type"] = json!(kind);
    let sse = Event::default().event(kind).data(data.to_string());
    if last_of_revision {
        sse.id(event.revision.to_string())
    } else {
        sse
    }
}
