//! Fault schedules: which faults to inject, in what order, for how long — all from a seed.
//!
//! Owns: [`FaultKind`], [`Fault`], [`Step`] and [`Schedule`], which draws an endless, seeded
//! sequence of steps. The same seed and cluster size give the same sequence of faults and
//! durations; what a fault hits at run time ("the leader") depends on the cluster at that
//! moment and is written to the run's log, so a report shows what actually happened.
//!
//! Refuses: touching the cluster (that is [`crate::nemesis`]).

use std::fmt;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kinds of fault, for filtering and for the summary table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    PartitionMinority,
    PartitionLeader,
    OneWay,
    Bridge,
    Kill,
    Pause,
    RollingRestart,
    PacketLoss,
    Delay,
    MessageDrop,
    Membership,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::PartitionMinority,
        FaultKind::PartitionLeader,
        FaultKind::OneWay,
        FaultKind::Bridge,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::RollingRestart,
        FaultKind::PacketLoss,
        FaultKind::Delay,
        FaultKind::MessageDrop,
        FaultKind::Membership,
    ];

    /// Only network partitions: the fastest way to expose stale reads.
    pub const PARTITIONS: [FaultKind; 3] = [
        FaultKind::PartitionMinority,
        FaultKind::PartitionLeader,
        FaultKind::OneWay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PartitionMinority => "partition-minority",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::OneWay => "one-way",
            FaultKind::Bridge => "bridge",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::Delay => "delay",
            FaultKind::MessageDrop => "message-drop",
            FaultKind::Membership => "membership",
        }
    }
}

/// A node a fault targets: a fixed one, or whichever leads when the fault starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    Node(u64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Leader => write!(f, "the leader"),
            Target::Node(id) => write!(f, "n{id}"),
        }
    }
}

/// One fault, with its parameters drawn from the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut `nodes` (fewer than half) off from the rest, both directions.
    PartitionMinority { nodes: Vec<u64> },
    /// Cut the current leader off from everyone, both directions.
    PartitionLeader,
    /// Drop every packet `target` sends to the others (it still hears them), or every
    /// packet it receives from them (`inbound`).
    OneWay { target: Target, inbound: bool },
    /// `bridge` sees both sides; the two sides do not see each other.
    Bridge { bridge: u64 },
    /// SIGKILL, then restart when the step ends.
    Kill { target: Target },
    /// SIGSTOP for the whole step (longer than an election timeout), then SIGCONT.
    Pause { target: Target },
    /// SIGKILL and restart every node in turn, waiting for a leader after each.
    RollingRestart,
    /// Drop `percent`% of the packets between every pair of nodes, at random (nftables).
    PacketLoss { percent: u8 },
    /// Delay every peer message by up to `max_ms` (kith's transport fault layer).
    Delay { max_ms: u64 },
    /// Drop `percent`% of peer messages before they are sent (kith's fault layer).
    MessageDrop { percent: u8 },
    /// Remove a voter that does not lead (`target`, or the next non-leader after it) from
    /// the cluster while it keeps running with its data; heal adds it back as a voter.
    Membership { target: u64 },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::PartitionMinority { .. } => FaultKind::PartitionMinority,
            Fault::PartitionLeader => FaultKind::PartitionLeader,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Bridge { .. } => FaultKind::Bridge,
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::RollingRestart => FaultKind::RollingRestart,
            Fault::PacketLoss { .. } => FaultKind::PacketLoss,
            Fault::Delay { .. } => FaultKind::Delay,
            Fault::MessageDrop { .. } => FaultKind::MessageDrop,
            Fault::Membership { .. } => FaultKind::Membership,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::PartitionMinority { nodes } => write!(f, "partition {nodes:?} from the rest"),
            Fault::PartitionLeader => write!(f, "partition the leader"),
            Fault::OneWay {
                target,
                inbound: false,
            } => write!(f, "one-way: {target} cannot send"),
            Fault::OneWay {
                target,
                inbound: true,
            } => write!(f, "one-way: {target} cannot receive"),
            Fault::Bridge { bridge } => write!(f, "bridge through n{bridge}"),
            Fault::Kill { target } => write!(f, "SIGKILL {target}, restart later"),
            Fault::Pause { target } => write!(f, "SIGSTOP {target}, SIGCONT later"),
            Fault::RollingRestart => write!(f, "rolling restart"),
            Fault::PacketLoss { percent } => write!(f, "{percent}% packet loss"),
            Fault::Delay { max_ms } => write!(f, "peer messages delayed up to {max_ms} ms"),
            Fault::MessageDrop { percent } => write!(f, "{percent}% of peer messages dropped"),
            Fault::Membership { target } => {
                write!(
                    f,
                    "remove voter n{target} (or the next non-leader), add it back later"
                )
            }
        }
    }
}

