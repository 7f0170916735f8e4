//! Shared read-index rounds on the leader: concurrent linearizable reads confirm leadership
//! once between them, as etcd's `linearizableReadLoop` does.
//!
//! `Raft::ensure_linearizable` costs a heartbeat round to every follower and a quorum of
//! answers. One round per read made the leader's CPU, not the network, the limit of
//! linearizable reads under many clients. Here one task runs the rounds one after another,
//! and each round answers every request that was queued before it started:
//!
//! ```text
//!  ReadIndex requests ──▶ queue (READS_QUEUED_MAX) ──▶ task: take all queued ──▶ one
//!                                                      ensure_linearizable() ──▶ each waiter
//! ```
//!
//! Invariant (why sharing is safe): a request is answered only by a round that *started
//! after the request arrived*, because the task takes waiters off the queue only when it
//! starts a round. That round's read index is at least the commit index at its start, so it
//! covers every write acknowledged before the request — the same guarantee a round of its
//! own would give.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use kith_storage::TypeConfig;

use crate::peer::protocol::ForwardError;

/// Read-index requests waiting for the next round; senders wait when it is full.
const READS_QUEUED_MAX: usize = 4096;

type Answer = Result<u64, ForwardError>;

/// The leader's read-index rounds. Cheap to clone; its task stops when every clone is gone.
#[derive(Clone)]
pub(crate) struct ReadIndexBatcher {
    /// The round task's queue, written by [`ReadIndexBatcher::read_index`]; closed when the
    /// last clone is dropped, which ends the task.
    queue: mpsc::Sender<oneshot::Sender<Answer>>,
}

impl ReadIndexBatcher {
    /// Starts the round task. Each round is bounded by `request_timeout`.
    pub(crate) fn start(raft: Raft<TypeConfig>, request_timeout: Duration) -> Self {
        let (queue, rx) = mpsc::channel(READS_QUEUED_MAX);
        tokio::spawn(run(raft, rx, request_timeout));
        ReadIndexBatcher { queue }
    }

    /// The read index of the next round that starts after this call.
    pub(crate) async fn read_index(&self) -> Answer {
        let (answer, wait) = oneshot::channel();
        let stopped = || ForwardError::Internal("the read-index task has stopped".into());
        self.queue.send(answer).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

async fn run(
    raft: Raft<TypeConfig>,
    mut rx: mpsc::Receiver<oneshot::Sender<Answer>>,
    request_timeout: Duration,
) {
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        waiters.push(first);
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let round = timeout(request_timeout, raft.ensure_linearizable()).await;
        for w in waiters.drain(..) {
            let answer = match &round {
                Err(_) => Err(ForwardError::Timeout {
                    what: "read index".into(),
                    ms: request_timeout.as_millis() as u64,
                }),
                Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    Err(ForwardError::NotLeader {
                        leader_id: f.leader_id,
                    })
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    Err(ForwardError::NoQuorum)
                }
                Ok(Err(e)) => Err(ForwardError::Internal(e.to_string())),
            };
            let _ = w.send(answer);
        }
    }
}
