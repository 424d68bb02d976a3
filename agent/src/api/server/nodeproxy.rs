//! Streams of a pod on another node (`log`, `exec`, `portforward`): the
//! request is passed to that node's API, as kube-apiserver passes them to
//! the pod's kubelet, so a client may talk to any node.
//!
//! Guarantees:
//! - Only when a [`NodeProxy`] is configured (cluster mode) and the pod's
//!   `spec.nodeName` is another node; otherwise the local handler runs.
//! - The hop is HTTPS to the node's `InternalIP` (its Node object) on the
//!   API port all nodes share, authenticated with this node's certificate
//!   and verifying the other node's against the cluster CA. The client's
//!   own `Authorization` header is not passed on.
//! - Upgrades (WebSocket/SPDY for exec and port-forward) are spliced byte
//!   for byte once both sides switched protocols; a plain answer (a log
//!   stream, or an error `Status`) is streamed back as it comes.
//! - A node that cannot be reached answers 503 ServiceUnavailable naming
//!   the node, never hangs past [`CONNECT_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use super::{ApiState, Failure};
use crate::api::error::Reason;
use crate::api::{ApiError, Resource};
use crate::store::Key;

/// Time to open the connection to the other node and finish TLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the other nodes' APIs.
#[derive(Clone)]
pub struct NodeProxy {
    /// Client TLS: this node's certificate, the cluster CA as roots.
    pub tls: Arc<rustls::ClientConfig>,
    /// The API port every node serves.
    pub port: u16,
}

impl std::fmt::Debug for NodeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProxy")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl NodeProxy {
    /// A proxy that presents `cert_pem`/`key_pem` and trusts `ca_pem`.
    pub fn new(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        port: u16,
    ) -> Result<NodeProxy, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(c.map_err(|e| format!("CA PEM: {e}"))?)
                .map_err(|e| format!("CA certificate: {e}"))?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("node certificate PEM: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("node key PEM: {e}"))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("node certificate: {e}"))?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(NodeProxy {
            tls: Arc::new(tls),
            port,
        })
    }
}

/// `/api/v1/namespaces/{ns}/pods/{name}/...` → (ns, name).
fn pod_of(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut it = rest.split('/');
    let ns = it.next()?;
    (it.next()? == "pods").then_some(())?;
    Some((ns, it.next()?))
}

fn internal_ip(node: &Value) -> Option<IpAddr> {
    node.pointer("/status/addresses")?
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .parse()
        .ok()
}

fn unavailable(node: &str, why: impl std::fmt::Display) -> Response {
    Failure::from(ApiError::new(
        Reason::ServiceUnavailable,
        format!("the pod's node {node:?} cannot be reached: {why}"),
    ))
    .into_response()
}

/// The middleware on the pod stream routes.
pub async fn forward_if_remote(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(proxy) = req.extensions().get::<NodeProxy>().cloned() else {
        return next.run(req).await;
    };
    let Some((ns, name)) = pod_of(req.uri().path()) else {
        return next.run(req).await;
    };
    let store = state.store.clone();
    let key = Key::namespaced(Resource::Pods, ns, name);
    let lookup = tokio::task::spawn_blocking(move || {
        let pod = store.get(&key).ok()?;
        let node = pod.pointer("/spec/nodeName")?.as_str()?.to_string();
        let ip = store
            .get(&Key::cluster(Resource::Nodes, &node))
            .ok()
            .and_then(|n| internal_ip(&n));
        Some((node, ip))
    })
    .await
    .ok()
    .flatten();
    match lookup {
        Some((node, ip)) if !node.is_empty() && node != state.node_name => match ip {
            Some(ip) => forward(req, &proxy, &node, SocketAddr::new(ip, proxy.port)).await,
            None => unavailable(&node, "its Node object has no InternalIP"),
        },
        // Missing pods, unbound pods and local pods: the local handler
        // answers (404, 400 or the stream).
        _ => next.run(req).await,
    }
}

async fn forward(mut req: Request, proxy: &NodeProxy, node: &str, addr: SocketAddr) -> Response {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(proxy.tls.clone());
        connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
    };
    let tls = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return unavailable(node, format!("{addr}: {e}")),
        Err(_) => return unavailable(node, format!("{addr}: timed out")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
        Ok(c) => c,
        Err(e) => return unavailable(node, format!("{addr}: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxied pod stream ended");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::builder().method(parts.method.clone()).uri(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    for (k, v) in &parts.headers {
        if k != header::AUTHORIZATION && k != header::HOST {
            out = out.header(k, v);
        }
    }
    out = out.header(
        header::HOST,
        HeaderValue::from_str(&addr.to_string()).unwrap_or(HeaderValue::from_static("node")),
    );
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => return unavailable(node, e),
    };
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return unavailable(node, format!("{addr}: {e}")),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, server_upgrade) {
                Ok((client, server)) => {
                    let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
                Err(e) => tracing::debug!(error = %e, "proxied upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_paths() {
        assert_eq!(pod_of("/api/v1/namespaces/a/pods/b/exec"), Some(("a", "b")));
        assert_eq!(pod_of("/api/v1/namespaces/a/services/b/proxy"), None);
        assert_eq!(pod_of("/apis/apps/v1/namespaces/a/pods/b/log"), None);
    }
}
