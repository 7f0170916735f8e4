//! Answers that leave before the state's commit: the leader's writers hear back as soon as
//! their entry is applied, and this node's readers never see the state older than an answer
//! it gave.
//!
//! An applied entry is committed in Raft: a quorum holds it durably in the log, and applying
//! is deterministic, so its responses are final the moment the apply computes them. The redb
//! commit after that only makes the state visible to this node's readers; a crash before it
//! re-applies the entry from the log with the same results. So the state machine hands each
//! batch's responses to the batcher that proposed it ([`EarlyAnswers`]) inside the apply, and
//! the commit runs while the answers travel. Until then, openraft's path was: the apply's
//! commit, the state-machine task's report to the Raft core, the core's reply to
//! `client_write`, then the batcher (about 0.15 ms of a lone write's 1 ms here).
//!
//! [`Visibility`] keeps the one promise the early answer could break: a client that got an
//! answer from this node and then reads from it, even a stale read, sees its write. Every
//! read first waits until the committed state covers everything this node has answered
//! (normally already true; at most one commit away).
//!
//! Owns: the registry of batches waiting for an early answer, and the two indexes. Refuses:
//! deciding what an answer holds (the apply does) and answering twice (a registered answer is
//! taken once, by the apply or by the batcher when `client_write` returns, whichever first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use kith_core::Response;

/// Called with a batch's responses, one per proposal, in order.
pub type EarlyAnswer = Box<dyn FnOnce(Vec<Response>) + Send>;

/// Batches proposed on this node and not yet answered, by `(origin, seq)` of their
/// [`kith_core::Command::Batch`] marker. Holds at most the batches in flight in Raft: the
/// batcher takes its entry back when `client_write` returns, whatever happened. Cheap to clone.
#[derive(Clone, Default)]
pub struct EarlyAnswers {
    waiting: Arc<Mutex<HashMap<(u64, u64), EarlyAnswer>>>,
}

impl EarlyAnswers {
    /// Registers the answer for the batch marked `(origin, seq)`.
    pub fn register(&self, origin: u64, seq: u64, answer: EarlyAnswer) {
        self.lock().insert((origin, seq), answer);
    }

    /// Takes the answer for `(origin, seq)`, if it is still waiting.
    pub fn take(&self, origin: u64, seq: u64) -> Option<EarlyAnswer> {
        self.lock().remove(&(origin, seq))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), EarlyAnswer>> {
        self.waiting.lock().expect("early answers lock poisoned")
    }
}

/// The highest log index this node answered early, and the highest its committed state
/// holds. Cheap to clone.
#[derive(Clone)]
pub struct Visibility {
    answered: Arc<AtomicU64>,
    visible: Arc<watch::Sender<u64>>,
}

impl Visibility {
    pub(crate) fn new(visible: u64) -> Self {
        Visibility {
            answered: Arc::new(AtomicU64::new(0)),
            visible: Arc::new(watch::Sender::new(visible)),
        }
    }

    /// Before an early answer for the entry at `index` leaves.
    pub(crate) fn answering(&self, index: u64) {
        self.answered.fetch_max(index, Ordering::SeqCst);
    }

    /// After a commit (or a snapshot install) that holds everything up to `index`.
    pub(crate) fn committed(&self, index: u64) {
        self.visible.send_if_modified(|v| {
            let moved = index > *v;
            if moved {
                *v = index;
            }
            moved
        });
    }

    /// Waits (at most `limit`) until the committed state holds every entry this node had
    /// answered when the call began. False if it did not in time.
    pub async fn wait(&self, limit: Duration) -> bool {
        let target = self.answered.load(Ordering::SeqCst);
        if *self.visible.borrow() >= target {
            return true;
        }
        let mut rx = self.visible.subscribe();
        // An error means the store is gone: no commit will come.
        let waited = tokio::time::timeout(limit, rx.wait_for(|v| *v >= target)).await;
        matches!(waited, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_taken_once() {
        let early = EarlyAnswers::default();
        let (tx, rx) = std::sync::mpsc::channel();
        early.register(7, 1, Box::new(move |r| tx.send(r).unwrap()));
        assert!(early.take(7, 2).is_none(), "another batch's marker");
        assert!(early.take(8, 1).is_none(), "another batcher's marker");
        let answer = early.take(7, 1).expect("registered");
        assert!(early.take(7, 1).is_none(), "taken once");
        answer(vec![Response::Put { revision: 3 }]);
        assert_eq!(rx.recv().unwrap(), vec![Response::Put { revision: 3 }]);
    }

    #[tokio::test]
    async fn a_read_waits_for_the_commit_of_what_was_answered() {
        let v = Visibility::new(10);
        assert!(v.wait(Duration::from_millis(1)).await, "nothing answered");
        v.answering(12);
        assert!(
            !v.wait(Duration::from_millis(20)).await,
            "answered 12, committed 10"
        );
        let waiter = tokio::spawn({
            let v = v.clone();
            async move { v.wait(Duration::from_secs(10)).await }
        });
        v.committed(11);
        v.committed(12);
        assert!(waiter.await.unwrap());
    }
}
