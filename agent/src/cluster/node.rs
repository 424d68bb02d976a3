//! One node of a herd cluster: its identity, the Raft store, the RPC
//! server and gossip, started together ([`ClusterNode::start`]).
//!
//! - The Raft store (`<root>/raft`) talks to peers through
//!   [`GrpcTransport`] (mutual TLS); the [`RpcServer`] on the peer port
//!   serves the store's handler and the Join service (every member holds
//!   the CA, so any member admits new nodes).
//! - Gossip (UDP, sealed with the cluster key) carries each node's name and
//!   peer address; the Raft leader turns gossip into membership
//!   ([`super::manager`]).
//! - A node's Raft id is derived from its name ([`raft_id`]), so a node
//!   keeps its id across restarts and every member computes the same id
//!   from a gossip name.
//! - `--init` makes a one-voter cluster; a joining node waits until the
//!   leader has added it ([`ClusterNode::wait_member`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::bootstrap::{Bootstrap, BootstrapError, Identity, Origin, prepare};
use super::gossip::{Capacity, Gossip, GossipConfig, GossipError, MemberState, NodeMeta, Tuning};
use super::rpc::{GrpcTransport, JoinService, PeerService, RpcError, RpcServer, TransportOptions};
use super::transport::NodeId;
use crate::store::etcd::{Election, EtcdConfig, EtcdStore};
use crate::store::raft::{Leadership, RaftConfig, RaftStore, RaftStoreError};
use crate::store::{Datastore, StoreError};

