//! [`RaftStore`]: the public face — opening a node, the `Datastore`
//! methods, membership, leadership and metrics, shutdown.
//!
//! The store owns its tokio runtime (see the module docs of
//! [`super`]): synchronous callers hand work to it and wait on a std
//! channel ([`RaftStore::block`]); async methods spawn onto it and await.
//! [`RaftStore::shutdown`] (and dropping the store outside a runtime) stops
//! openraft and the runtime and waits, so the files can be opened again at
//! once; dropping it inside a runtime stops them without waiting.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::handler::RaftHandler;
use super::log::LogStore;
use super::network::NetworkFactory;
use super::node::{Leadership, Node, RaftMetricsView};
use super::replica::Replica;
use super::secrets::Sealer;
use super::snapshot::SnapshotDir;
use super::state::StateMachine;
use super::types::{Command, MembershipRequest, Raft, WireKey};
use super::{RaftConfig, RaftStoreError};
use crate::api::Resource;
use crate::cluster::transport::{NodeId, PeerHandler, PeerTransport};
use crate::store::{Datastore, Key, StoreError, WatchStream};

/// The Raft-replicated store of one node.
pub struct RaftStore {
    node: Arc<Node>,
    addr: String,
    sealer: Option<Sealer>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    leadership: watch::Receiver<Leadership>,
}

impl std::fmt::Debug for RaftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("id", &self.node.id)
            .field("addr", &self.addr)
            .finish()
    }
}

fn open_err(path: &std::path::Path, e: impl std::fmt::Display) -> RaftStoreError {
    RaftStoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Runs `fut` on `handle` and waits for it from any thread.
fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    node: NodeId,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, RaftStoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| RaftStoreError::Shutdown { node })
}

impl RaftStore {
    /// Opens (or creates) the node's files under `cfg.data_dir` and starts
    /// openraft. A fresh node is not a member of anything until
    /// [`RaftStore::initialize_single`] or a leader adds it.
    pub fn open(
        cfg: RaftConfig,
        transport: Arc<dyn PeerTransport>,
    ) -> Result<RaftStore, RaftStoreError> {
        let dir = &cfg.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
        let log_path = dir.join("raft-log.redb");
        let log = LogStore::open(&log_path).map_err(|e| open_err(&log_path, e))?;
        let sealer = cfg.cluster_key.as_ref().map(Sealer::new);
        let replica = Arc::new(
            Replica::open(&dir.join("state.redb"), sealer.clone())
                .map_err(|e| open_err(&dir.join("state.redb"), e))?,
        );
        let sm = StateMachine::new(replica.clone(), SnapshotDir::new(&dir.join("snapshots")));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "herd".into(),
            heartbeat_interval: ms(cfg.heartbeat),
            election_timeout_min: ms(cfg.election_timeout.0),
            election_timeout_max: ms(cfg.election_timeout.1),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftStoreError::Raft {
            node: cfg.node_id,
            reason: format!("config: {e}"),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads.max(1))
            .thread_name(format!("herd-raft-{}", cfg.node_id))
            .enable_all()
            .build()
            .map_err(|e| RaftStoreError::Raft {
                node: cfg.node_id,
                reason: format!("runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let network = NetworkFactory::new(transport.clone());
        let id = cfg.node_id;
        let raft = block_on(&handle, id, async move {
            Raft::new(id, Arc::new(config), network, log, sm).await
        })?
        .map_err(|e| RaftStoreError::Raft {
            node: id,
            reason: e.to_string(),
        })?;
        let node = Arc::new(Node {
            id,
            raft,
            replica,
            transport,
            write_timeout: cfg.write_timeout,
            membership_timeout: cfg.membership_timeout,
        });
        let (tx, leadership) = watch::channel(node.leadership());
        let watcher = node.clone();
        handle.spawn(async move {
            let mut metrics = watcher.raft.metrics();
            loop {
                let now = watcher.leadership();
                tx.send_if_modified(|cur| {
                    let changed = *cur != now;
                    *cur = now;
                    changed
                });
                if metrics.changed().await.is_err() || tx.is_closed() {
                    break;
                }
            }
        });
        Ok(RaftStore {
            node,
            addr: cfg.addr,
            sealer,
            runtime: Mutex::new(Some(runtime)),
            handle,
            leadership,
        })
    }

    pub fn id(&self) -> NodeId {
        self.node.id
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Answers this node's incoming peer calls; register it with the
    /// transport's server side.
    pub fn handler(&self) -> Arc<dyn PeerHandler> {
        Arc::new(RaftHandler::new(&self.node))
    }

    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, RaftStoreError> {
        block_on(&self.handle, self.node.id, fut)
    }

    async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, RaftStoreError>> + Send + 'static,
    ) -> Result<T, RaftStoreError> {
        self.handle
            .spawn(fut)
            .await
            .map_err(|_| RaftStoreError::Shutdown { node: self.node.id })?
    }

    /// Makes this node a one-voter cluster; a no-op when it already
    /// belongs to one.
    pub async fn initialize_single(&self) -> Result<(), RaftStoreError> {
        let node = self.node.clone();
        let addr = self.addr.clone();
        self.run(async move { node.initialize_single(&addr).await })
            .await
    }

    /// Adds a non-voting member and waits until it has caught up.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), RaftStoreError> {
        let req = MembershipRequest::AddLearner {
            id,
            addr: addr.to_string(),
        };
        self.membership(req).await
    }

    /// Makes exactly `voters` the voters (each must already be a member);
    /// removed voters stay as learners.
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), RaftStoreError> {
        self.membership(MembershipRequest::ChangeVoters { voters })
            .await
    }

    /// Removes nodes from the cluster entirely (voters and learners).
    pub async fn remove_nodes(&self, ids: BTreeSet<NodeId>) -> Result<(), RaftStoreError> {
        self.membership(MembershipRequest::RemoveNodes { ids })
            .await
    }

    async fn membership(&self, req: MembershipRequest) -> Result<(), RaftStoreError> {
        let node = self.node.clone();
        self.run(async move { node.membership(req).await }).await
    }

    /// The leader and its address, as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.node.leader()
    }

