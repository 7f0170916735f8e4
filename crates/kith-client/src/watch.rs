//! Watching a prefix: every change, in revision order, exactly once, across failover.

use serde_json::Value;

use crate::sse::Next;
use crate::{encode_query, Client, ClientError};

/// One change delivered by a watch.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub revision: u64,
    /// `put` or `delete` (an expiry is a `delete` with `"expired": true` in `data`).
    pub kind: String,
    pub key: String,
    /// The event as the server sent it.
    pub data: Value,
}

/// What the callback wants after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchControl {
    Continue,
    Stop,
}

impl Client {
    /// Streams changes under `prefix`, starting at `from_revision` (default: changes after
    /// now), calling `on_event` for each until it returns [`WatchControl::Stop`].
    /// Fails over between endpoints without losing or repeating an event.
    pub async fn watch(
        &self,
        prefix: &str,
        from_revision: Option<u64>,
        mut on_event: impl FnMut(WatchEvent) -> WatchControl,
    ) -> Result<(), ClientError> {
        // Pin the starting point to a revision, so that a reconnect before the first event
        // resumes from the same place on whichever node it reaches.
        let start_after = match from_revision {
            Some(r) => r.saturating_sub(1),
            None => {
                let listing = self
                    .list(prefix, 1, crate::Consistency::Linearizable)
                    .await?;
                listing["revision"]
                    .as_u64()
                    .ok_or_else(|| ClientError::Decode("list without revision".into()))?
            }
        };
        let path = format!("/v1/watch?prefix={}", encode_query(prefix));
        // The last event delivered: its revision and its place among that revision's
        // events. A revision's events carry the SSE id on the last one only, so a reconnect
        // in the middle of one gets all of it again; this skips what was delivered.
        let mut delivered: (u64, u64) = (start_after, u64::MAX);
        self.follow(&path, start_after, |frame| {
            if frame.event == "cut" {
                let reason = frame.data["reason"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned();
                let message = frame.data["message"].as_str().unwrap_or("").to_owned();
                // A slow watcher or a stopping node can resume elsewhere; history that was
                // compacted away cannot be recovered by reconnecting.
                return if reason == "slow" || reason == "shutdown" {
                    Next::Reconnect(format!("cut: {reason}: {message}"))
                } else {
                    Next::Fail(ClientError::WatchCut { reason, message })
                };
            }
            let Some(revision) = frame.data["revision"].as_u64().or(frame.id) else {
                return Next::Continue;
            };
            let index = frame.data["index"].as_u64().unwrap_or(0);
            let seen = revision < delivered.0
                || (revision == delivered.0 && (delivered.1 == u64::MAX || index <= delivered.1));
            if seen {
                return Next::Continue;
            }
            delivered = (revision, index);
            let event = WatchEvent {
                revision,
                kind: frame.event,
                key: frame.data["key"].as_str().unwrap_or("").to_owned(),
                data: frame.data,
            };
            match on_event(event) {
                WatchControl::Continue => Next::Continue,
                WatchControl::Stop => Next::Stop,
            }
        })
        .await
    }
}