/// How this node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `<root>/cluster`: identity and secrets.
    pub dir: PathBuf,
    /// `<root>/raft`: log, state machine, snapshots.
    pub raft_dir: PathBuf,
    pub node_name: String,
    /// The address peers use for this node.
    pub advertise: IpAddr,
    pub peer_port: u16,
    pub gossip_port: u16,
    pub bootstrap: Bootstrap,
    pub capacity: Capacity,
    /// Gossip tuning (probe period, suspicion).
    pub tuning: Tuning,
    /// An external etcd instead of the embedded Raft store, with the TTL of
    /// the leader election's leases.
    pub etcd: Option<(EtcdConfig, Duration)>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("node-to-node rpc")]
    Rpc(#[from] RpcError),
    #[error("raft store")]
    Raft(#[from] RaftStoreError),
    #[error("etcd datastore")]
    Etcd(#[from] StoreError),
    #[error("gossip")]
    Gossip(#[from] GossipError),
    #[error("{0}")]
    Other(String),
}

/// The Raft id of the node named `name`: the first 8 bytes of its SHA-256,
/// never 0.
pub fn raft_id(name: &str) -> NodeId {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b).max(1)
}

/// What replicates the store: the embedded Raft group, or etcd (with the
/// election that picks the leader).
#[derive(Debug)]
pub enum Replication {
    Raft(Arc<RaftStore>),
    Etcd {
        store: EtcdStore,
        election: Arc<Election>,
    },
}

/// The key that ties an etcd prefix to one cluster (its CA's hash).
const CLUSTER_MARKER: &str = "_cluster";

/// A running cluster node.
#[derive(Debug)]
pub struct ClusterNode {
    pub name: String,
    pub id: NodeId,
    /// The store every part of the node uses.
    pub store: Arc<dyn Datastore>,
    pub replication: Replication,
    pub gossip: Arc<Gossip>,
    pub identity: Identity,
    pub peer_addr: SocketAddr,
    rpc: tokio::sync::Mutex<Option<RpcServer>>,
}

impl ClusterNode {
    /// Sets up the identity, opens the Raft store, starts the RPC server
    /// and gossip. A new cluster (`--init`) is initialized as one voter.
    pub async fn start(cfg: ClusterConfig) -> Result<ClusterNode, ClusterError> {
        let identity = prepare(&cfg.dir, &cfg.bootstrap, &cfg.node_name, &[cfg.advertise]).await?;
        let peer_addr = SocketAddr::new(cfg.advertise, cfg.peer_port);
        let ca_pem = identity.secrets.ca().cert_pem().to_owned();
        let id = raft_id(&cfg.node_name);
        let replication = match &cfg.etcd {
            None => {
                let transport =
                    GrpcTransport::new(&ca_pem, &identity.node, TransportOptions::default())?;
                let mut raft_cfg = RaftConfig::new(id, &peer_addr.to_string(), &cfg.raft_dir);
                raft_cfg.cluster_key = Some(*identity.secrets.cluster_key());
                let store = tokio::task::spawn_blocking(move || {
                    RaftStore::open(raft_cfg, Arc::new(transport))
                })
                .await
                .map_err(|e| ClusterError::Other(format!("opening the raft store: {e}")))??;
                Replication::Raft(Arc::new(store))
            }
            Some((ecfg, ttl)) => {
                let (ecfg, hash) = (ecfg.clone(), identity.secrets.ca().hash_hex());
                let store = tokio::task::spawn_blocking(move || {
                    let store = EtcdStore::connect(ecfg)?;
                    claim_prefix(&store, &hash)?;
                    Ok::<_, ClusterError>(store)
                })
                .await
                .map_err(|e| ClusterError::Other(format!("connecting to etcd: {e}")))??;
                let election = Arc::new(Election::start(&store, &cfg.node_name, *ttl));
                Replication::Etcd { store, election }
            }
        };
        let store: Arc<dyn Datastore> = match &replication {
            Replication::Raft(r) => r.clone(),
            Replication::Etcd { store, .. } => Arc::new(store.clone()),
        };
        let meta = NodeMeta {
            name: cfg.node_name.clone(),
            rpc_addr: peer_addr.to_string(),
            api_addr: String::new(),
            pod_cidr: String::new(),
            capacity: cfg.capacity,
            labels: Vec::new(),
            taints: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut gcfg = GossipConfig::new(
            SocketAddr::new(cfg.advertise, cfg.gossip_port),
            *identity.secrets.cluster_key(),
            meta,
        );
        gcfg.seeds = identity
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != gcfg.bind)
            .collect();
        gcfg.tuning = cfg.tuning.clone();
        let gossip = Arc::new(Gossip::start(gcfg).await?);
        let members = {
            let g = gossip.clone();
            Arc::new(move || {
                g.members()
                    .into_iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .map(|m| m.addr.to_string())
                    .collect::<Vec<_>>()
            })
        };
        let rpc = RpcServer::start(
            SocketAddr::new(cfg.advertise, cfg.peer_port),
            &ca_pem,
            &identity.node,
            PeerService::new(match &replication {
                Replication::Raft(r) => r.handler(),
                Replication::Etcd { .. } => Arc::new(NoRaft),
            }),
            Some(JoinService::new(identity.secrets.clone(), members)),
        )
        .await?;
        if identity.origin == Origin::Created {
            if let Replication::Raft(r) = &replication {
                r.initialize_single().await?;
            }
            tracing::info!(
                node = %cfg.node_name,
                token_file = %cfg.dir.join("token").display(),
                "created a new cluster; other nodes join with --join {peer_addr} --token <the token file's content>"
            );
        }
        Ok(ClusterNode {
            name: cfg.node_name,
            id,
            store,
            replication,
            gossip,
            identity,
            peer_addr,
            rpc: tokio::sync::Mutex::new(Some(rpc)),
        })
    }

    /// Gossips this node's metadata again with what the store assigned:
    /// its pod CIDR, and the labels and taints of its Node object.
    pub async fn publish_node(&self, node: &Value, api_addr: Option<SocketAddr>) {
        let mut meta = self
            .gossip
            .members()
            .into_iter()
            .find(|m| m.name == self.name)
            .map(|m| m.meta)
            .unwrap_or_default();
        if let Some(cidr) = node.pointer("/spec/podCIDR").and_then(Value::as_str) {
            meta.pod_cidr = cidr.to_string();
        }
        if let Some(a) = api_addr {
            meta.api_addr = a.to_string();
        }
        meta.labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        meta.taints = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| super::gossip::Taint {
                        key: t["key"].as_str().unwrap_or("").to_string(),
                        value: t["value"].as_str().unwrap_or("").to_string(),
                        effect: t["effect"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Err(e) = self.gossip.set_meta(meta).await {
            tracing::warn!(error = %e, "gossiping this node's metadata");
        }
    }

    /// The Raft store, unless the store is etcd.
    pub fn raft(&self) -> Option<&Arc<RaftStore>> {
        match &self.replication {
            Replication::Raft(r) => Some(r),
            Replication::Etcd { .. } => None,
        }
    }

    /// Who leads (Raft's leader, or etcd's election winner).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        match &self.replication {
            Replication::Raft(r) => r.leadership(),
            Replication::Etcd { election, .. } => election.leadership(),
        }
    }

    pub fn is_leader(&self) -> bool {
        match &self.replication {
            Replication::Raft(r) => r.is_leader(),
            Replication::Etcd { election, .. } => election.is_leader(),
        }
    }

    /// The store the leader's workers write through during the current
    /// term. Raft refuses a deposed leader's writes itself; on etcd the
    /// store is fenced on this term's election key.
    pub fn leader_store(&self) -> Arc<dyn Datastore> {
        match &self.replication {
            Replication::Raft(r) => r.clone(),
            Replication::Etcd { store, election } => match election.fence() {
                Some(f) => Arc::new(store.fenced(f)),
                // Not (or no longer) leading: every write is refused.
                None => Arc::new(store.fenced(crate::store::etcd::Fence::never())),
            },
        }
    }

    /// Waits until this node is a member of the Raft group and knows a
    /// leader (a joining node: until the leader has added it). On etcd the
    /// node is a member once connected.
    pub async fn wait_member(&self, timeout: Duration) -> Result<(), ClusterError> {
        let Some(raft) = self.raft() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let mut last_log = Instant::now();
        loop {
            let m = raft.metrics();
            if m.nodes.contains_key(&self.id) && m.leader.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Other(format!(
                    "not added to the raft group within {timeout:?} (leader {:?}, members {:?}); is the leader reachable on its peer port, and this node's gossip port reachable from it?",
                    m.leader,
                    m.nodes.values().collect::<Vec<_>>()
                )));
            }
            if last_log.elapsed() > Duration::from_secs(5) {
                tracing::info!("waiting to be added to the raft group");
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /debug/cluster`: leader, term, voters, learners (or the etcd
    /// endpoints), gossip view.
    pub fn status(&self) -> Value {
        let names: std::collections::HashMap<NodeId, String> = self
            .gossip
            .members()
            .into_iter()
            .map(|g| (raft_id(&g.name), g.name))
            .collect();
        let name_of = |id: &NodeId| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        let members: Vec<Value> = self
            .gossip
            .members()
            .into_iter()
            .map(|g| {
                json!({
                    "name": g.name,
                    "state": format!("{:?}", g.state).to_lowercase(),
                    "addr": g.addr.to_string(),
                    "peerAddr": g.meta.rpc_addr,
                    "podCIDR": g.meta.pod_cidr,
                    "version": g.meta.version,
                    "capacity": {"cpuMillis": g.meta.capacity.cpu_millis,
                                 "memoryBytes": g.meta.capacity.memory_bytes,
                                 "pods": g.meta.capacity.pods},
                })
            })
            .collect();
        let s = self.gossip.stats();
        let gossip = json!({
            "received": s.received, "accepted": s.accepted,
            "droppedAuth": s.dropped_auth, "droppedDecode": s.dropped_decode,
            "dropped": s.dropped_auth + s.dropped_decode, "sent": s.sent,
        });
        match &self.replication {
            Replication::Raft(raft) => {
                let m = raft.metrics();
                json!({
                    "node": self.name,
                    "raftId": self.id,
                    "datastore": "raft",
                    "leader": m.leader.as_ref().map(name_of),
                    "isLeader": m.leader == Some(self.id),
                    "term": m.term,
                    "lastApplied": m.last_applied,
                    "voters": m.voters.iter().map(name_of).collect::<Vec<_>>(),
                    "learners": m.learners.iter().map(name_of).collect::<Vec<_>>(),
                    "members": members,
                    "gossip": gossip,
                })
            }
            Replication::Etcd { store, election } => {
                let leading = election.is_leader();
                let leader = election.leader();
                json!({
                    "node": self.name,
                    "raftId": self.id,
                    "datastore": "etcd",
                    "etcd": {"endpoints": store.endpoints(), "prefix": store.prefix(),
                             "election": election.key()},
                    "leader": if leading { Some(self.name.clone()) } else { leader.as_ref().map(|l| l.0.clone()) },
                    "isLeader": leading,
                    "term": leader.map_or(0, |l| l.1),
                    "members": members,
                    "gossip": gossip,
                })
            }
        }
    }

    /// Stops the RPC server and the store: Raft, or on etcd the election
    /// (a leader resigns, so the next one takes over at once). Gossip stops
    /// when dropped; peers then detect the node as down, as after a crash:
    /// a restart is not a departure.
    pub async fn shutdown(&self) {
        if let Some(rpc) = self.rpc.lock().await.take()
            && let Err(e) = rpc.shutdown().await
        {
            tracing::warn!(error = %e, "rpc server shutdown");
        }
        match &self.replication {
            Replication::Raft(raft) => {
                let store = raft.clone();
                let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
            }
            Replication::Etcd { election, .. } => election.resign().await,
        }
    }
}

/// The peer handler of a node without Raft: it refuses Raft traffic.
struct NoRaft;

impl super::transport::PeerHandler for NoRaft {
    fn handle(
        &self,
        _kind: super::transport::RpcKind,
        _payload: Vec<u8>,
    ) -> super::transport::BoxFuture<'static, Result<Vec<u8>, String>> {
        Box::pin(async { Err("this node's store is etcd: it takes no raft traffic".to_string()) })
    }
}

/// Ties the etcd prefix to this cluster (its CA): the first node to start
/// on it claims it; a node of another cluster is refused.
fn claim_prefix(store: &EtcdStore, ca_hash: &str) -> Result<(), ClusterError> {
    let key = format!("{}/{CLUSTER_MARKER}", store.prefix());
    if store.create_raw(&key, ca_hash.as_bytes().to_vec())? {
        tracing::info!(prefix = %store.prefix(), "claimed the etcd prefix for this cluster");
        return Ok(());
    }
    match store.get_raw(&key)? {
        Some(v) if v == ca_hash.as_bytes() => Ok(()),
        Some(v) => Err(ClusterError::Other(format!(
            "etcd prefix {:?} belongs to another herd cluster (CA {}); use another --datastore-prefix, or remove that cluster's keys",
            store.prefix(),
            String::from_utf8_lossy(&v)
        ))),
        None => Err(ClusterError::Other(format!(
            "etcd prefix {:?}: the cluster marker vanished while claiming it",
            store.prefix()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_are_stable_distinct_and_nonzero() {
        assert_eq!(raft_id("node-1"), raft_id("node-1"));
        assert_ne!(raft_id("node-1"), raft_id("node-2"));
        assert_ne!(raft_id(""), 0);
    }
}
