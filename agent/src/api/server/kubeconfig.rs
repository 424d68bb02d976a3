//! The API's certificates and `herd kubeconfig`.
//!
//! Guarantees:
//! - [`ApiPki::server_config`] issues a fresh serving certificate from the
//!   cluster CA at each start, valid for the node's name and addresses,
//!   `localhost`, 127.0.0.1, ::1, the `kubernetes.default.svc` names and
//!   the first service IP, as kube-apiserver's is.
//! - `GET /herd/v1/kubeconfig` is routed on the root-only unix socket only
//!   (never over TCP): it issues a client certificate (`CN=<user>`,
//!   `O=system:masters` by default) or, with `token=true`, creates a
//!   bootstrap token Secret, and answers a kubeconfig (YAML) that trusts
//!   the CA and points at this node's HTTPS address (or `server=`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine;
use serde::Deserialize;

use super::routes::blocking;
use super::writes::create;
use super::{ApiResult, ApiState, auth, tls};
use crate::api::services::ServiceNetwork;
use crate::api::{ApiError, Resource};
use crate::cluster::pki::ClusterCa;

/// The CA the API trusts and issues from, and its public address.
#[derive(Debug, Clone)]
pub struct ApiPki {
    pub ca: Arc<ClusterCa>,
    /// `https://host:port`, written into kubeconfigs.
    pub server_url: String,
}

impl ApiPki {
    /// A serving configuration for this node (see the module docs).
    pub fn server_config(
        &self,
        node_name: &str,
        addresses: &[IpAddr],
        first_service_ip: Option<IpAddr>,
    ) -> Result<Arc<rustls::ServerConfig>, tls::TlsError> {
        let mut ips: Vec<IpAddr> = addresses.to_vec();
        ips.extend([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
        ips.extend(first_service_ip);
        ips.sort();
        ips.dedup();
        let dns: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cert = self
            .ca
            .issue_node_cert(node_name, &ips, &dns)
            .map_err(|e| tls::TlsError::Config(format!("issuing the API certificate: {e}")))?;
        tls::server_config(self.ca.cert_pem(), cert.cert_pem(), cert.key_pem())
    }
}

/// Query of `GET /herd/v1/kubeconfig`.
#[derive(Debug, Deserialize)]
pub struct KubeconfigQuery {
    /// The user (certificate CN); default `herd-admin`.
    pub user: Option<String>,
    /// A bearer token instead of a client certificate.
    #[serde(default)]
    pub token: bool,
    /// The server URL; default this node's.
    pub server: Option<String>,
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The handler (unix socket only).
pub async fn kubeconfig(
    State(state): State<ApiState>,
    axum::Extension(pki): axum::Extension<ApiPki>,
    axum::Extension(net): axum::Extension<ServiceNetwork>,
    Query(q): Query<KubeconfigQuery>,
) -> ApiResult {
    let user = q.user.clone().unwrap_or_else(|| "herd-admin".to_string());
    let server = q.server.clone().unwrap_or_else(|| pki.server_url.clone());
    if !(server.starts_with("https://")) {
        return Err(ApiError::bad_request(format!(
            "server {server:?}: the API is served over HTTPS only (https://host:port)"
        ))
        .into());
    }
    let credentials = if q.token {
        let token = auth::generate_token();
        let secret = auth::token_secret(
            &token,
            &format!("herd kubeconfig for {user}"),
            &["system:masters"],
        )
        .ok_or_else(|| ApiError::internal("generated token has the wrong shape"))?;
        blocking(move || {
            create(
                &state,
                &net,
                Resource::Secrets,
                Some("kube-system"),
                secret,
                false,
            )
        })
        .await?;
        format!("    token: {token}\n")
    } else {
        let cert = pki
            .ca
            .issue_client_cert(&user, &["system:masters"])
            .map_err(|e| {
                ApiError::bad_request(format!("issuing a certificate for {user:?}: {e}"))
            })?;
        format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            encode(cert.cert_pem().as_bytes()),
            encode(cert.key_pem().as_bytes())
        )
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: herd\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: herd\n  context:\n    cluster: herd\n    user: {user}\ncurrent-context: herd\nusers:\n- name: {user}\n  user:\n{credentials}",
        ca = encode(pki.ca.cert_pem().as_bytes()),
    );
    Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
}
