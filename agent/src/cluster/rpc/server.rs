//! The node's RPC server: `Peer` (and `Join` where the CA key is held) on
//! one TLS listener. Its certificate chain is the node certificate followed
//! by the CA certificate, so joining clients can pin the CA.

use std::net::SocketAddr;
use std::time::Duration;

use herd_proto::MAX_MESSAGE_BYTES;
use herd_proto::v1::{join_server::JoinServer, peer_server::PeerServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::{JoinService, PeerService};
use crate::cluster::pki::{NodeCert, PkiError, ca_der_from_pem};

/// A handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Setting up or running the RPC server or client failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("rpc server on {addr}: {reason}")]
    Serve { addr: SocketAddr, reason: String },
}

/// A running server; stops on [`RpcServer::shutdown`] or when dropped.
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RpcServer {
    /// Binds `listen` (port 0 picks one) and serves `peer`, plus `join` if
    /// given, with TLS identity `node` under the CA `ca_cert_pem`.
    pub async fn start(
        listen: SocketAddr,
        ca_cert_pem: &str,
        node: &NodeCert,
        peer: PeerService,
        join: Option<JoinService>,
    ) -> Result<Self, RpcError> {
        super::ensure_crypto_provider();
        ca_der_from_pem(ca_cert_pem)?;
        node.cert_der()?;
        let chain = format!("{}\n{}", node.cert_pem().trim_end(), ca_cert_pem.trim_end());
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(chain, node.key_pem()))
            .client_ca_root(Certificate::from_pem(ca_cert_pem))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT);
        let mut builder = Server::builder()
            .tls_config(tls)
            .map_err(|e| RpcError::Tls(super::chain(&e)))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| RpcError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| RpcError::Bind {
            addr: listen,
            source,
        })?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = builder
            .add_service(
                PeerServer::new(peer)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_optional_service(join.map(|j| {
                JoinServer::new(j)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await
        });
        tracing::info!(addr = %local_addr, "rpc server listening");
        Ok(Self {
            local_addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets running calls finish, and waits for the end.
    pub async fn shutdown(mut self) -> Result<(), RpcError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let addr = self.local_addr;
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RpcError::Serve {
                addr,
                reason: super::chain(&e),
            }),
            Err(e) => Err(RpcError::Serve {
                addr,
                reason: e.to_string(),
            }),
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
