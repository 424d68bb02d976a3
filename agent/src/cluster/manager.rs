//! Turning gossip into cluster state. Runs on every node; the store-facing
//! work happens only on the leader (Raft's, or etcd's election winner,
//! writing through its fenced store):
//!
//! - **Raft membership** (embedded store only): every gossip member that is alive and not yet in
//!   the Raft group is added as a learner (one attempt in flight per node);
//!   then the voters are made [`desired_voters`] of the healthy members in
//!   join order (the Node objects' creation time): 3 voters, 5 from 7
//!   nodes, a voter declared dead replaced by a healthy learner.
//! - **Node readiness**: a Node whose member gossip declares down (or
//!   left), or that this leader has not heard of by gossip for
//!   [`ManagerConfig::unheard_grace`] after taking office, gets
//!   `Ready=Unknown` (the node lifecycle controller then taints it and
//!   evicts its pods after the grace). A Node whose member is alive again
//!   gets `Ready=True` back.
//! - **Pod CIDRs**: a Node without `spec.podCIDR` gets the lowest free
//!   block of [`ManagerConfig::cluster_cidr`] (one writer, the leader, so
//!   no two nodes get the same block).
//! - On every node: the gossip addresses of alive members are saved as the
//!   seeds of the next start.
//!
//! Every pass is level-triggered (it compares the whole desired state with
//! the store and the Raft metrics), at least every
//! [`ManagerConfig::interval`] and on every gossip event.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::bootstrap::save_seeds;
use super::gossip::{Member, MemberState};
use super::node::{ClusterNode, raft_id};
use super::transport::NodeId;
use crate::api::Resource;
use crate::controllers::nodelifecycle::{Readiness, readiness};
use crate::store::raft::{RaftStore, desired_voters};
use crate::store::{Datastore, Key, StoreError, update_with};

/// Tunables of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's block (24: a /24 per node).
    pub node_prefix: u8,
    pub interval: Duration,
    /// A Node gossip has never reported to this leader is marked Unknown
    /// this long after the leader took office.
    pub unheard_grace: Duration,
}

impl Default for ManagerConfig {
    fn default() -> ManagerConfig {
        ManagerConfig {
            cluster_cidr: Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16)
                .unwrap_or_default(),
            node_prefix: 24,
            interval: Duration::from_millis(500),
            unheard_grace: Duration::from_secs(20),
        }
    }
}

