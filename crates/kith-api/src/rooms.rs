//! Chat rooms over HTTP: post, list rooms, page through history, and a live stream.
//!
//! `GET /v1/rooms/{room}/stream` is Server-Sent Events with the message's `seq` as the SSE
//! id. Every replica gives a message the same `seq`, so a client that loses its node and
//! reconnects to another with `Last-Event-ID: N` receives N + 1 next: every message exactly
//! once, in order. Messages dropped by retention before a reader got to them are announced
//! with a `gap` event naming the missing range, never skipped silently.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::error::ApiError;
use crate::params::{next_after, parse_consistency, Q};
use crate::sse::{self, last_event_id};
use kith_core::limits::{validate_message, validate_message_id, validate_room};
use kith_core::rooms::{Message, Post};
use kith_core::{Command, Response as Applied};
use kith_node::Node;

/// Messages a history page returns when it names no limit, and at most.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// Rooms listed per request, at most.
const ROOMS_PAGE_MAX: usize = 1000;
/// Messages read from storage per stream page.
const STREAM_PAGE: usize = 256;

type Shared = State<Arc<Node>>;

fn room_from_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(room) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_room(&room)?;
    Ok(room)
}

/// Ids for messages whose sender gave none: unique per node (id, start time, counter).
fn generated_id(node: &Node) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static STARTED_NS: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let started = STARTED_NS.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("n{}-{:x}-{n:x}", node.config.id, started)
}

fn message_json(room: &str, m: &Message) -> Value {
    json!({
        "room": room,
        "seq": m.seq,
        "id": m.id,
        "author": m.author,
        "text": m.text,
        "at_ms": m.at_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    author: String,
    text: String,
    id: Option<String>,
}

pub async fn post_message(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<PostBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let room = room_from_path(path)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_message(&body.author, &body.text)?;
    let id = match body.id {
        Some(id) => {
            validate_message_id(&id)?;
            id
        }
        None => generated_id(&node),
    };
    let post = Post {
        room: room.clone(),
        author: body.author,
        text: body.text,
        id,
        // The leader sets both bounds from its own configuration.
        keep: 0,
        rooms_max: 0,
    };
    let command = Command::Post(post);
    command.validate(&node.limits())?;
    match node.write(command).await? {
        Applied::Posted { seq, id, duplicate } => {
            let status = if duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let answer = json!({"room": room, "seq": seq, "id": id, "duplicate": duplicate});
            Ok((status, Json(answer)).into_response())
        }
        Applied::Rejected { reason } => Err(ApiError::rejected(reason)),
        Applied::RoomsFull { max } => Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "rooms_full",
            format!("the cluster already holds {max} rooms; post to an existing one"),
        )),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected result {other:?}"),
        )),
    }
}

/// `DELETE /v1/rooms/{room}`: deletes the room with the messages it keeps and frees its
/// slot under `rooms_max`. A room's messages are its content, so "empty" is not asked for:
/// deleting is how a user drops them. 404 if there is no such room.
pub async fn delete_room(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let room = room_from_path(path)?;
    let command = Command::DeleteRoom { room: room.clone() };
    match node.write(command).await? {
        Applied::RoomDeleted {
            deleted: true,
            messages,
        } => Ok(Json(json!({"room": room, "deleted": true, "messages": messages})).into_response()),
        Applied::RoomDeleted { deleted: false, .. } => {
            Err(ApiError::not_found(format!("no room '{room}'")))
        }
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected result {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsQuery {
    #[serde(default)]
    after: String,
    limit: Option<usize>,
    consistency: Option<String>,
}

pub async fn list_rooms(State(node): Shared, Q(q): Q<RoomsQuery>) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(ROOMS_PAGE_MAX);
    if limit == 0 || limit > ROOMS_PAGE_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {ROOMS_PAGE_MAX}"
        )));
    }
    let state = node
        .read(parse_consistency(q.consistency.as_deref())?)
        .await?;
    let rooms = state.rooms(&q.after, limit)?;
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|(name, m)| {
            json!({
                "name": name,
                "messages": m.kept(),
                "first_seq": m.first_seq,
                "last_seq": m.last_seq,
                "last_activity_ms": m.last_activity_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "rooms": rooms })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    consistency: Option<String>,
}

