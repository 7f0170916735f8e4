//! The nemesis: turns schedule steps into real faults on a running cluster, and heals them.
//!
//! Owns: [`inject`] and [`heal`]. Partitions and packet loss are nftables rules
//! ([`crate::nft`]); kills and pauses are signals ([`crate::cluster`]); delay and message drop
//! go to kith's transport fault layer over `POST /internal/faults`; a membership fault removes
//! a non-leader voter over the public API (`DELETE /v1/cluster/members/{id}`) and leaves it
//! running. Healing removes every rule, switches the fault layer off on every node, resumes
//! paused nodes, restarts dead ones and adds removed nodes back as voters — whatever the step
//! was, so a heal always returns the cluster to full health.
//!
//! Refuses: deciding what to inject (that is [`crate::schedule`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use kith_core::FaultSettings;

use crate::cluster::{wait_for, Cluster};
use crate::nft::Firewall;
use crate::schedule::{Fault, Target};

/// Bound on waiting for a leader between the restarts of a rolling restart.
const ROLLING_LEADER_WAIT: Duration = Duration::from_secs(15);

/// The node that leads now, by the reports of the nodes that answer (highest term wins).
pub async fn current_leader(cluster: &Cluster) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for id in cluster.ids() {
        if !cluster.node(id).is_running() || cluster.node(id).is_paused() {
            continue;
        }
        let Some(h) = cluster.health(id).await else {
            continue;
        };
        if h["role"] == "leader" {
            let term = h["term"].as_u64().unwrap_or(0);
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, id));
            }
        }
    }
    best.map(|(_, id)| id)
}

async fn resolve(cluster: &Cluster, target: Target) -> u64 {
    match target {
        Target::Node(id) => id,
        // With no leader known (mid-election), hit node 1: still a fault, and deterministic.
        Target::Leader => current_leader(cluster).await.unwrap_or(1),
    }
}

fn ip(cluster: &Cluster, id: u64) -> Ipv4Addr {
    cluster.node(id).ip
}

/// Drops all traffic between every node of `a` and every node of `b`, both directions.
fn cut(cluster: &Cluster, fw: &Firewall, a: &[u64], b: &[u64]) -> anyhow::Result<()> {
    for x in a {
        for y in b {
            fw.block(ip(cluster, *x), ip(cluster, *y))?;
            fw.block(ip(cluster, *y), ip(cluster, *x))?;
        }
    }
    Ok(())
}

async fn fault_layer_everywhere(cluster: &Cluster, settings: FaultSettings) -> Vec<String> {
    let mut problems = Vec::new();
    for id in cluster.ids() {
        if !cluster.node(id).is_running() {
            continue;
        }
        if let Err(e) = cluster.set_faults(id, settings).await {
            problems.push(format!("{e:#}"));
        }
    }
    problems
}

