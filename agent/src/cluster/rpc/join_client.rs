//! The joining side: dial a member with only a join token, trust it by the
//! pinned CA hash, prove the secret, and get the node's material back.
//!
//! The returned CA certificate is checked against the token's hash again
//! (the TLS pin covers the connection, this covers the payload), the key and
//! certificate must parse, and the cluster key must be 32 bytes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use herd_proto::MAX_MESSAGE_BYTES;
use herd_proto::v1::{JoinRequest, join_client::JoinClient};
use tonic::Code;
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::CONNECT_TIMEOUT;
use super::pin::PinnedCaVerifier;
use crate::cluster::pki::{JoinToken, NodeCert, ca_der_from_pem, validate_node_name};

/// What a node gets for joining.
#[derive(Debug, Clone)]
pub struct JoinMaterial {
    /// The cluster CA certificate (PEM); its hash equals the token's.
    pub ca_cert_pem: String,
    /// This node's certificate and key.
    pub node: NodeCert,
    /// The gossip key.
    pub cluster_key: [u8; 32],
    /// Peer addresses of the current members.
    pub members: Vec<String>,
    /// The CA key (PEM) when the member shares it (herd members do: any
    /// member can admit the next node); empty otherwise.
    pub ca_key_pem: String,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("invalid join request: {0}")]
    InvalidRequest(String),
    #[error("join {addr}: unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("join {addr}: server not trusted: {reason}")]
    UntrustedServer { addr: String, reason: String },
    #[error("join {addr}: token secret refused")]
    Unauthenticated { addr: String },
    #[error("join {addr}: too many failed attempts, retry later")]
    RateLimited { addr: String },
    #[error("join {addr}: refused ({code:?}): {message}")]
    Rejected {
        addr: String,
        code: Code,
        message: String,
    },
    #[error("join {addr}: bad response: {reason}")]
    BadResponse { addr: String, reason: String },
}

/// Joins through the member at `addr` ("ip:port" or "host:port").
pub async fn join(
    addr: &str,
    token: &JoinToken,
    node_name: &str,
    addresses: &[IpAddr],
    timeout: Duration,
) -> Result<JoinMaterial, JoinError> {
    super::ensure_crypto_provider();
    validate_node_name(node_name).map_err(|e| JoinError::InvalidRequest(e.to_string()))?;
    let verifier = Arc::new(PinnedCaVerifier::new(token.ca_hash()));
    let unreachable = |reason: String| JoinError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| JoinError::InvalidRequest(format!("address {addr:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .tls_config_with_verifier(
            ClientTlsConfig::new().timeout(CONNECT_TIMEOUT),
            verifier.clone(),
        )
        .map_err(|e| JoinError::InvalidRequest(super::chain(&e)))?;
    let classify = |reason: String| match verifier.refusal() {
        Some(why) => JoinError::UntrustedServer {
            addr: addr.to_owned(),
            reason: why,
        },
        None => unreachable(reason),
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| classify(super::chain(&e)))?;
    let mut client = JoinClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let request = JoinRequest {
        secret: token.secret().to_owned(),
        node_name: node_name.to_owned(),
        addresses: addresses.iter().map(ToString::to_string).collect(),
    };
    let response = match client.join(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Err(match status.code() {
                Code::Unauthenticated => JoinError::Unauthenticated {
                    addr: addr.to_owned(),
                },
                Code::ResourceExhausted => JoinError::RateLimited {
                    addr: addr.to_owned(),
                },
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    classify(status.message().to_owned())
                }
                code => JoinError::Rejected {
                    addr: addr.to_owned(),
                    code,
                    message: status.message().to_owned(),
                },
            });
        }
    };
    let bad = |reason: String| JoinError::BadResponse {
        addr: addr.to_owned(),
        reason,
    };
    let ca_der = ca_der_from_pem(&response.ca_cert_pem).map_err(|e| bad(e.to_string()))?;
    if !token.pins(&ca_der) {
        return Err(bad("CA certificate does not match the join token".into()));
    }
    let node = NodeCert::from_pem(node_name, &response.node_cert_pem, &response.node_key_pem)
        .map_err(|e| bad(e.to_string()))?;
    let cluster_key: [u8; 32] = response.cluster_key.as_slice().try_into().map_err(|_| {
        bad(format!(
            "cluster key has {} bytes",
            response.cluster_key.len()
        ))
    })?;
    Ok(JoinMaterial {
        ca_cert_pem: response.ca_cert_pem,
        node,
        cluster_key,
        members: response.members,
        ca_key_pem: response.ca_key_pem,
    })
}
