//! Where chunks live: the members they may live on, how many copies each gets, and which
//! members should hold a given chunk (its first R live members in rendezvous order).
//! Nothing here is stored; every node computes the same answer from the membership and its
//! own view of which peers are down.
//!
//! Refuses: moving chunks ([`super::peers`]) and repairing them ([`super::repair`]).

use crate::Node;
use kith_core::files::{hex, rendezvous, ChunkPlacement, Hash, Manifest};
use kith_core::NodeId;

impl Node {
    /// The members chunks may live on: every node in the current membership, voters and
    /// learners alike, in id order.
    pub(super) fn file_members(&self) -> Vec<(NodeId, String)> {
        // Read under the borrow: cloning all of openraft's metrics per chunk read is waste.
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// Copies each chunk gets in the current membership: the configured R, capped by the
    /// member count.
    pub fn file_replicas(&self) -> usize {
        self.replicas_for(self.file_members().len())
    }

    /// Replicas each chunk should have with `members` nodes: the configured R, capped.
    pub(super) fn replicas_for(&self, members: usize) -> usize {
        replicas(self.config.file_replicas, members)
    }

    /// The first R live members in `hash`'s rendezvous order.
    pub(super) fn desired_holders(&self, hash: &Hash, members: &[(NodeId, String)]) -> Vec<NodeId> {
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        let replicas = self.replicas_for(ids.len());
        live_holders(hash, &ids, replicas, |id| {
            id == self.config.id || !self.files.is_down(id, self.config.file_down_after)
        })
    }

    /// Where each chunk of `manifest` lives now, and where it should.
    pub async fn explain(&self, manifest: &Manifest) -> Vec<ChunkPlacement> {
        let members = self.file_members();
        let hashes: Vec<Hash> = manifest.chunks.iter().map(|c| c.hash).collect();
        let answers = futures::future::join_all(
            members
                .iter()
                .map(|(id, _)| self.ask_have(*id, &members, &hashes)),
        )
        .await;
        let chunk_bytes = u64::from(manifest.chunk_bytes);
        manifest
            .chunks
            .iter()
            .enumerate()
            .map(|(index, chunk)| ChunkPlacement {
                index,
                offset: index as u64 * chunk_bytes,
                size: chunk.size,
                hash: hex(&chunk.hash),
                holders: members
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| a.as_ref().is_ok_and(|have| have.get(index) == Some(&true)))
                    .map(|((id, _), _)| *id)
                    .collect(),
                desired: self.desired_holders(&chunk.hash, &members),
            })
            .collect()
    }
}

/// Copies each chunk gets: the `configured` R, capped by the member count (and at least 1).
fn replicas(configured: usize, members: usize) -> usize {
    configured.clamp(1, members.max(1))
}

/// The first `replicas` of `ids` in `hash`'s rendezvous order that `is_live` accepts.
fn live_holders(
    hash: &Hash,
    ids: &[NodeId],
    replicas: usize,
    is_live: impl Fn(NodeId) -> bool,
) -> Vec<NodeId> {
    rendezvous(hash, ids)
        .into_iter()
        .filter(|id| is_live(*id))
        .take(replicas)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_capped_by_the_members() {
        assert_eq!(replicas(3, 5), 3);
        assert_eq!(replicas(3, 2), 2);
        assert_eq!(replicas(3, 0), 1);
        assert_eq!(replicas(0, 5), 1);
    }

    #[test]
    fn holders_are_the_first_live_members_in_rendezvous_order() {
        let hash = *blake3::hash(b"chunk").as_bytes();
        let ids = [1, 2, 3, 4, 5];
        let order = rendezvous(&hash, &ids);
        assert_eq!(live_holders(&hash, &ids, 3, |_| true), order[..3]);
        // A member that is down gives its place to the next one in the order.
        let down = order[0];
        assert_eq!(live_holders(&hash, &ids, 3, |id| id != down), order[1..4]);
        // Fewer live members than replicas: every live one, still in order.
        assert_eq!(
            live_holders(&hash, &ids, 3, |id| id == order[4]),
            [order[4]]
        );
    }
}
