//! The `Peer` service: dispatches authenticated calls to a [`PeerHandler`].

use std::sync::Arc;

use herd_proto::v1::{PeerRequest, PeerResponse, peer_server::Peer};
use tonic::{Request, Response, Status};

use crate::cluster::transport::PeerHandler;

/// Serves `herd.v1.Peer`: only calls that came with a client certificate
/// (verified against the cluster CA by the TLS layer) reach the handler.
pub struct PeerService {
    handler: Arc<dyn PeerHandler>,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService").finish_non_exhaustive()
    }
}

impl PeerService {
    pub fn new(handler: Arc<dyn PeerHandler>) -> Self {
        Self { handler }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn call(&self, request: Request<PeerRequest>) -> Result<Response<PeerResponse>, Status> {
        let has_cert = request.peer_certs().is_some_and(|certs| !certs.is_empty());
        if !has_cert {
            tracing::warn!(remote = ?request.remote_addr(), "peer call without a client certificate refused");
            return Err(Status::unauthenticated(
                "a client certificate issued by the cluster CA is required",
            ));
        }
        let msg = request.into_inner();
        let kind = super::kind_from_wire(msg.kind)
            .ok_or_else(|| Status::invalid_argument(format!("unknown rpc kind {}", msg.kind)))?;
        match self.handler.handle(kind, msg.payload).await {
            Ok(payload) => Ok(Response::new(PeerResponse { payload })),
            Err(reason) => Err(Status::aborted(reason)),
        }
    }
}
