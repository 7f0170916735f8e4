//! Watching a prefix over Server-Sent Events, resuming on another endpoint after a failure.
//!
//! The stream is parsed here (the subset of SSE kith's server emits: `id`, `event`, `data`
//! lines, blank-line separated). When a connection breaks, the watch reconnects to the next
//! endpoint with `Last-Event-ID` set to the last revision delivered, so the caller sees
//! every event exactly once and in order. Reconnection is bounded: a run of failed
//! attempts longer than [`RECONNECTS_MAX`] ends the watch with an error.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::{encode_query, Client, ClientError};

/// Consecutive failed connection attempts before a watch gives up.
const RECONNECTS_MAX: u32 = 30;
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Largest single SSE event accepted (a 1 MiB value, base64-encoded, plus framing).
const EVENT_BYTES_MAX: usize = 2 * 1024 * 1024;

/// One change delivered by a watch.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub revision: u64,
    /// `put`, `delete` or `expire`.
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

/// Why one connection of a watch ended.
enum Ended {
    /// The callback asked to stop.
    Stopped,
    /// The connection broke or could not be made; worth reconnecting.
    Broken(String),
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
        let mut last_seen: Option<u64> = Some(start_after);
        let mut failures = 0u32;
        let mut backoff = Duration::from_millis(100);
        let mut endpoint = self.read_start();
        loop {
            let before = last_seen;
            match self
                .watch_once(endpoint, prefix, &mut last_seen, &mut on_event)
                .await?
            {
                Ended::Stopped => return Ok(()),
                Ended::Broken(why) => {
                    if last_seen != before {
                        failures = 0;
                        backoff = Duration::from_millis(100);
                    }
                    failures += 1;
                    if failures > RECONNECTS_MAX {
                        return Err(ClientError::Unavailable(format!(
                            "watch could not reconnect: {why}"
                        )));
                    }
                    endpoint = (endpoint + 1) % self.endpoints.len();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }

    async fn watch_once(
        &self,
        endpoint: usize,
        prefix: &str,
        last_seen: &mut Option<u64>,
        on_event: &mut impl FnMut(WatchEvent) -> WatchControl,
    ) -> Result<Ended, ClientError> {
        let url = format!(
            "{}/v1/watch?prefix={}",
            self.endpoints[endpoint],
            encode_query(prefix)
        );
        let mut request = self.stream_http.get(&url);
        if let Some(id) = *last_seen {
            // "After revision 0" means from the first revision.
            request = request.header("last-event-id", id.to_string());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Ended::Broken(format!("{url}: {e}"))),
        };
        let status = response.status();
        if status.as_u16() == 503 {
            return Ok(Ended::Broken(format!("{url}: 503")));
        }
        if !status.is_success() {
            return Err(crate::decode_error(status.as_u16(), response).await);
        }
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            // Handle every complete event already buffered.
            while let Some(end) = find_event_end(&buffer) {
                let raw: Vec<u8> = buffer.drain(..end).collect();
                let Some(frame) = parse_frame(&raw) else {
                    continue;
                };
                if frame.event == "cut" {
                    let data: Value = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
                    let reason = data["reason"].as_str().unwrap_or("unknown").to_owned();
                    let message = data["message"].as_str().unwrap_or("").to_owned();
                    // A slow watcher or a stopping node can resume elsewhere; lost history
                    // cannot be recovered by reconnecting.
                    if reason == "slow" || reason == "shutdown" {
                        return Ok(Ended::Broken(format!("cut: {reason}: {message}")));
                    }
                    return Err(ClientError::WatchCut { reason, message });
                }
                let Some(revision) = frame.id else { continue };
                if last_seen.is_some_and(|seen| revision <= seen) {
                    continue;
                }
                let data: Value = serde_json::from_str(&frame.data)
                    .map_err(|e| ClientError::Decode(format!("watch event: {e}")))?;
                *last_seen = Some(revision);
                let event = WatchEvent {
                    revision,
                    kind: frame.event,
                    key: data["key"].as_str().unwrap_or("").to_owned(),
                    data,
                };
                if on_event(event) == WatchControl::Stop {
                    return Ok(Ended::Stopped);
                }
            }
            if buffer.len() > EVENT_BYTES_MAX {
                return Err(ClientError::Decode("watch event too large".into()));
            }
            match body.next().await {
                Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                Some(Err(e)) => return Ok(Ended::Broken(format!("{url}: {e}"))),
                None => return Ok(Ended::Broken(format!("{url}: stream ended"))),
            }
        }
    }
}

struct Frame {
    id: Option<u64>,
    event: String,
    data: String,
}

/// Index just past the blank line that ends the first event in `buffer`.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

fn parse_frame(raw: &[u8]) -> Option<Frame> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut frame = Frame {
        id: None,
        event: "message".into(),
        data: String::new(),
    };
    let mut any = false;
    for line in text.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue; // keep-alive comment
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => frame.id = value.parse().ok(),
            "event" => frame.event = value.to_owned(),
            "data" => {
                if !frame.data.is_empty() {
                    frame.data.push('\n');
                }
                frame.data.push_str(value);
            }
            _ => {}
        }
    }
    any.then_some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_comments_are_skipped() {
        let buf = b": keep-alive\n\nid: 7\nevent: put\ndata: {\"key\":\"a\"}\n\nrest";
        let end = find_event_end(buf).unwrap();
        assert!(parse_frame(&buf[..end]).is_none());
        let rest = &buf[end..];
        let end2 = find_event_end(rest).unwrap();
        let f = parse_frame(&rest[..end2]).unwrap();
        assert_eq!(
            (f.id, f.event.as_str(), f.data.as_str()),
            (Some(7), "put", "{\"key\":\"a\"}")
        );
        assert!(find_event_end(&rest[end2..]).is_none());
    }
}
