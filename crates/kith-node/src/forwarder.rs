//! Writes a follower receives travel to the leader together.
//!
//! Any node accepts any write; a follower forwards it to the leader over the peer transport.
//! One forwarded request per write made the HTTP round trip between follower and leader, not
//! Raft, the cost of most writes under many clients (two in three land on a follower when
//! clients spread over three nodes). Here concurrent writes share one forward, the way the
//! leader's [`ProposalBatcher`](crate::batcher) shares one log entry between them:
//!
//! ```text
//!  Node::write (follower) ──▶ queue (FORWARDS_QUEUED_MAX) ──▶ task: takes a permit (at most
//!        ▲ awaits its own answer                             FORWARDS_IN_FLIGHT_MAX batches
//!        │                                                   at once), then everything queued
//!        │                                                   (bounded by count and bytes)
//!        └─── answer i ◀── ForwardRequest::Writes([c1, …, cn]) ─▶ the leader proposes each
//! ```
//!
//! A lone client's write goes out at once: there is no linger timer, only the queue that
//! forms while earlier batches are on their way.
//!
//! Invariants:
//! - Each waiter gets exactly one answer. When the batch as a whole fails (the leader could
//!   not be reached, or timed out), every waiter gets the same error, with the same meaning
//!   as for a single forwarded write: `Timeout` means the outcome is unknown.
//! - The leader answers each command on its own; a command that it could not propose because
//!   it lost its leadership meanwhile answers "no leader" (retryable, nothing was written).
//!
//! Refuses: deciding anything about a command. The leader sets the cluster-wide bounds and
//! the clock, exactly as for a write it received itself.

use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};

use kith_core::{Command, Response};

use crate::batch_queue::BatchQueue;
use crate::error::NodeError;
use crate::peer::protocol::FORWARD_BYTES_MAX;

/// Writes waiting to be forwarded; senders wait (asynchronously) when it is full.
const FORWARDS_QUEUED_MAX: usize = 4096;
/// Forwarded batches not yet answered.
const FORWARDS_IN_FLIGHT_MAX: usize = 4;
/// Commands in one forwarded batch.
pub(crate) const FORWARD_COMMANDS_MAX: usize = 512;

pub(crate) type Answer = Result<Response, NodeError>;

struct Waiting {
    command: Command,
    bytes: usize,
    answer: oneshot::Sender<Answer>,
}

/// Where a batch goes: the node, which sends it to the leader as one request. A trait, so
/// the forwarder holds the node without depending on it.
pub(crate) trait ForwardWrites: Send + Sync + 'static {
    /// Runs `commands` on the leader: one answer per command, in order, or one error for all.
    fn forward_writes(
        &self,
        commands: Vec<Command>,
    ) -> impl std::future::Future<Output = Result<Vec<Answer>, NodeError>> + Send;
}

/// A follower's write forwarder. Its task stops when the forwarder or the node is dropped.
pub(crate) struct Forwarder {
    queue: mpsc::Sender<Waiting>,
}

impl Forwarder {
    /// Starts the forwarding task for `node` (which owns this forwarder, hence the `Weak`).
    pub(crate) fn start<N: ForwardWrites>(node: Weak<N>) -> Self {
        let (queue, rx) = mpsc::channel(FORWARDS_QUEUED_MAX);
        tokio::spawn(run(node, rx));
        Forwarder { queue }
    }

    /// Forwards `command` with the next batch and waits for its own answer.
    pub(crate) async fn write(&self, command: Command) -> Answer {
        let bytes = postcard::experimental::serialized_size(&command).unwrap_or(0);
        let (answer, wait) = oneshot::channel();
        self.queue
            .send(Waiting {
                command,
                bytes,
                answer,
            })
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        wait.await.map_err(|_| NodeError::ShuttingDown)?
    }
}

async fn run<N: ForwardWrites>(node: Weak<N>, rx: mpsc::Receiver<Waiting>) {
    let mut queue = BatchQueue::new(
        rx,
        FORWARDS_IN_FLIGHT_MAX,
        FORWARD_COMMANDS_MAX,
        FORWARD_BYTES_MAX,
        |w| w.bytes,
    );
    loop {
        let Some((permit, batch)) = queue.next().await else {
            return;
        };
        let Some(node) = node.upgrade() else {
            return; // the node is gone; dropping the batch answers "shutting down"
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, answers): (Vec<Command>, Vec<oneshot::Sender<Answer>>) =
                batch.into_iter().map(|w| (w.command, w.answer)).unzip();
            let count = commands.len();
            match node.forward_writes(commands).await {
                Ok(results) => {
                    debug_assert_eq!(results.len(), count, "one answer per command");
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(result);
                    }
                }
                Err(e) => {
                    for answer in answers {
                        let _ = answer.send(Err(e.same()));
                    }
                }
            }
        });
    }
}
