//! etcd's Watch service: one bidirectional stream carries many watches, each over a key or
//! a range, from a start revision, with etcd's created, canceled and compacted notices,
//! filters, `prev_kv` and progress reports.
//!
//! A stream is one task: it reads the client's requests and, whenever this node applies a
//! change, reads each watch's next events from the kept history (the same events
//! `/v1/watch` serves, so both see one sequence). The events of one revision (one
//! transaction's changes) always travel in one response. A watch whose start is no longer
//! kept is canceled with `compact_revision` set, as etcd does.
//!
//! Bounds: a stream holds one of the node's stream permits (`--watchers-max`, shared with
//! `/v1/watch` and room streams) and at most [`WATCHES_PER_STREAM_MAX`] watches; a response
//! carries at most [`EVENTS_PER_RESPONSE_MAX`] events; the outgoing queue is short, so a
//! client that reads nothing holds back only its own stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::common::{key_range, key_value, read_need, revision, Etcd};
use crate::history;
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};
use kith_core::txn::KeyRange;
use kith_core::{EventKind, KvEvent};
use kith_storage::StateReader;

pub const WATCHES_PER_STREAM_MAX: usize = 1024;
pub const EVENTS_PER_RESPONSE_MAX: usize = 1000;
/// Revisions scanned per read of the history.
const SCAN_PAGE: usize = 4096;
/// How often a watch created with `progress_notify` hears the revision while idle (etcd's
/// default is 10 minutes).
const PROGRESS_EVERY: Duration = Duration::from_secs(600);
/// Responses queued for a client before the stream waits for it to read.
const QUEUE: usize = 16;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

struct Watcher {
    range: KeyRange,
    /// The next revision this watch has not yet been sent.
    next: u64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
}