/// `GET /v1/rooms/{room}/messages?after=SEQ&limit=N`: messages with seq > `after`, oldest
/// first (an empty page for a room with no messages yet). `first_seq` is the oldest message the room still keeps: if `after + 1` is below
/// it, the messages in between were dropped by retention (`dropped` says how many).
pub async fn history(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    Q(q): Q<HistoryQuery>,
) -> Result<Response, ApiError> {
    let room = room_from_path(path)?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {PAGE_MAX}"
        )));
    }
    let first_wanted = next_after(q.after, "after")?;
    let state = node
        .read(parse_consistency(q.consistency.as_deref())?)
        .await?;
    // A room nobody has written to yet is simply empty.
    let meta = state.room(&room)?.unwrap_or(kith_core::rooms::RoomMeta {
        last_seq: 0,
        first_seq: 1,
        last_activity_ms: 0,
    });
    let messages = state.messages(&room, q.after, limit)?;
    let dropped = meta.first_seq.saturating_sub(first_wanted);
    let more = messages.last().is_some_and(|m| m.seq < meta.last_seq);
    let messages: Vec<Value> = messages.iter().map(|m| message_json(&room, m)).collect();
    Ok(Json(json!({
        "room": room,
        "first_seq": meta.first_seq,
        "last_seq": meta.last_seq,
        "dropped": dropped,
        "more": more,
        "messages": messages,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    after: Option<u64>,
}

pub async fn stream(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    Q(q): Q<StreamQuery>,
) -> Result<Response, ApiError> {
    let room = room_from_path(path)?;
    let resume_after = last_event_id(&headers, "message seq")?;
    // A stream follows this node's own state as it applies: no barrier, here or below.
    let last_seq = node.read_stale().room(&room)?.map_or(0, |m| m.last_seq);
    let after = resume_after.or(q.after).unwrap_or(last_seq);
    // The stream counts on `after + 1`.
    next_after(after, "after")?;
    let permit = node.watchers.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watchers",
            "this node serves its maximum of live streams; try another node",
        )
    })?;
    let stop = node.stop_signal();
    let stream = RoomStream {
        wake: node.applied_changes(),
        node,
        room,
        after,
        pending: VecDeque::new(),
        done: false,
        _permit: permit,
    };
    Ok(sse::response(messages_stream(stream), stop))
}

/// One reader's position in a room.
struct RoomStream {
    node: Arc<Node>,
    /// Fires after every apply on this node.
    wake: watch::Receiver<u64>,
    room: String,
    /// The last seq delivered (or announced as dropped).
    after: u64,
    pending: VecDeque<Event>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

fn messages_stream(stream: RoomStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(stream, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok(event), s))
    })
}

impl RoomStream {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            self.wake.borrow_and_update();
            let state = self.node.read_stale();
            let meta = match state.room(&self.room) {
                Ok(m) => m,
                Err(e) => return Some(self.end(&e.to_string())),
            };
            if let Some(meta) = meta {
                // `after` starts below u64::MAX (checked on entry) and only grows to seqs
                // the room has issued, so `after + 1` saturates only in theory.
                let from_seq = self.after.saturating_add(1);
                if from_seq < meta.first_seq {
                    // Retention dropped messages this reader never received: say so.
                    let data = json!({"from_seq": from_seq, "to_seq": meta.first_seq - 1});
                    self.after = meta.first_seq - 1;
                    return Some(Event::default().event("gap").data(data.to_string()));
                }
                if meta.last_seq > self.after {
                    match state.messages(&self.room, self.after, STREAM_PAGE) {
                        Ok(page) => {
                            for m in &page {
                                self.after = m.seq;
                                self.pending.push_back(
                                    Event::default()
                                        .id(m.seq.to_string())
                                        .event("message")
                                        .data(message_json(&self.room, m).to_string()),
                                );
                            }
                        }
                        Err(e) => return Some(self.end(&e.to_string())),
                    }
                    continue;
                }
            }
            if self.wake.changed().await.is_err() {
                return Some(self.end("the node is shutting down"));
            }
        }
    }

    fn end(&mut self, message: &str) -> Event {
        self.done = true;
        let data = json!({"reason": "error", "message": message, "after": self.after});
        Event::default().event("cut").data(data.to_string())
    }
}
