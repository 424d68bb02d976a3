//! One Raft node's async core: the write path (propose on the leader or
//! forward to it, then wait for the local apply), membership changes, and
//! views of openraft's metrics.
//!
//! Retries: a write is re-sent only when no leader took it (no leader
//! known, the peer said it is not the leader, the peer was unreachable).
//! Everything is bounded by the configured timeout.

// openraft's error types are large; they are what its API returns.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde_json::Value;
use tokio::time::Instant;

use super::RaftStoreError;
use super::replica::Replica;
use super::types::{Command, ForwardReply, MembershipReply, MembershipRequest, Raft, WireError};
use crate::cluster::transport::{NodeId, PeerTransport, RpcKind};

/// How long to wait for news (a leader, a metrics change) between tries.
const RETRY: Duration = Duration::from_millis(20);

/// Who leads, as the leadership watch reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub leader: Option<NodeId>,
    /// This node is the leader.
    pub is_self: bool,
}

/// A summary of openraft's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftMetricsView {
    pub id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Every member's address.
    pub nodes: BTreeMap<NodeId, String>,
}

/// The node shared by the store, its handler and its background tasks.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub replica: Arc<Replica>,
    pub transport: Arc<dyn PeerTransport>,
    pub write_timeout: Duration,
    pub membership_timeout: Duration,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

