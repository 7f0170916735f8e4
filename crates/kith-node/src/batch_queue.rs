//! Taking a batch off a queue: what the leader's write batcher and the follower's forwarder
//! share. A batch first takes a permit (at most `in_flight_max` batches are out at once),
//! then the first item (waiting for one), then whatever else is already queued, bounded by
//! count and by bytes; it never waits for more.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// A queue of items with their encoded sizes, and the item that did not fit in the last
/// batch (it starts the next one).
pub(crate) struct BatchQueue<T> {
    rx: mpsc::Receiver<T>,
    permits: Arc<Semaphore>,
    carried: Option<T>,
    count_max: usize,
    bytes_max: usize,
    bytes: fn(&T) -> usize,
}

impl<T> BatchQueue<T> {
    pub(crate) fn new(
        rx: mpsc::Receiver<T>,
        in_flight_max: usize,
        count_max: usize,
        bytes_max: usize,
        bytes: fn(&T) -> usize,
    ) -> Self {
        BatchQueue {
            rx,
            permits: Arc::new(Semaphore::new(in_flight_max)),
            carried: None,
            count_max,
            bytes_max,
            bytes,
        }
    }

    /// The next batch, with the permit it holds until it is answered: at least one item and
    /// at most `count_max`, whose sizes add up to at most `bytes_max` unless the first alone
    /// is larger. `None` once every sender is gone.
    pub(crate) async fn next(&mut self) -> Option<(OwnedSemaphorePermit, Vec<T>)> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let first = match self.carried.take() {
            Some(item) => item,
            None => self.rx.recv().await?,
        };
        let mut bytes = (self.bytes)(&first);
        let mut batch = vec![first];
        while batch.len() < self.count_max {
            match self.rx.try_recv() {
                Ok(item) if bytes + (self.bytes)(&item) > self.bytes_max => {
                    self.carried = Some(item);
                    break;
                }
                Ok(item) => {
                    bytes += (self.bytes)(&item);
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        Some((permit, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_within_its_bounds() {
        let (tx, rx) = mpsc::channel(16);
        let mut queue = BatchQueue::new(rx, 8, 3, 10, |n: &usize| *n);
        let mut next = async || queue.next().await.map(|(_, batch)| batch);
        for n in [4, 4, 4, 1, 20, 1] {
            tx.send(n).await.unwrap();
        }
        assert_eq!(next().await, Some(vec![4, 4])); // a third 4 would pass 10 bytes
        assert_eq!(next().await, Some(vec![4, 1])); // 20 would pass 10 bytes
        assert_eq!(next().await, Some(vec![20])); // larger alone: still taken
        assert_eq!(next().await, Some(vec![1]));
        for n in [1, 1, 1, 1] {
            tx.send(n).await.unwrap();
        }
        assert_eq!(next().await, Some(vec![1, 1, 1])); // at most 3
        drop(tx);
        assert_eq!(next().await, Some(vec![1]));
        assert_eq!(next().await, None);
    }
}
