//! openraft's network over a [`PeerTransport`]: each Raft RPC is one
//! `call` carrying the serde_json request; the answer is the peer Raft's
//! `Result` (its `Fatal` error for append/vote, its `RaftError` for
//! snapshots), so a remote Raft error reaches openraft as `RemoteError`.
//! A transport failure is `Unreachable` (openraft backs off and retries);
//! an answer that does not decode is a `Network` error. Every call is
//! bounded by openraft's per-RPC deadline.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::TypeConfig;
use crate::cluster::transport::{NodeId, PeerTransport, RpcKind, TransportError};

/// A transport-level failure, as an error type openraft can carry.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{kind} to {addr} timed out after {after:?}")]
    Timeout {
        kind: &'static str,
        addr: String,
        after: Duration,
    },
    #[error("{kind} from {addr}: bad answer: {reason}")]
    Decode {
        kind: &'static str,
        addr: String,
        reason: String,
    },
}

/// Makes one [`Network`] per peer.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    transport: Arc<dyn PeerTransport>,
}

impl NetworkFactory {
    pub fn new(transport: Arc<dyn PeerTransport>) -> NetworkFactory {
        NetworkFactory { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// The client to one peer.
#[derive(Debug)]
pub struct Network {
    transport: Arc<dyn PeerTransport>,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Network {
    /// One call; the peer answers `Result<Resp, W>` and `W` becomes the
    /// Raft error `E` with `into`.
    async fn call<Req, Resp, W, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        ttl: Duration,
        into: impl FnOnce(W) -> RaftError<NodeId, E>,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        W: DeserializeOwned,
        E: std::error::Error,
    {
        let decode = |reason: String| NetError::Decode {
            kind: kind.as_str(),
            addr: self.addr.clone(),
            reason,
        };
        let payload = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&decode(e.to_string()))))?;
        let answer =
            tokio::time::timeout(ttl, self.transport.call(&self.addr, kind, payload)).await;
        let bytes = match answer {
            Err(_) => {
                let e = NetError::Timeout {
                    kind: kind.as_str(),
                    addr: self.addr.clone(),
                    after: ttl,
                };
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => {
                let e = NetError::from(e);
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Ok(b)) => b,
        };
        let res: Result<Resp, W> = serde_json::from_slice(&bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&decode(e.to_string()))))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, into(e))))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(
            RpcKind::AppendEntries,
            &rpc,
            option.hard_ttl(),
            RaftError::<NodeId>::Fatal,
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RpcKind::InstallSnapshot, &rpc, option.hard_ttl(), |e| e)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(
            RpcKind::Vote,
            &rpc,
            option.hard_ttl(),
            RaftError::<NodeId>::Fatal,
        )
        .await
    }
}
