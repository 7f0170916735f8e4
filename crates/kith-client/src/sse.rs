//! Following a Server-Sent Events stream across endpoints.
//!
//! Both of kith's live streams (`/v1/watch` and `/v1/rooms/{room}/stream`) number their
//! events with an id that every replica agrees on (a revision, a message seq). [`follow`]
//! keeps the last id it delivered; when a connection breaks it reconnects to the next
//! endpoint with `Last-Event-ID` set to it, and drops any event at or below it, so the
//! caller sees every event exactly once and in order. Reconnection is bounded: more than
//! [`RECONNECTS_MAX`] failed attempts in a row end the stream with an error.
//!
//! Only the subset of SSE kith's server emits is parsed: `id`, `event` and `data` lines,
//! blank-line separated, `:` comments as keep-alives.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::{Client, ClientError};

/// Consecutive failed connection attempts before a stream gives up.
const RECONNECTS_MAX: u32 = 30;
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Largest single SSE event accepted (a 1 MiB value, base64-encoded, plus framing).
const EVENT_BYTES_MAX: usize = 2 * 1024 * 1024;

/// One parsed event.
#[derive(Debug)]
pub(crate) struct Frame {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// What the caller wants after a frame.
pub(crate) enum Next {
    Continue,
    Stop,
    /// The server ended this connection in a way another endpoint can recover from.
    Reconnect(String),
    Fail(ClientError),
}

enum Ended {
    Stopped,
    Broken(String),
}

impl Client {
    /// Follows `path` (which must accept `Last-Event-ID`), delivering frames after `last_id`.
    pub(crate) async fn follow(
        &self,
        path: &str,
        mut last_id: u64,
        mut on_frame: impl FnMut(Frame) -> Next,
    ) -> Result<(), ClientError> {
        let mut failures = 0u32;
        let mut backoff = Duration::from_millis(100);
        let mut endpoint = self.read_start();
        loop {
            let before = last_id;
            match self
                .follow_once(endpoint, path, &mut last_id, &mut on_frame)
                .await?
            {
                Ended::Stopped => return Ok(()),
                Ended::Broken(why) => {
                    if last_id != before {
                        failures = 0;
                        backoff = Duration::from_millis(100);
                    }
                    failures += 1;
                    if failures > RECONNECTS_MAX {
                        return Err(ClientError::Unavailable(format!(
                            "stream could not reconnect: {why}"
                        )));
                    }
                    endpoint = (endpoint + 1) % self.endpoints.len();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }

    async fn follow_once(
        &self,
        endpoint: usize,
        path: &str,
        last_id: &mut u64,
        on_frame: &mut impl FnMut(Frame) -> Next,
    ) -> Result<Ended, ClientError> {
        let url = format!("{}{}", self.endpoints[endpoint], path);
        let request = self
            .stream_http
            .get(&url)
            .header("last-event-id", last_id.to_string());
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
            while let Some(end) = find_event_end(&buffer) {
                let raw: Vec<u8> = buffer.drain(..end).collect();
                let Some(frame) = parse_frame(&raw)? else {
                    continue;
                };
                if let Some(id) = frame.id {
                    if id <= *last_id {
                        continue; // already delivered before a reconnect
                    }
                    *last_id = id;
                }
                match on_frame(frame) {
                    Next::Continue => {}
                    Next::Stop => return Ok(Ended::Stopped),
                    Next::Reconnect(why) => return Ok(Ended::Broken(why)),
                    Next::Fail(e) => return Err(e),
                }
            }
            if buffer.len() > EVENT_BYTES_MAX {
                return Err(ClientError::Decode("stream event too large".into()));
            }
            match body.next().await {
                Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                Some(Err(e)) => return Ok(Ended::Broken(format!("{url}: {e}"))),
                None => return Ok(Ended::Broken(format!("{url}: stream ended"))),
            }
        }
    }
}

/// Index just past the blank line that ends the first event in `buffer`.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// Parses one event; `None` for a comment-only block (keep-alive).
fn parse_frame(raw: &[u8]) -> Result<Option<Frame>, ClientError> {
    let text = std::str::from_utf8(raw).map_err(|e| ClientError::Decode(e.to_string()))?;
    let mut id = None;
    let mut event = "message".to_owned();
    let mut data = String::new();
    let mut any = false;
    for line in text.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => id = value.parse().ok(),
            "event" => event = value.to_owned(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    let data = if data.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&data).map_err(|e| ClientError::Decode(format!("event data: {e}")))?
    };
    Ok(Some(Frame { id, event, data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_comments_are_skipped() {
        let buf = b": keep-alive\n\nid: 7\nevent: put\ndata: {\"key\":\"a\"}\n\nrest";
        let end = find_event_end(buf).unwrap();
        assert!(parse_frame(&buf[..end]).unwrap().is_none());
        let rest = &buf[end..];
        let end2 = find_event_end(rest).unwrap();
        let f = parse_frame(&rest[..end2]).unwrap().unwrap();
        assert_eq!((f.id, f.event.as_str()), (Some(7), "put"));
        assert_eq!(f.data["key"], "a");
        assert!(find_event_end(&rest[end2..]).is_none());
    }
}