/// A fault held for `hold_ms`, after `gap_ms` of calm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub gap_ms: u64,
    pub fault: Fault,
    pub hold_ms: u64,
}

/// An endless seeded sequence of steps for a cluster of `nodes`.
pub struct Schedule {
    rng: ChaCha8Rng,
    nodes: u64,
    kinds: Vec<FaultKind>,
}

/// Longest election timeout kith uses (ms); pauses and partitions outlast it.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 1_400;

impl Schedule {
    pub fn new(seed: u64, nodes: u64, kinds: &[FaultKind]) -> Schedule {
        assert!(nodes >= 3, "faults need at least three nodes");
        assert!(!kinds.is_empty(), "at least one kind of fault");
        Schedule {
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes,
            kinds: kinds.to_vec(),
        }
    }

    /// The cluster size a seed runs with: mostly 3 nodes, one seed in four 5.
    pub fn nodes_for_seed(seed: u64) -> u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b69_7468);
        if rng.random_ratio(1, 4) {
            5
        } else {
            3
        }
    }

    fn target(&mut self) -> Target {
        if self.rng.random_bool(0.5) {
            Target::Leader
        } else {
            Target::Node(self.rng.random_range(1..=self.nodes))
        }
    }

    pub fn next_step(&mut self) -> Step {
        let kind = *self
            .kinds
            .choose(&mut self.rng)
            .expect("kinds is not empty");
        let ids: Vec<u64> = (1..=self.nodes).collect();
        let fault = match kind {
            FaultKind::PartitionMinority => {
                let size = self.rng.random_range(1..=(self.nodes - 1) / 2) as usize;
                let mut nodes: Vec<u64> =
                    ids.choose_multiple(&mut self.rng, size).copied().collect();
                nodes.sort_unstable();
                Fault::PartitionMinority { nodes }
            }
            FaultKind::PartitionLeader => Fault::PartitionLeader,
            FaultKind::OneWay => Fault::OneWay {
                target: self.target(),
                inbound: self.rng.random_bool(0.5),
            },
            FaultKind::Bridge => Fault::Bridge {
                bridge: self.rng.random_range(1..=self.nodes),
            },
            FaultKind::Kill => Fault::Kill {
                target: self.target(),
            },
            FaultKind::Pause => Fault::Pause {
                target: self.target(),
            },
            FaultKind::RollingRestart => Fault::RollingRestart,
            FaultKind::PacketLoss => Fault::PacketLoss {
                percent: *[10u8, 20, 35].choose(&mut self.rng).expect("non-empty"),
            },
            FaultKind::Delay => Fault::Delay {
                max_ms: *[20u64, 80, 250].choose(&mut self.rng).expect("non-empty"),
            },
            FaultKind::MessageDrop => Fault::MessageDrop {
                percent: *[5u8, 15, 30].choose(&mut self.rng).expect("non-empty"),
            },
            FaultKind::Membership => Fault::Membership {
                target: self.rng.random_range(1..=self.nodes),
            },
        };
        Step {
            gap_ms: self.rng.random_range(200..=900),
            fault,
            // Longer than the longest election timeout, so that partitions and pauses force
            // elections.
            hold_ms: self
                .rng
                .random_range(ELECTION_TIMEOUT_MS_MAX + 200..=ELECTION_TIMEOUT_MS_MAX + 2_600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_steps() {
        let a: Vec<Step> = {
            let mut s = Schedule::new(7, 5, &FaultKind::ALL);
            (0..20).map(|_| s.next_step()).collect()
        };
        let b: Vec<Step> = {
            let mut s = Schedule::new(7, 5, &FaultKind::ALL);
            (0..20).map(|_| s.next_step()).collect()
        };
        assert_eq!(a, b);
        let c: Vec<Step> = {
            let mut s = Schedule::new(8, 5, &FaultKind::ALL);
            (0..20).map(|_| s.next_step()).collect()
        };
        assert_ne!(a, c);
    }

    #[test]
    fn minorities_are_minorities_and_pauses_outlast_elections() {
        let mut s = Schedule::new(1, 5, &FaultKind::ALL);
        for _ in 0..500 {
            let step = s.next_step();
            assert!(step.hold_ms > ELECTION_TIMEOUT_MS_MAX);
            if let Fault::PartitionMinority { nodes } = &step.fault {
                assert!(!nodes.is_empty() && nodes.len() * 2 < 5, "{nodes:?}");
            }
        }
    }
}
