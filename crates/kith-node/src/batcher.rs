//! Group commit above Raft: the leader proposes many client writes as one log entry.
//!
//! openraft 0.9's core appends each `client_write` as its own entry and waits for that
//! append's fsync before it takes the next request, so one write per entry means one fsync
//! per write on the leader, however many clients wait. etcd gets its batching from raft's
//! `Ready` loop (every proposal that arrived during the last WAL fsync goes into the next);
//! kith gets the same effect here, one layer up:
//!
//! ```text
//!  serve_forwarded(Write) ──▶ queue (PROPOSALS_QUEUED_MAX) ──▶ batcher task
//!        ▲ awaits its own answer                              │ takes a permit (at most
//!        │                                                    │ BATCHES_IN_FLIGHT_MAX batches
//!        │                                                    │ in Raft at once), then
//!        │                                                    │ everything queued (bounded
//!        │                                                    ▼ by count and bytes)
//!        └──── Response i ◀──── Raft::client_write(vec![p1, …, pn]) ─▶ one entry, one fsync
//!                                                             │
//!                                 waits until that entry is in the log and the log's fsync
//!                                 is done (`LogStore::wait_idle_after`) before the next batch
//! ```
//!
//! While the leader's log fsyncs, and while the batches in flight hold every permit, new
//! writes queue up, and the next batch takes all of them: the busier the leader, the larger
//! its batches, with no timer and no added latency for a lone client.
//!
//! Invariants:
//! - A batch is one Raft entry: it commits and applies entirely or not at all, and its
//!   proposals apply in queue order, each with its own revision (the state machine loops over
//!   them). The entry's response holds exactly one `Response` per proposal (asserted).
//! - Each waiter gets exactly one answer. A batch that fails or times out gives every
//!   waiter the same error; as for a single write, a timeout means the outcome is unknown.
//! - No proposal is larger than `protocol::proposal_bytes_max` (a larger one is refused
//!   before it is queued), so every entry fits in a request followers accept: a follower
//!   that refused an entry could never get past it.
//!
//! Refuses: deciding what a command means, and any wait of its own: there is no linger
//! timer, only the queue that forms while earlier batches are in Raft.

use std::time::Duration;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use kith_core::{Proposal, Response};
use kith_storage::{LogStore, TypeConfig};

use crate::batch_queue::BatchQueue;
use crate::peer::protocol::{write_error, ForwardError, BATCH_BYTES_MAX};

/// Writes waiting for the batcher; senders wait (asynchronously) when it is full.
const PROPOSALS_QUEUED_MAX: usize = 4096;
/// Batches handed to Raft and not yet answered. More than one lets the leader append the
/// next batch while the previous one is being replicated.
const BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Proposals in one batch (one log entry).
const BATCH_PROPOSALS_MAX: usize = 512;

type Answer = Result<Response, ForwardError>;

struct Waiting {
    proposal: Proposal,
    bytes: usize,
    answer: oneshot::Sender<Answer>,
}

/// The leader's write batcher. Cheap to clone; its task stops when every clone is gone.
#[derive(Clone)]
pub(crate) struct ProposalBatcher {
    /// The batcher task's queue. Written by [`ProposalBatcher::write`]; closed when the last
    /// clone is dropped, which ends the task.
    queue: mpsc::Sender<Waiting>,
    /// Largest encoded proposal accepted (`protocol::proposal_bytes_max`).
    proposal_bytes_max: usize,
}

impl ProposalBatcher {
    /// Starts the batcher task. Each batch is bounded by `request_timeout` in Raft, and each
    /// proposal by `proposal_bytes_max` encoded bytes.
    pub(crate) fn start(
        raft: Raft<TypeConfig>,
        log: LogStore,
        request_timeout: Duration,
        proposal_bytes_max: usize,
    ) -> Self {
        let (queue, rx) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        tokio::spawn(run(raft, log, rx, request_timeout));
        ProposalBatcher {
            queue,
            proposal_bytes_max,
        }
    }

    /// Proposes `proposal` in the next batch and waits for its own response.
    pub(crate) async fn write(&self, proposal: Proposal) -> Answer {
        let bytes = postcard::experimental::serialized_size(&proposal)
            .map_err(|e| ForwardError::Internal(format!("unencodable proposal: {e}")))?;
        if bytes > self.proposal_bytes_max {
            // Validation bounds every command well below this; one that passed it anyway is
            // refused here rather than written into an entry no follower would accept.
            return Err(ForwardError::Internal(format!(
                "a proposal of {bytes} encoded bytes passes the largest a log entry may carry \
                 ({} bytes)",
                self.proposal_bytes_max
            )));
        }
        let (answer, wait) = oneshot::channel();
        let stopped = || ForwardError::Internal("the write batcher has stopped".into());
        self.queue
            .send(Waiting {
                proposal,
                bytes,
                answer,
            })
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    log: LogStore,
    rx: mpsc::Receiver<Waiting>,
    request_timeout: Duration,
) {
    let mut queue = BatchQueue::new(
        rx,
        BATCHES_IN_FLIGHT_MAX,
        BATCH_PROPOSALS_MAX,
        BATCH_BYTES_MAX,
        |w| w.bytes,
    );
    loop {
        let Some((permit, batch)) = queue.next().await else {
            return;
        };
        let raft = raft.clone();
        let mark = log.appends_queued();
        let mut proposed = tokio::spawn(async move {
            let _permit = permit;
            propose(&raft, batch, request_timeout).await;
        });
        // The next batch forms once this one is in the log and the log's fsync is done (or
        // this one failed before reaching the log): openraft appends one entry at a time and
        // waits for each fsync, so writes arriving meanwhile are best taken together.
        tokio::select! {
            _ = log.wait_idle_after(mark) => {}
            _ = &mut proposed => {}
        }
    }
}

/// Proposes one batch and answers each of its waiters.
async fn propose(raft: &Raft<TypeConfig>, batch: Vec<Waiting>, request_timeout: Duration) {
    let (proposals, answers): (Vec<Proposal>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|w| (w.proposal, w.answer)).unzip();
    let count = proposals.len();
    match timeout(request_timeout, raft.client_write(proposals)).await {
        Ok(Ok(written)) => {
            assert_eq!(
                written.data.len(),
                count,
                "a batch's entry answers once per proposal"
            );
            for (answer, response) in answers.into_iter().zip(written.data) {
                let _ = answer.send(Ok(response));
            }
        }
        Ok(Err(e)) => {
            let e = write_error(e);
            for answer in answers {
                let _ = answer.send(Err(copy_error(&e)));
            }
        }
        Err(_) => {
            for answer in answers {
                let _ = answer.send(Err(ForwardError::Timeout {
                    what: "commit".into(),
                    ms: request_timeout.as_millis() as u64,
                }));
            }
        }
    }
}

/// The same error for another waiter of the batch.
fn copy_error(e: &ForwardError) -> ForwardError {
    match e {
        ForwardError::NotLeader { leader_id } => ForwardError::NotLeader {
            leader_id: *leader_id,
        },
        ForwardError::Timeout { what, ms } => ForwardError::Timeout {
            what: what.clone(),
            ms: *ms,
        },
        ForwardError::NoQuorum => ForwardError::NoQuorum,
        ForwardError::Membership(m) => ForwardError::Membership(m.clone()),
        ForwardError::Internal(m) => ForwardError::Internal(m.clone()),
        ForwardError::Invalid { message, too_large } => ForwardError::Invalid {
            message: message.clone(),
            too_large: *too_large,
        },
        ForwardError::QuotaExceeded(usage) => ForwardError::QuotaExceeded(*usage),
    }
}