    pub fn is_leader(&self) -> bool {
        self.node.leadership().is_self
    }

    pub fn metrics(&self) -> RaftMetricsView {
        self.node.metrics()
    }

    /// Changes of leadership (term, leader, whether it is this node).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Stops openraft, makes the replica durable and stops the runtime,
    /// waiting (bounded) for its tasks, so the node's files can be opened
    /// again at once. Call from a non-async thread (or `spawn_blocking`);
    /// dropping the store does this too when not inside a runtime.
    pub fn shutdown(&self) {
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(rt) = rt else { return };
        let raft = self.node.raft.clone();
        let _ = self.block(async move { raft.shutdown().await });
        if let Err(e) = self.node.replica.flush() {
            tracing::warn!(node = self.node.id, error = %e, "raft store: flush on shutdown");
        }
        rt.shutdown_timeout(Duration::from_secs(2));
    }

    fn write(&self, key: &Key, cmd: Command) -> Result<Value, StoreError> {
        let node = self.node.clone();
        let outcome = self.block(async move { node.write(cmd).await })??;
        let object = outcome.map_err(StoreError::from)?;
        super::secrets::open_with(self.sealer.as_ref(), key, object)
    }

    fn seal(&self, key: &Key, object: Value) -> Result<Value, StoreError> {
        if key.resource != Resource::Secrets {
            return Ok(object);
        }
        match &self.sealer {
            Some(s) => s.seal(key, object),
            None => Err(RaftStoreError::NoClusterKey { node: self.node.id }.into()),
        }
    }
}

impl Drop for RaftStore {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.shutdown();
            return;
        }
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = rt {
            // Inside a runtime nothing may block: stop without waiting.
            rt.shutdown_background();
        }
    }
}

impl Datastore for RaftStore {
    fn get(&self, key: &Key) -> Result<Value, StoreError> {
        self.node.replica.get(key)
    }

    fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        self.node.replica.list(resource, namespace)
    }

    fn create(&self, key: &Key, object: Value) -> Result<Value, StoreError> {
        let object = self.seal(key, object)?;
        let cmd = Command::Create {
            key: WireKey::from(key),
            object,
        };
        self.write(key, cmd)
    }

    fn update(&self, key: &Key, object: Value, expected: Option<u64>) -> Result<Value, StoreError> {
        let object = self.seal(key, object)?;
        let cmd = Command::Update {
            key: WireKey::from(key),
            object,
            expected,
        };
        self.write(key, cmd)
    }

    fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Value, StoreError> {
        let cmd = Command::Delete {
            key: WireKey::from(key),
            expected,
        };
        self.write(key, cmd)
    }

    fn list_page(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
        revision: Option<u64>,
    ) -> Result<Option<crate::store::ListPage>, StoreError> {
        self.node
            .replica
            .list_page(resource, namespace, after, limit, revision)
            .map(Some)
    }

    fn watch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStream, StoreError> {
        self.node.replica.watch(resource, namespace, since)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.node.replica.revision())
    }
}
