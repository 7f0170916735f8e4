//! Taking a batch off a queue: what the leader's write batcher and the follower's forwarder
//! share. A batch takes the first item (waiting for one), then whatever else is already
//! queued, bounded by count and by bytes; it never waits for more.

use tokio::sync::mpsc;

/// A queue of items with their encoded sizes, and the item that did not fit in the last
/// batch (it starts the next one).
pub(crate) struct BatchQueue<T> {
    rx: mpsc::Receiver<T>,
    carried: Option<T>,
    count_max: usize,
    bytes_max: usize,
    bytes: fn(&T) -> usize,
}

impl<T> BatchQueue<T> {
    pub(crate) fn new(
        rx: mpsc::Receiver<T>,
        count_max: usize,
        bytes_max: usize,
        bytes: fn(&T) -> usize,
    ) -> Self {
        BatchQueue {
            rx,
            carried: None,
            count_max,
            bytes_max,
            bytes,
        }
    }

    /// The next batch: at least one item and at most `count_max`, whose sizes add up to at
    /// most `bytes_max` unless the first alone is larger. `None` once every sender is gone.
    pub(crate) async fn next(&mut self) -> Option<Vec<T>> {
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
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_within_its_bounds() {
        let (tx, rx) = mpsc::channel(16);
        let mut queue = BatchQueue::new(rx, 3, 10, |n: &usize| *n);
        for n in [4, 4, 4, 1, 20, 1] {
            tx.send(n).await.unwrap();
        }
        assert_eq!(queue.next().await, Some(vec![4, 4])); // a third 4 would pass 10 bytes
        assert_eq!(queue.next().await, Some(vec![4, 1])); // 20 would pass 10 bytes
        assert_eq!(queue.next().await, Some(vec![20])); // larger alone: still taken
        assert_eq!(queue.next().await, Some(vec![1]));
        for n in [1, 1, 1, 1] {
            tx.send(n).await.unwrap();
        }
        assert_eq!(queue.next().await, Some(vec![1, 1, 1])); // at most 3
        drop(tx);
        assert_eq!(queue.next().await, Some(vec![1]));
        assert_eq!(queue.next().await, None);
    }
}
