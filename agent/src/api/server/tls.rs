//! HTTPS for the API: the TCP listener speaks TLS only, with a server
//! certificate from the cluster CA, and asks for (but does not require) a
//! client certificate signed by that CA.
//!
//! Guarantees:
//! - Every request served here carries a [`Peer`] extension: the remote
//!   address and, when the client presented a certificate that chains to
//!   the cluster CA, its subject (`CN` = user, `O` = groups). A certificate
//!   that does not chain to the CA fails the handshake; no certificate is
//!   allowed and left to [`super::auth`] (bearer tokens, or 401).
//! - ALPN offers `http/1.1` only: kubectl's upgrades (exec, port-forward)
//!   and watches all run on HTTP/1.1, and hyper serves the upgrades.
//! - A handshake that stalls is dropped after [`HANDSHAKE_TIMEOUT`]; a
//!   failing connection never stops the listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

/// Time a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a TCP connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    /// The verified client certificate's subject: user and groups.
    pub cert_user: Option<(String, Vec<String>)>,
}

/// Why the TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no certificate".into(),
        });
    }
    Ok(certs)
}

/// The server configuration: `cert_pem`/`key_pem` as the server identity,
/// client certificates verified against `ca_pem` (optional).
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "CA")? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "server key",
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_pem, "server certificate")?, key)
        .map_err(|e| TlsError::Config(format!("server certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject of a verified client certificate: `CN` and every `O`.
pub fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, groups))
}

/// Serves `router` over TLS on `listener` until `stop` turns true.
pub async fn serve_tls(
    router: Router,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an API connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| subject(c.as_ref()));
            let peer = Peer {
                remote: Some(remote),
                cert_user,
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(peer.clone());
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, req.map(Body::new)).await }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "API connection ended");
            }
        });
    }
}
