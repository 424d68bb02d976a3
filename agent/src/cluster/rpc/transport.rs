//! [`GrpcTransport`]: the client side of the Raft transport over mutual TLS.
//!
//! One lazily connected channel per peer address, cached (and dropped
//! after a network failure so the next call dials afresh). The peer's
//! certificate must chain to the cluster CA and name the dialled IP or
//! host; ours is presented as the client certificate. Errors: network
//! failures, timeouts and failed TLS handshakes map to
//! [`TransportError::Unreachable`] (with the TLS cause in the reason);
//! an answer from the peer that is not a result (authentication,
//! handler failure, unknown kind) maps to [`TransportError::Refused`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_proto::MAX_MESSAGE_BYTES;
use herd_proto::v1::{PeerRequest, peer_client::PeerClient};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{CONNECT_TIMEOUT, RpcError};
use crate::cluster::pki::{NodeCert, ca_der_from_pem};
use crate::cluster::transport::{BoxFuture, PeerTransport, RpcKind, TransportError};

/// Timeouts of a [`GrpcTransport`].
#[derive(Debug, Clone, Copy)]
pub struct TransportOptions {
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// A whole call, from sending to the answer.
    pub request_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// [`PeerTransport`] over gRPC with mutual TLS.
#[derive(Clone)]
pub struct GrpcTransport {
    tls: ClientTlsConfig,
    options: TransportOptions,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// A transport presenting `node` and trusting only `ca_cert_pem`.
    pub fn new(
        ca_cert_pem: &str,
        node: &NodeCert,
        options: TransportOptions,
    ) -> Result<Self, RpcError> {
        super::ensure_crypto_provider();
        ca_der_from_pem(ca_cert_pem)?;
        node.cert_der()?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_cert_pem))
            .identity(Identity::from_pem(node.cert_pem(), node.key_pem()))
            .timeout(options.connect_timeout);
        // Builds the rustls config once now, so bad PEMs fail here, not per call.
        Endpoint::from_static("https://127.0.0.1:1")
            .tls_config(tls.clone())
            .map_err(|e| RpcError::Tls(super::chain(&e)))?;
        Ok(Self {
            tls,
            options,
            channels: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| unreachable("channel cache poisoned".into()))?;
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| unreachable(format!("invalid peer address: {e}")))?
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
            .tcp_nodelay(true)
            .tls_config(self.tls.clone())
            .map_err(|e| unreachable(super::chain(&e)))?;
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn forget(channels: &Mutex<HashMap<String, Channel>>, addr: &str) {
        if let Ok(mut channels) = channels.lock() {
            channels.remove(addr);
        }
    }
}

impl PeerTransport for GrpcTransport {
    fn call(
        &self,
        addr: &str,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let channel = self.channel(addr);
        let channels = Arc::clone(&self.channels);
        let addr = addr.to_owned();
        Box::pin(async move {
            let mut client = PeerClient::new(channel?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let request = PeerRequest {
                kind: super::kind_to_wire(kind) as i32,
                payload,
            };
            match client.call(request).await {
                Ok(response) => Ok(response.into_inner().payload),
                Err(status) => {
                    let err = map_status(&addr, kind, &status);
                    if matches!(err, TransportError::Unreachable { .. }) {
                        Self::forget(&channels, &addr);
                    }
                    Err(err)
                }
            }
        })
    }
}

/// Codes the peer's handler never sends: they come from the client side
/// (connect, TLS, HTTP/2, timeouts).
fn is_local(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

fn map_status(addr: &str, kind: RpcKind, status: &tonic::Status) -> TransportError {
    if is_local(status.code()) {
        let reason = match std::error::Error::source(status).and_then(super::tls_cause) {
            Some(tls) => format!("tls handshake failed: {tls}"),
            None => match std::error::Error::source(status) {
                Some(source) => format!("{}: {}", status.message(), super::chain(source)),
                None => format!("{:?}: {}", status.code(), status.message()),
            },
        };
        TransportError::Unreachable {
            addr: addr.to_owned(),
            reason,
        }
    } else {
        TransportError::Refused {
            addr: addr.to_owned(),
            kind: kind.as_str(),
            reason: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}
