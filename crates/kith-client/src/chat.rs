//! Chat rooms: post (idempotent), history, and a live stream that survives failover.

use serde_json::{json, Value};

use crate::sse::Next;
use crate::{Client, ClientError, Consistency, Retry, JSON};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub room: String,
    pub seq: u64,
    pub id: String,
    pub author: String,
    pub text: String,
    pub at_ms: u64,
}

/// What a room stream delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomEvent {
    Message(ChatMessage),
    /// Messages `from_seq..=to_seq` were dropped by retention before this reader got them.
    Gap {
        from_seq: u64,
        to_seq: u64,
    },
}

fn message(v: &Value) -> Option<ChatMessage> {
    Some(ChatMessage {
        room: v["room"].as_str()?.to_owned(),
        seq: v["seq"].as_u64()?,
        id: v["id"].as_str()?.to_owned(),
        author: v["author"].as_str()?.to_owned(),
        text: v["text"].as_str()?.to_owned(),
        at_ms: v["at_ms"].as_u64()?,
    })
}

impl Client {
    /// Posts a message; returns its seq. With an `id`, a retry after a lost answer stores the
    /// message once (so the client retries it safely); without one, it is sent only once.
    pub async fn post_message(
        &self,
        room: &str,
        author: &str,
        text: &str,
        id: Option<&str>,
    ) -> Result<u64, ClientError> {
        let mut body = json!({"author": author, "text": text});
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let retry = if id.is_some() {
            Retry::Idempotent
        } else {
            Retry::OnlyIfNotApplied
        };
        let path = format!("/v1/rooms/{room}/messages");
        let v = Self::json(
            self.send(reqwest::Method::POST, &path, Some((bytes, JSON)), retry)
                .await?,
        )
        .await?;
        v["seq"]
            .as_u64()
            .ok_or_else(|| ClientError::Decode(v.to_string()))
    }

    /// Messages of `room` with seq > `after`, oldest first (the JSON document of the API;
    /// a room with no messages yet is an empty page).
    pub async fn history(
        &self,
        room: &str,
        after: u64,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/v1/rooms/{room}/messages?after={after}&limit={limit}&consistency={}",
            consistency.as_query()
        );
        let response = self
            .send(reqwest::Method::GET, &path, None, Retry::Idempotent)
            .await?;
        Self::json(response).await
    }

    /// Streams `room`'s messages with seq > `after`, calling `on_event` until it returns
    /// `false`. Fails over between endpoints without losing or repeating a message.
    pub async fn follow_room(
        &self,
        room: &str,
        after: u64,
        mut on_event: impl FnMut(RoomEvent) -> bool,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/rooms/{room}/stream");
        self.follow(&path, after, |frame| {
            let event = match frame.event.as_str() {
                "message" => match message(&frame.data) {
                    Some(m) => RoomEvent::Message(m),
                    None => {
                        return Next::Fail(ClientError::Decode(format!(
                            "bad message event: {}",
                            frame.data
                        )))
                    }
                },
                "gap" => RoomEvent::Gap {
                    from_seq: frame.data["from_seq"].as_u64().unwrap_or(0),
                    to_seq: frame.data["to_seq"].as_u64().unwrap_or(0),
                },
                "cut" => return Next::Reconnect(format!("cut: {}", frame.data)),
                _ => return Next::Continue,
            };
            if on_event(event) {
                Next::Continue
            } else {
                Next::Stop
            }
        })
        .await
    }
}
