//! Helpers shared by the Server-Sent Events routes (`/v1/watch`, `/v1/rooms/{room}/stream`).
//!
//! Owns: reading a reconnecting client's `Last-Event-ID`, and turning a stream of events into
//! the answer. Refuses: what the streams carry, which lives with their routes (`watch.rs`,
//! `rooms.rs`).

use std::convert::Infallible;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::future::Future;

use futures::{Stream, StreamExt};

use crate::error::ApiError;
use crate::params::next_after;

/// The `Last-Event-ID` header as the integer `what` (a revision or seq), if sent.
pub(crate) fn last_event_id(headers: &HeaderMap, what: &str) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request(format!("Last-Event-ID must be a {what}")))?;
    next_after(n, "Last-Event-ID")?;
    Ok(Some(n))
}

/// The answer that streams `events`, with keep-alive comments while none is due, so an idle
/// stream is not taken for a dead connection. The stream ends (cleanly: the client resumes
/// elsewhere from its `Last-Event-ID`) when `stop` resolves, the node's planned stop.
pub(crate) fn response(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Response {
    Sse::new(events.take_until(stop))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn last_event_id_is_an_integer_below_the_largest() {
        assert_eq!(last_event_id(&HeaderMap::new(), "revision").unwrap(), None);
        assert_eq!(
            last_event_id(&headers(" 42 "), "revision").unwrap(),
            Some(42)
        );
        let e = last_event_id(&headers("x"), "message seq").unwrap_err();
        assert_eq!(e.message, "Last-Event-ID must be a message seq");
        let e = last_event_id(&headers("18446744073709551615"), "revision").unwrap_err();
        assert!(
            e.message.starts_with("Last-Event-ID must be below"),
            "{}",
            e.message
        );
    }
}