#[tonic::async_trait]
impl Watch for Etcd {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let auth = request.metadata().clone();
        let stream = self.open_watch(auth, request.into_inner())?;
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Etcd {
    /// Serves the watch requests `inbound` carries (checked against the token in `auth`),
    /// answering on the returned stream, until either side ends.
    pub fn open_watch(
        &self,
        auth: tonic::metadata::MetadataMap,
        inbound: impl Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    ) -> Result<ReceiverStream<Result<WatchResponse, Status>>, Status> {
        let permit = self
            .node
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(
                    "etcdserver: this node serves its maximum of streams; try another node",
                )
            })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let etcd = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut stream = StreamTask {
                etcd,
                auth,
                watchers: BTreeMap::new(),
                next_id: 0,
                tx,
            };
            if let Err(e) = stream.run(inbound).await {
                let _ = stream.tx.send(Err(e)).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

struct StreamTask {
    etcd: Etcd,
    auth: tonic::metadata::MetadataMap,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
}

/// Why a stream's task ends early: the client went away.
struct Gone;

impl StreamTask {
    /// Runs the stream: the token is checked once per watch it creates, for that range.
    async fn run(
        &mut self,
        mut inbound: impl Stream<Item = Result<WatchRequest, Status>> + Unpin,
    ) -> Result<(), Status> {
        let node = self.etcd.node.clone();
        let mut applied = node.applied_changes();
        let stop = node.stop_signal();
        tokio::pin!(stop);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        loop {
            tokio::select! {
                message = inbound.next() => {
                    let Some(message) = message.transpose()? else { return Ok(()) };
                    if self.handle(message).await.is_err() {
                        return Ok(());
                    }
                }
                changed = applied.changed() => {
                    if changed.is_err() {
                        return Err(Status::unavailable("etcdserver: server stopped"));
                    }
                    applied.borrow_and_update();
                    if self.deliver().await.is_err() {
                        return Ok(());
                    }
                }
                _ = progress.tick() => {
                    if self.watchers.values().any(|w| w.progress_notify)
                        && self.progress(None).await.is_err()
                    {
                        return Ok(());
                    }
                }
                () = &mut stop => {
                    return Err(Status::unavailable("etcdserver: server stopped"));
                }
                () = self.tx.closed() => return Ok(()),
            }
        }
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.tx.send(Ok(response)).await.map_err(|_| Gone)
    }

    fn state(&self) -> StateReader {
        (*self.etcd.node.read_stale()).clone()
    }

    fn current(&self) -> u64 {
        self.state().kv_meta().map_or(0, |m| m.revision)
    }

    async fn handle(&mut self, message: WatchRequest) -> Result<(), Gone> {
        match message.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(watch_request::RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    self.send(WatchResponse {
                        header: self.etcd.header(self.current()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => self.progress(Some(-1)).await,
            None => Ok(()),
        }
    }

    /// Tells the client the revision it has seen everything up to, if every watch is
    /// caught up (etcd's rule: a progress notice promises no older event follows).
    async fn progress(&self, watch_id: Option<i64>) -> Result<(), Gone> {
        let current = self.current();
        if self.watchers.values().any(|w| w.next <= current) {
            return Ok(());
        }
        self.send(WatchResponse {
            header: self.etcd.header(current),
            watch_id: watch_id.unwrap_or(-1),
            ..Default::default()
        })
        .await
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let current = self.current();
        let refuse = |watch_id: i64, reason: String| WatchResponse {
            header: self.etcd.header(current),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        let range = match key_range(&create.key, &create.range_end) {
            Ok(range) => range,
            Err(e) => return self.send(refuse(-1, e.message().to_owned())).await,
        };
        let mut probe = Request::new(());
        *probe.metadata_mut() = self.auth.clone();
        if let Err(e) = self.etcd.authorize(&probe, read_need(&range)) {
            return self.send(refuse(-1, e.message().to_owned())).await;
        }
        if self.watchers.len() >= WATCHES_PER_STREAM_MAX {
            let reason = format!("a stream holds at most {WATCHES_PER_STREAM_MAX} watches");
            return self.send(refuse(-1, reason)).await;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                let reason = "etcdserver: mvcc: watcher ID already in use".to_owned();
                return self.send(refuse(create.watch_id, reason)).await;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        self.next_id = self.next_id.max(id + 1);
        let start = match revision(create.start_revision, "start_revision") {
            Ok(0) => current + 1,
            Ok(start) => start,
            Err(e) => return self.send(refuse(id, e.message().to_owned())).await,
        };
        let filters = |f: FilterType| create.filters.contains(&(f as i32));
        self.send(WatchResponse {
            header: self.etcd.header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        let kept_from = self.state().events_compacted().unwrap_or(0);
        if start <= kept_from {
            return self
                .send(WatchResponse {
                    header: self.etcd.header(current),
                    watch_id: id,
                    canceled: true,
                    compact_revision: (kept_from + 1) as i64,
                    cancel_reason: history::compacted().message().to_owned(),
                    ..Default::default()
                })
                .await;
        }
        self.watchers.insert(
            id,
            Watcher {
                range,
                next: start,
                prev_kv: create.prev_kv,
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                progress_notify: create.progress_notify,
            },
        );
        // A start in the past: its history goes out at once.
        self.deliver().await
    }

    /// Sends every watch the events it has not been sent yet.
    async fn deliver(&mut self) -> Result<(), Gone> {
        let state = self.state();
        let current = state.kv_meta().map_or(0, |m| m.revision);
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            while let Some(w) = self.watchers.get(&id) {
                if w.next > current {
                    break;
                }
                let (range, from, prev_kv) = (w.range.clone(), w.next, w.prev_kv);
                let (no_put, no_delete) = (w.no_put, w.no_delete);
                let read = {
                    let state = state.clone();
                    tokio::task::spawn_blocking(move || {
                        page(&state, &range, from, current, prev_kv, no_put, no_delete)
                    })
                    .await
                };
                let Ok(Ok((events, next))) = read else {
                    // The history moved past this watch while it waited: it is compacted.
                    let kept_from = state.events_compacted().unwrap_or(0);
                    self.watchers.remove(&id);
                    self.send(WatchResponse {
                        header: self.etcd.header(current),
                        watch_id: id,
                        canceled: true,
                        compact_revision: (kept_from + 1) as i64,
                        cancel_reason: history::compacted().message().to_owned(),
                        ..Default::default()
                    })
                    .await?;
                    break;
                };
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.next = next;
                }
                if !events.is_empty() {
                    self.send(WatchResponse {
                        header: self.etcd.header(current),
                        watch_id: id,
                        events,
                        ..Default::default()
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// The events of `range` from revision `from` on (never past `to`), whole revisions only,
/// at most [`EVENTS_PER_RESPONSE_MAX`] unless one revision alone holds more; and the next
/// revision to read from.
fn page(
    state: &StateReader,
    range: &KeyRange,
    from: u64,
    to: u64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
) -> Result<(Vec<Event>, u64), Status> {
    if from <= state.events_compacted().unwrap_or(0) {
        return Err(history::compacted());
    }
    let read = state
        .events(from, "", SCAN_PAGE)
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut out = Vec::new();
    let mut next = from;
    let mut group: Vec<KvEvent> = Vec::new();
    let mut events = read.events.into_iter().peekable();
    while let Some(event) = events.next() {
        if event.revision > to {
            return Ok((out, next));
        }
        let last_of_revision = events.peek().is_none_or(|e| e.revision != event.revision);
        let revision = event.revision;
        if range.contains(&event.key) {
            group.push(event);
        }
        if last_of_revision {
            if out.len() + group.len() > EVENTS_PER_RESPONSE_MAX && !out.is_empty() {
                return Ok((out, revision));
            }
            for e in group.drain(..) {
                let is_put = matches!(e.kind, EventKind::Put { .. });
                if (is_put && no_put) || (!is_put && no_delete) {
                    continue;
                }
                out.push(to_event(state, e, prev_kv));
            }
            next = revision + 1;
        }
    }
    // The page ended: everything up to where the scan stopped has been seen.
    Ok((out, read.next_revision.max(next).min(to + 1)))
}

fn to_event(state: &StateReader, e: KvEvent, prev_kv: bool) -> Event {
    let prev = if prev_kv && e.revision > 1 {
        history::range_at(
            state,
            &KeyRange::one(e.key.clone()),
            e.revision - 1,
            e.revision,
            usize::MAX,
        )
        .ok()
        .and_then(|mut kvs| kvs.pop())
        .map(|(k, entry)| key_value(&k, &entry))
    } else {
        None
    };
    let (kind, kv) = match e.kind {
        EventKind::Put {
            value,
            create_revision,
            version,
        } => (
            EventType::Put,
            KeyValue {
                key: e.key.into_bytes(),
                create_revision: create_revision as i64,
                mod_revision: e.revision as i64,
                version: version as i64,
                value,
                lease: 0,
            },
        ),
        EventKind::Delete | EventKind::Expire => (
            EventType::Delete,
            KeyValue {
                key: e.key.into_bytes(),
                mod_revision: e.revision as i64,
                ..Default::default()
            },
        ),
    };
    Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}