impl Node {
    pub fn metrics(&self) -> RaftMetricsView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        RaftMetricsView {
            id: m.id,
            term: m.current_term,
            leader: m.current_leader,
            last_log: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
        }
    }

    pub fn leadership(&self) -> Leadership {
        let m = self.raft.metrics().borrow().clone();
        Leadership {
            term: m.current_term,
            leader: m.current_leader,
            is_self: m.current_leader == Some(self.id),
        }
    }

    /// The leader and its address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let l = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&l)?.addr.clone();
        Some((l, addr))
    }

    async fn wait_change(&self) {
        let mut rx = self.raft.metrics();
        let _ = tokio::time::timeout(RETRY, rx.changed()).await;
    }

    fn timeout(&self, op: &'static str, after: Duration) -> RaftStoreError {
        RaftStoreError::Timeout {
            node: self.id,
            op,
            after,
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), RaftStoreError> {
        let mut rx = self.replica.applied_index();
        match tokio::time::timeout_at(deadline, rx.wait_for(|i| *i >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(RaftStoreError::Shutdown { node: self.id }),
            Err(_) => Err(self.timeout("local apply", self.write_timeout)),
        }
    }

    /// Proposes `cmd` here (this node believes it leads), until `deadline`.
    pub async fn write_on_leader(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<ForwardReply, RaftStoreError> {
        match tokio::time::timeout_at(deadline, self.raft.client_write(cmd)).await {
            Err(_) => Err(self.timeout("write", self.write_timeout)),
            Ok(Ok(resp)) => {
                let outcome = resp.data.outcome.unwrap_or_else(|| {
                    Err(WireError::Backend {
                        path: format!("raft node {}", self.id),
                        reason: "entry produced no outcome".into(),
                    })
                });
                Ok(ForwardReply::Applied {
                    index: resp.log_id.index,
                    outcome,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Ok(ForwardReply::NotLeader {
                    leader: self.leader(),
                })
            }
            Ok(Err(e)) => Err(RaftStoreError::Raft {
                node: self.id,
                reason: e.to_string(),
            }),
        }
    }

    /// A write from this node's caller: the outcome once committed and
    /// applied here.
    pub async fn write(&self, cmd: Command) -> Result<Result<Value, WireError>, RaftStoreError> {
        let deadline = Instant::now() + self.write_timeout;
        let payload = serde_json::to_vec(&cmd).map_err(|e| RaftStoreError::Raft {
            node: self.id,
            reason: format!("encode command: {e}"),
        })?;
        loop {
            if Instant::now() >= deadline {
                return Err(self.timeout("write", self.write_timeout));
            }
            let reply = match self.leader() {
                None => {
                    self.wait_change().await;
                    continue;
                }
                Some((l, _)) if l == self.id => self.write_on_leader(cmd.clone(), deadline).await?,
                Some((_, addr)) => {
                    let call = self
                        .transport
                        .call(&addr, RpcKind::ClientWrite, payload.clone());
                    match tokio::time::timeout_at(deadline, call).await {
                        Err(_) => return Err(self.timeout("write", self.write_timeout)),
                        // The peer may be gone or not serving yet: wait
                        // for the next leader.
                        Ok(Err(_)) => {
                            self.wait_change().await;
                            continue;
                        }
                        Ok(Ok(bytes)) => {
                            serde_json::from_slice::<ForwardReply>(&bytes).map_err(|e| {
                                RaftStoreError::Forward {
                                    node: self.id,
                                    op: "write",
                                    leader: addr.clone(),
                                    reason: format!("bad answer: {e}"),
                                }
                            })?
                        }
                    }
                }
            };
            match reply {
                ForwardReply::Applied { index, outcome } => {
                    self.wait_applied(index, deadline).await?;
                    return Ok(outcome);
                }
                ForwardReply::NotLeader { .. } => self.wait_change().await,
                ForwardReply::Failed { reason } => {
                    return Err(RaftStoreError::Raft {
                        node: self.id,
                        reason,
                    });
                }
            }
        }
    }

    /// Makes this node a one-voter cluster (no-op when already initialized).
    pub async fn initialize_single(&self, addr: &str) -> Result<(), RaftStoreError> {
        let mut members = BTreeMap::new();
        members.insert(self.id, BasicNode::new(addr));
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(RaftStoreError::Membership {
                node: self.id,
                reason: e.to_string(),
            }),
        }
    }

    fn membership_err(&self, e: impl std::fmt::Display) -> RaftStoreError {
        RaftStoreError::Membership {
            node: self.id,
            reason: e.to_string(),
        }
    }

    /// Runs a membership change here (this node believes it leads).
    pub async fn membership_on_leader(
        &self,
        req: MembershipRequest,
    ) -> Result<MembershipReply, RaftStoreError> {
        type Res = Result<
            openraft::raft::ClientWriteResponse<super::types::TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >;
        let not_leader = |r: &Res| {
            matches!(
                r,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
            )
        };
        let work = async {
            let res: Res = match req {
                MembershipRequest::AddLearner { id, addr } => {
                    self.raft.add_learner(id, BasicNode::new(addr), true).await
                }
                MembershipRequest::ChangeVoters { voters } => {
                    self.raft.change_membership(voters, true).await
                }
                MembershipRequest::RemoveNodes { ids } => {
                    let current: BTreeSet<NodeId> = self.metrics().voters;
                    let voters: BTreeSet<NodeId> = current.difference(&ids).copied().collect();
                    if voters != current {
                        self.raft.change_membership(voters, false).await?;
                    }
                    let learners: BTreeSet<NodeId> = self
                        .metrics()
                        .learners
                        .intersection(&ids)
                        .copied()
                        .collect();
                    if learners.is_empty() {
                        return r_ok_noop(self);
                    }
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(learners), false)
                        .await
                }
            };
            res
        };
        match tokio::time::timeout(self.membership_timeout, work).await {
            Err(_) => Err(self.timeout("membership change", self.membership_timeout)),
            Ok(r) if not_leader(&r) => Ok(MembershipReply::NotLeader {
                leader: self.leader(),
            }),
            Ok(Ok(resp)) => Ok(MembershipReply::Done {
                index: resp.log_id.index,
            }),
            Ok(Err(e)) => Err(self.membership_err(e)),
        }
    }

    /// A membership change from this node's caller, forwarded to the
    /// leader if needed; returns once applied here.
    pub async fn membership(&self, req: MembershipRequest) -> Result<(), RaftStoreError> {
        let deadline = Instant::now() + self.membership_timeout;
        let payload = serde_json::to_vec(&req).map_err(|e| self.membership_err(e))?;
        loop {
            if Instant::now() >= deadline {
                return Err(self.timeout("membership change", self.membership_timeout));
            }
            let reply = match self.leader() {
                None => {
                    self.wait_change().await;
                    continue;
                }
                Some((l, _)) if l == self.id => self.membership_on_leader(req.clone()).await?,
                Some((_, addr)) => {
                    let call = self
                        .transport
                        .call(&addr, RpcKind::Membership, payload.clone());
                    match tokio::time::timeout_at(deadline, call).await {
                        Err(_) => {
                            return Err(self.timeout("membership change", self.membership_timeout));
                        }
                        Ok(Err(_)) => {
                            self.wait_change().await;
                            continue;
                        }
                        Ok(Ok(bytes)) => serde_json::from_slice::<MembershipReply>(&bytes)
                            .map_err(|e| self.membership_err(format!("bad answer: {e}")))?,
                    }
                }
            };
            match reply {
                MembershipReply::Done { index } => {
                    return self.wait_applied(index, deadline).await;
                }
                MembershipReply::NotLeader { .. } => self.wait_change().await,
                MembershipReply::Failed { reason } => return Err(self.membership_err(reason)),
            }
        }
    }
}

/// The answer for a removal with nothing left to remove: the current
/// applied position, as a no-op write would report.
fn r_ok_noop(
    node: &Node,
) -> Result<
    openraft::raft::ClientWriteResponse<super::types::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
> {
    let m = node.raft.metrics().borrow().clone();
    let log_id = m.last_applied.unwrap_or_default();
    Ok(openraft::raft::ClientWriteResponse {
        log_id,
        data: Default::default(),
        membership: None,
    })
}
