//! The contract between the Raft store (`store::raft`) and the node-to-node
//! RPC layer (`cluster::rpc`).
//!
//! The store serializes openraft's requests and responses itself; this
//! layer moves opaque bytes to a peer and back. A `PeerTransport` is the
//! client side (one call, one answer); a `PeerHandler` is what the server
//! side dispatches an incoming call to. An in-memory pair (used by unit
//! tests) and the gRPC pair (mutual TLS, used by the daemon) implement the
//! same traits, so the store never knows which one it runs on.

use std::future::Future;
use std::pin::Pin;

/// A node's identity in Raft and gossip.
pub type NodeId = u64;

/// A boxed future, as the traits below return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// openraft AppendEntries.
    AppendEntries,
    /// openraft Vote.
    Vote,
    /// openraft InstallSnapshot (one chunk).
    InstallSnapshot,
    /// A write forwarded by a follower to the leader.
    ClientWrite,
    /// Membership changes asked of the leader (add learner, change voters).
    Membership,
}

impl RpcKind {
    pub const ALL: [RpcKind; 5] = [
        RpcKind::AppendEntries,
        RpcKind::Vote,
        RpcKind::InstallSnapshot,
        RpcKind::ClientWrite,
        RpcKind::Membership,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RpcKind::AppendEntries => "append-entries",
            RpcKind::Vote => "vote",
            RpcKind::InstallSnapshot => "install-snapshot",
            RpcKind::ClientWrite => "client-write",
            RpcKind::Membership => "membership",
        }
    }
}

/// A call that did not produce an answer from the peer's handler.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Connection refused, timed out, reset: the peer may be down.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The peer answered but refused the call (authentication, no handler,
    /// handler failure).
    #[error("peer {addr} refused {kind}: {reason}")]
    Refused {
        addr: String,
        kind: &'static str,
        reason: String,
    },
}

/// Client side: send one request to the peer at `addr`, get its answer.
pub trait PeerTransport: Send + Sync + std::fmt::Debug + 'static {
    fn call(
        &self,
        addr: &str,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// Server side: answers one incoming call. `Err` is sent back to the
/// caller as `TransportError::Refused` with this message.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}
