//! The Raft-replicated [`Datastore`](crate::store::Datastore): every node
//! holds a replica; writes go through the Raft leader.
//!
//! How it works:
//! - Reads (`get`, `list`, `watch`, `revision`) are served from this
//!   node's replica ([`replica`]), with `LocalStore`'s semantics (one
//!   revision counter, resourceVersions, ordered watches with a ring and
//!   `Expired`). A follower's reads may trail the leader by the replication
//!   delay, but never go backwards.
//! - A write becomes a [`types::Command`] log entry: proposed with
//!   `Raft::client_write` on the leader, or forwarded to it with
//!   `RpcKind::ClientWrite`. The outcome (the stored object, or the
//!   `StoreError` the leader's state machine produced, same variant) is
//!   returned once the entry is committed (on a majority's disk) and applied
//!   on the node that accepted the call: read-your-writes holds there.
//! - A write that cannot reach a leader within
//!   [`RaftConfig::write_timeout`] fails with [`RaftStoreError::Timeout`]
//!   (a `StoreError::Backend` through the trait): a node cut off from the
//!   majority refuses writes instead of hanging. A timed-out write may
//!   still commit later (as with etcd); it is never applied twice.
//! - The `Datastore` trait is synchronous. Each store owns a small tokio
//!   runtime (`herd-raft-<id>` threads) that runs openraft, the network and
//!   the write path; a trait call hands the write to it and waits on a std
//!   channel. That works from plain threads, `spawn_blocking` threads and
//!   even async tasks (which are blocked for the write's duration, so async
//!   callers should use `spawn_blocking`, as the API server and kubelet do).
//!   The async methods (membership) run on the store's runtime too.
//!
//! Durability and crashes:
//! - Log, vote and committed index live in `raft-log.redb` ([`log`]);
//!   an append is acknowledged to openraft after its durable commit.
//! - The state machine lives in `state.redb` ([`replica`]): each applied
//!   batch is one atomic redb transaction (objects + revision + last
//!   applied + membership); a crash in the middle of a write leaves the old
//!   or the new state, never a mix, and openraft re-applies committed
//!   entries after restart.
//! - Every [`RaftConfig::snapshot_every`] entries a snapshot is built
//!   ([`snapshot`]), saved atomically, and the log is purged below it
//!   (keeping [`RaftConfig::keep_logs`]): disk use stays bounded. A node
//!   that lags past the purge point is caught up with InstallSnapshot.
//! - Secrets are sealed with the cluster key before they enter the log
//!   ([`secrets`]); without a key, Secret writes are refused.
//!
//! Membership: [`RaftStore::initialize_single`] makes a one-voter cluster
//! (the same code path as a big one); [`RaftStore::add_learner`],
//! [`RaftStore::change_voters`] and [`RaftStore::remove_nodes`] run on the
//! leader (forwarded with `RpcKind::Membership` from a follower);
//! [`voters::desired_voters`] is the voter policy.

pub mod handler;
pub mod log;
pub mod mem;
pub mod network;
pub mod node;
pub mod replica;
pub mod secrets;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod types;
pub mod voters;

use std::path::PathBuf;
use std::time::Duration;

pub use mem::{MemRouter, MemTransport};
pub use node::{Leadership, RaftMetricsView};
pub use store::RaftStore;
pub use voters::desired_voters;

use crate::cluster::transport::NodeId;
use crate::store::StoreError;

/// How a Raft store node runs.
#[derive(Clone)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// The address peers reach this node at (given to the transport).
    pub addr: String,
    /// Holds `raft-log.redb`, `state.redb` and `snapshots/`.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// An election starts after a random silence in this range.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot (and purge the log) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log below the last snapshot.
    pub keep_logs: u64,
    /// Bound on one write (finding the leader, commit, local apply).
    pub write_timeout: Duration,
    /// Bound on one membership change (a new learner catching up).
    pub membership_timeout: Duration,
    /// The cluster key: seals Secrets before they enter the log.
    pub cluster_key: Option<[u8; 32]>,
    /// Threads of the store's own runtime.
    pub worker_threads: usize,
}

impl std::fmt::Debug for RaftConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftConfig")
            .field("node_id", &self.node_id)
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("heartbeat", &self.heartbeat)
            .field("election_timeout", &self.election_timeout)
            .field("snapshot_every", &self.snapshot_every)
            .field("keep_logs", &self.keep_logs)
            .field("write_timeout", &self.write_timeout)
            .field("cluster_key", &self.cluster_key.map(|_| "<set>"))
            .finish()
    }
}

impl RaftConfig {
    /// Defaults chosen for failover well under 2 s: heartbeat 100 ms,
    /// election after 300-600 ms of silence; a snapshot every 1,000 entries.
    pub fn new(node_id: NodeId, addr: &str, data_dir: impl Into<PathBuf>) -> RaftConfig {
        RaftConfig {
            node_id,
            addr: addr.to_string(),
            data_dir: data_dir.into(),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            snapshot_every: 1000,
            keep_logs: 100,
            write_timeout: Duration::from_secs(5),
            membership_timeout: Duration::from_secs(30),
            cluster_key: None,
            worker_threads: 2,
        }
    }
}

/// Raft store failures (beyond the `StoreError`s of the data itself).
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("raft store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("raft node {node}: {reason}")]
    Raft { node: NodeId, reason: String },
    #[error("raft node {node}: {op} timed out after {after:?} (no reachable leader or no quorum)")]
    Timeout {
        node: NodeId,
        op: &'static str,
        after: Duration,
    },
    #[error("raft node {node}: forwarding {op} to leader {leader} failed: {reason}")]
    Forward {
        node: NodeId,
        op: &'static str,
        leader: String,
        reason: String,
    },
    #[error("raft node {node}: membership change failed: {reason}")]
    Membership { node: NodeId, reason: String },
    #[error("raft node {node}: secrets need the cluster key")]
    NoClusterKey { node: NodeId },
    #[error("raft node {node} is shut down")]
    Shutdown { node: NodeId },
}

impl RaftStoreError {
    fn node(&self) -> String {
        match self {
            RaftStoreError::Open { path, .. } => path.clone(),
            RaftStoreError::Raft { node, .. }
            | RaftStoreError::Timeout { node, .. }
            | RaftStoreError::Forward { node, .. }
            | RaftStoreError::Membership { node, .. }
            | RaftStoreError::NoClusterKey { node }
            | RaftStoreError::Shutdown { node } => format!("raft node {node}"),
        }
    }
}

impl From<RaftStoreError> for StoreError {
    fn from(e: RaftStoreError) -> StoreError {
        match e {
            RaftStoreError::Timeout { .. } => StoreError::Timeout {
                reason: e.to_string(),
            },
            _ => StoreError::Backend {
                path: e.node(),
                reason: e.to_string(),
            },
        }
    }
}