/// Injects `fault`; returns what was done, naming the nodes it hit.
pub async fn inject(cluster: &mut Cluster, fw: &Firewall, fault: &Fault) -> anyhow::Result<String> {
    let all = cluster.ids();
    let others =
        |me: &[u64]| -> Vec<u64> { all.iter().copied().filter(|i| !me.contains(i)).collect() };
    Ok(match fault {
        Fault::PartitionMinority { nodes } => {
            cut(cluster, fw, nodes, &others(nodes))?;
            format!("isolated {nodes:?} from {:?}", others(nodes))
        }
        Fault::PartitionLeader => {
            let leader = resolve(cluster, Target::Leader).await;
            cut(cluster, fw, &[leader], &others(&[leader]))?;
            format!("isolated leader n{leader}")
        }
        Fault::OneWay { target, inbound } => {
            let node = resolve(cluster, *target).await;
            for other in others(&[node]) {
                if *inbound {
                    fw.block(ip(cluster, other), ip(cluster, node))?;
                } else {
                    fw.block(ip(cluster, node), ip(cluster, other))?;
                }
            }
            if *inbound {
                format!("n{node} hears nobody (others' packets to it dropped)")
            } else {
                format!("n{node} reaches nobody (its packets dropped)")
            }
        }
        Fault::Bridge { bridge } => {
            let rest = others(&[*bridge]);
            let (left, right) = rest.split_at(rest.len() / 2);
            cut(cluster, fw, left, right)?;
            format!("{left:?} | {right:?}, bridged by n{bridge}")
        }
        Fault::Kill { target } => {
            let node = resolve(cluster, *target).await;
            cluster.kill(node);
            format!("SIGKILLed n{node}")
        }
        Fault::Pause { target } => {
            let node = resolve(cluster, *target).await;
            cluster.pause(node);
            format!("SIGSTOPped n{node}")
        }
        Fault::RollingRestart => {
            let mut waits = Vec::new();
            for id in all.clone() {
                cluster.kill(id);
                cluster.spawn(id)?;
                let started = tokio::time::Instant::now();
                let led = cluster.wait_for_leader(&all, ROLLING_LEADER_WAIT).await;
                waits.push(match led {
                    Ok(l) => format!("n{id} (leader n{l} after {:?})", started.elapsed()),
                    Err(_) => format!("n{id} (no leader within {ROLLING_LEADER_WAIT:?})"),
                });
            }
            format!("restarted {}", waits.join(", "))
        }
        Fault::PacketLoss { percent } => {
            for x in &all {
                for y in &all {
                    if x != y {
                        fw.lossy(ip(cluster, *x), ip(cluster, *y), *percent)?;
                    }
                }
            }
            format!("{percent}% loss on every link")
        }
        Fault::Delay { max_ms } => {
            let settings = FaultSettings {
                delay_ms: *max_ms,
                drop_per_million: 0,
            };
            let problems = fault_layer_everywhere(cluster, settings).await;
            format!("peer messages delayed up to {max_ms} ms {problems:?}")
        }
        Fault::MessageDrop { percent } => {
            let settings = FaultSettings {
                delay_ms: 0,
                drop_per_million: u32::from(*percent) * 10_000,
            };
            let problems = fault_layer_everywhere(cluster, settings).await;
            format!("{percent}% of peer messages dropped {problems:?}")
        }
        Fault::Membership { target } => {
            let leader = current_leader(cluster).await;
            let n = all.len() as u64;
            let node = (0..n)
                .map(|k| (target - 1 + k) % n + 1)
                .find(|id| Some(*id) != leader)
                .expect("a cluster of three or more has a non-leader");
            let via = leader.unwrap_or(if node == 1 { 2 } else { 1 });
            // Whatever the answer, the removal may have happened: heal checks and re-adds.
            cluster.removed.insert(node);
            match cluster.remove_member(via, node).await {
                Ok(()) => format!("removed voter n{node} through n{via}; it keeps running"),
                Err(e) => format!("removing voter n{node} through n{via}: {e:#}"),
            }
        }
    })
}

const HEAL_ATTEMPTS_MAX: u32 = 5;
/// Bound on getting a removed node back as a voter.
const MEMBERSHIP_HEAL_WAIT: Duration = Duration::from_secs(45);

fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<reqwest::Error>()
        .is_some_and(|e| e.is_connect())
}

/// Adds every node the nemesis removed back until the leader reports it a voter again; a
/// node that is still not a voter after [`MEMBERSHIP_HEAL_WAIT`] stays in
/// `cluster.removed`, and the schedule's checks report it.
async fn readd_removed(cluster: &mut Cluster) {
    for id in cluster.removed.clone() {
        let cluster_ref = &*cluster;
        let back = wait_for(
            "a removed node to be a voter again",
            MEMBERSHIP_HEAL_WAIT,
            || async {
                let leader = current_leader(cluster_ref).await?;
                if cluster_ref.is_voter(leader, id).await? {
                    return Some(());
                }
                // An error (no leader yet, a catch-up timeout) is retried on the next poll.
                let _ = cluster_ref.add_member(leader, id).await;
                None
            },
        )
        .await;
        if back.is_ok() {
            cluster.removed.remove(&id);
        }
    }
}

/// Heals everything: no rules, no fault layer, every node running and a voter. Returns a
/// note for each node that had exited on its own and was restarted.
pub async fn heal(cluster: &mut Cluster, fw: &Firewall) -> anyhow::Result<Vec<String>> {
    fw.heal()?;
    let notes = cluster.revive_all()?;
    // Nodes that were restarted start with the layer off; the others are switched off here.
    // A node that refuses the connection is still starting, so its layer is off already.
    for id in cluster.ids() {
        for attempt in 1..=HEAL_ATTEMPTS_MAX {
            match cluster.set_faults(id, FaultSettings::default()).await {
                Ok(()) => break,
                Err(e) if e.chain().any(is_refused) => break,
                Err(e) if attempt == HEAL_ATTEMPTS_MAX => {
                    return Err(e.context(format!("cannot switch n{id}'s fault layer off")))
                }
                Err(_) => {}
            }
        }
    }
    readd_removed(cluster).await;
    Ok(notes)
}