/// Runs until `stop` turns true.
pub async fn run(node: Arc<ClusterNode>, cfg: ManagerConfig, mut stop: watch::Receiver<bool>) {
    let mut events = node.gossip.subscribe();
    let mut leadership = node.leadership();
    let in_flight: Arc<Mutex<HashSet<NodeId>>> = Arc::default();
    let mut leader_since: Option<Instant> = None;
    let mut seeds: Vec<SocketAddr> = Vec::new();
    loop {
        let members = node.gossip.members();
        let alive: Vec<SocketAddr> = members
            .iter()
            .filter(|m| m.state == MemberState::Alive && m.name != node.name)
            .map(|m| m.addr)
            .collect();
        if !alive.is_empty() && alive != seeds {
            seeds = alive;
            save_seeds(&node.identity.dir, &seeds);
        }
        if node.is_leader() {
            let since = *leader_since.get_or_insert_with(Instant::now);
            if let Some(raft) = node.raft() {
                membership(&node, raft, &members, &in_flight).await;
            }
            let store = node.leader_store();
            let (cfg2, me) = (cfg.clone(), node.name.clone());
            let unheard_ok = since.elapsed() < cfg.unheard_grace;
            let res = tokio::task::spawn_blocking(move || {
                nodes_pass(&*store, &me, &members, unheard_ok, &cfg2)
            })
            .await;
            match res {
                Ok(Err(e)) => tracing::warn!(error = %e, "node readiness / pod CIDR pass"),
                Err(e) => tracing::warn!(error = %e, "node pass task"),
                Ok(Ok(())) => {}
            }
        } else {
            leader_since = None;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = events.recv() => {}
            _ = leadership.changed() => {}
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
}

/// The healthy members' Raft ids in join order (Node creation time, then
/// name), with their peer addresses.
fn healthy(node: &ClusterNode, members: &[Member]) -> Vec<(NodeId, String)> {
    let created: HashMap<String, String> = node
        .store
        .list(Resource::Nodes, None)
        .map(|(items, _)| {
            items
                .into_iter()
                .filter_map(|n| {
                    let name = n.pointer("/metadata/name")?.as_str()?.to_string();
                    let t = n
                        .pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                        .unwrap_or("~")
                        .to_string();
                    Some((name, t))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut alive: Vec<&Member> = members
        .iter()
        .filter(|m| m.state == MemberState::Alive && !m.meta.rpc_addr.is_empty())
        .collect();
    let never = "~".to_string();
    alive.sort_by(|a, b| {
        let ta = created.get(&a.name).unwrap_or(&never);
        let tb = created.get(&b.name).unwrap_or(&never);
        (ta, &a.name).cmp(&(tb, &b.name))
    });
    alive
        .into_iter()
        .map(|m| (raft_id(&m.name), m.meta.rpc_addr.clone()))
        .collect()
}

async fn membership(
    node: &ClusterNode,
    raft: &Arc<RaftStore>,
    members: &[Member],
    in_flight: &Arc<Mutex<HashSet<NodeId>>>,
) {
    let m = raft.metrics();
    let healthy = healthy(node, members);
    for (id, addr) in &healthy {
        if m.nodes.contains_key(id) {
            continue;
        }
        let Ok(mut set) = in_flight.lock() else {
            return;
        };
        if !set.insert(*id) {
            continue;
        }
        drop(set);
        let (store, id, addr, flight) = (raft.clone(), *id, addr.clone(), in_flight.clone());
        tokio::spawn(async move {
            tracing::info!(raft_id = id, %addr, "adding a learner");
            if let Err(e) = store.add_learner(id, &addr).await {
                tracing::warn!(raft_id = id, %addr, error = %e, "adding a learner failed");
            }
            if let Ok(mut set) = flight.lock() {
                set.remove(&id);
            }
        });
    }
    let members_ids: Vec<NodeId> = healthy
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| m.nodes.contains_key(id))
        .collect();
    let desired = desired_voters(&members_ids, &m.voters);
    if desired != m.voters && !desired.is_empty() {
        tracing::info!(from = ?m.voters, to = ?desired, "changing raft voters");
        if let Err(e) = raft.change_voters(desired).await {
            tracing::warn!(error = %e, "changing raft voters failed");
        }
    }
}

/// Readiness and pod CIDRs of every Node (leader only; blocking: store
/// writes).
fn nodes_pass(
    store: &dyn Datastore,
    me: &str,
    members: &[Member],
    unheard_ok: bool,
    cfg: &ManagerConfig,
) -> Result<(), StoreError> {
    let (nodes, _) = store.list(Resource::Nodes, None)?;
    let states: BTreeMap<&str, MemberState> =
        members.iter().map(|m| (m.name.as_str(), m.state)).collect();
    let mut used: BTreeSet<Ipv4Net> = nodes
        .iter()
        .filter_map(|n| n.pointer("/spec/podCIDR")?.as_str()?.parse().ok())
        .collect();
    let now = Timestamp::now();
    for n in &nodes {
        let Some(name) = n.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let key = Key::cluster(Resource::Nodes, name);
        let state = if name == me {
            Some(MemberState::Alive)
        } else {
            states.get(name).copied()
        };
        let want = match (state, readiness(n)) {
            (Some(MemberState::Alive), Readiness::Unknown) => Some((
                "True",
                "KubeletReady",
                "herd agent is alive (gossip)".to_string(),
            )),
            (Some(MemberState::Down), Readiness::Ready) => Some((
                "Unknown",
                "NodeStatusUnknown",
                "gossip declared the node down".to_string(),
            )),
            (Some(MemberState::Left), Readiness::Ready) => Some((
                "Unknown",
                "NodeStatusUnknown",
                "the node left the cluster".to_string(),
            )),
            (None, Readiness::Ready) if !unheard_ok => Some((
                "Unknown",
                "NodeStatusUnknown",
                "gossip has not heard of the node".to_string(),
            )),
            _ => None,
        };
        if let Some((status, reason, message)) = want {
            tracing::info!(node = name, status, %message, "node readiness");
            update_with(store, &key, |mut obj| {
                set_ready(&mut obj, status, reason, &message, now);
                Ok(Some(obj))
            })?;
        }
        if n.pointer("/spec/podCIDR").and_then(Value::as_str).is_none() {
            let Some(block) = free_block(cfg, &used) else {
                tracing::warn!(node = name, cidr = %cfg.cluster_cidr, "no free pod CIDR left");
                continue;
            };
            used.insert(block);
            tracing::info!(node = name, pod_cidr = %block, "assigning a pod CIDR");
            update_with(store, &key, |mut obj| {
                if obj.pointer("/spec/podCIDR").is_some() {
                    return Ok(None);
                }
                obj["spec"]["podCIDR"] = json!(block.to_string());
                obj["spec"]["podCIDRs"] = json!([block.to_string()]);
                Ok(Some(obj))
            })?;
        }
    }
    Ok(())
}

fn set_ready(obj: &mut Value, status: &str, reason: &str, message: &str, now: Timestamp) {
    let t = now.to_string();
    let cond = json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": t, "lastTransitionTime": t,
    });
    let conds = obj["status"]["conditions"].as_array_mut();
    match conds {
        Some(cs) => {
            cs.retain(|c| c.get("type").and_then(Value::as_str) != Some("Ready"));
            cs.insert(0, cond);
        }
        None => obj["status"]["conditions"] = json!([cond]),
    }
}

/// The lowest block of `cfg.node_prefix` in the cluster CIDR not in `used`.
pub fn free_block(cfg: &ManagerConfig, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    cfg.cluster_cidr
        .subnets(cfg.node_prefix)
        .ok()?
        .find(|b| !used.iter().any(|u| u.contains(b) || b.contains(u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_blocks_skip_used_and_overlapping_ones() {
        let cfg = ManagerConfig {
            cluster_cidr: "10.244.0.0/22".parse().unwrap(),
            ..ManagerConfig::default()
        };
        let mut used = BTreeSet::new();
        assert_eq!(
            free_block(&cfg, &used).unwrap().to_string(),
            "10.244.0.0/24"
        );
        used.insert("10.244.0.0/24".parse().unwrap());
        used.insert("10.244.1.0/25".parse().unwrap());
        assert_eq!(
            free_block(&cfg, &used).unwrap().to_string(),
            "10.244.2.0/24"
        );
        used.insert("10.244.2.0/23".parse().unwrap());
        assert_eq!(free_block(&cfg, &used), None);
    }

    #[test]
    fn set_ready_replaces_only_the_ready_condition() {
        let mut n = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"},
        ]}});
        set_ready(
            &mut n,
            "Unknown",
            "NodeStatusUnknown",
            "x",
            Timestamp::now(),
        );
        let cs = n["status"]["conditions"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(readiness(&n), Readiness::Unknown);
    }
}
