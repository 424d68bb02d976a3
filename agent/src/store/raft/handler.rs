//! Answers peers' calls ([`PeerHandler`]): Raft RPCs go to openraft,
//! forwarded writes and membership changes run on this node if it leads
//! (else the answer names the leader).
//!
//! A payload that does not decode is refused with a message (`Err`), never
//! a panic. The handler holds the node weakly: once the store is shut down
//! every call is refused, and a transport that keeps the handler does not
//! keep the node's files open.

use std::sync::{Arc, Weak};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tokio::time::Instant;

use super::node::Node;
use super::types::{Command, ForwardReply, MembershipReply, MembershipRequest, TypeConfig};
use crate::cluster::transport::{BoxFuture, NodeId, PeerHandler, RpcKind};

/// The store's handler; see the module docs.
#[derive(Debug)]
pub struct RaftHandler {
    node: Weak<Node>,
}

impl RaftHandler {
    pub fn new(node: &Arc<Node>) -> RaftHandler {
        RaftHandler {
            node: Arc::downgrade(node),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(kind: RpcKind, payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| format!("bad {} request: {e}", kind.as_str()))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| format!("encode answer: {e}"))
}

async fn handle(node: Arc<Node>, kind: RpcKind, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    match kind {
        RpcKind::AppendEntries => {
            let req: AppendEntriesRequest<TypeConfig> = decode(kind, &payload)?;
            let res = node
                .raft
                .append_entries(req)
                .await
                .map_err(|e| fatal(e.into_fatal()));
            encode(&res)
        }
        RpcKind::Vote => {
            let req: VoteRequest<NodeId> = decode(kind, &payload)?;
            let res = node.raft.vote(req).await.map_err(|e| fatal(e.into_fatal()));
            encode(&res)
        }
        RpcKind::InstallSnapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(kind, &payload)?;
            encode(&node.raft.install_snapshot(req).await)
        }
        RpcKind::ClientWrite => {
            let cmd: Command = decode(kind, &payload)?;
            let deadline = Instant::now() + node.write_timeout;
            let reply = match node.leader() {
                Some((l, _)) if l == node.id => node
                    .write_on_leader(cmd, deadline)
                    .await
                    .unwrap_or_else(|e| ForwardReply::Failed {
                        reason: e.to_string(),
                    }),
                leader => ForwardReply::NotLeader { leader },
            };
            encode(&reply)
        }
        RpcKind::Membership => {
            let req: MembershipRequest = decode(kind, &payload)?;
            let reply = match node.leader() {
                Some((l, _)) if l == node.id => node
                    .membership_on_leader(req)
                    .await
                    .unwrap_or_else(|e| MembershipReply::Failed {
                        reason: e.to_string(),
                    }),
                leader => MembershipReply::NotLeader { leader },
            };
            encode(&reply)
        }
    }
}

/// A `RaftError<_, Infallible>` is always `Fatal`; keep it as such.
fn fatal(f: Option<openraft::error::Fatal<NodeId>>) -> openraft::error::Fatal<NodeId> {
    f.unwrap_or(openraft::error::Fatal::Stopped)
}

impl PeerHandler for RaftHandler {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let node = self.node.upgrade();
        Box::pin(async move {
            let Some(node) = node else {
                return Err("raft node is shut down".to_string());
            };
            handle(node, kind, payload).await
        })
    }
}
