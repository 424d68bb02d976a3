//! The HTTP API server: Kubernetes' paths and objects over a unix socket
//! (always) and TCP (optionally), with axum.
//!
//! Guarantees:
//! - Every error a client sees is a Kubernetes `Status` (`ApiError::to_json`)
//!   with the API server's HTTP code, rendered in one place ([`Failure`]),
//!   including unknown paths (404), wrong methods (405) and bodies over
//!   [`MAX_BODY`] (413). Garbage input never panics.
//! - Writes go decode → defaults → validation → store, as in the API server;
//!   watches deliver changes in resourceVersion order.
//! - Lists page with `limit`/`continue` and answer `meta.k8s.io` Tables
//!   when asked ([`list`], [`table`]).
//!
//! Routes: discovery ([`discovery`]), CRUD/watch ([`routes`], [`paths`],
//! [`writes`], [`delete`], [`scale`], [`watch`]) under `/api/v1` and
//! `/apis/{group}/v1`, pod logs ([`logs`]) and exec over WebSocket
//! ([`exec`]).

pub mod auth;
pub mod datastore;
pub mod delete;
pub mod discovery;
pub mod exec;
pub mod exec_spdy;
pub mod kubeconfig;
pub mod list;
pub mod logs;
pub mod nodeproxy;
pub mod openapi;
pub mod patch;
pub mod paths;
pub mod podsub;
pub mod portforward;
pub mod protobuf;
pub mod query;
pub mod routes;
pub mod scale;
pub mod selectors;
pub mod spdy;
pub mod table;
pub mod tls;
pub mod watch;
pub mod writes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::api::ApiError;
use crate::api::error::Reason;
use crate::api::services::ServiceNetwork;
use crate::store::{Datastore, StoreError};

/// Largest request body accepted (the API server's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Arc<dyn Datastore>,
    /// The node's runtime, for logs and exec (none: those answer 503).
    pub runtime: Option<Arc<herd_runtime::pod::PodRuntime>>,
    pub node_name: String,
    /// Single node, no scheduler yet: a pod created without
    /// `spec.nodeName` is bound to this node at once (PodScheduled=True).
    /// The cluster issue replaces this with the scheduler.
    pub bind_unscheduled: bool,
}

/// Server failures (binding, serving).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind unix socket {path}: {source}")]
    BindUnix {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind tcp {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serve {what}: {source}")]
    Serve {
        what: String,
        source: std::io::Error,
    },
}

/// An error response: the `Status` with its HTTP code. The one place API
/// errors become HTTP.
#[derive(Debug)]
pub struct Failure {
    pub error: ApiError,
    /// Overrides the reason's code (413 has no `Reason`).
    pub code: Option<u16>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        Failure { error, code: None }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::from(ApiError::from(e))
    }
}

impl Failure {
    pub fn code(&self) -> u16 {
        self.code.unwrap_or_else(|| self.error.code())
    }

    /// The `Status` JSON as sent.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.error.to_json();
        if let (Some(c), Some(m)) = (self.code, v.as_object_mut()) {
            m.insert("code".into(), c.into());
        }
        v
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_json())).into_response()
    }
}

/// Result of a handler.
pub type ApiResult = Result<Response, Failure>;

/// The API router with the default service network
/// ([`ServiceNetwork::default`], `10.96.0.0/16`). Creates the `default` and
/// `kube-system` namespaces if they are missing (a failure is logged; the
/// first request sees it again).
pub fn router(state: ApiState) -> Router {
    router_with(state, ServiceNetwork::default())
}

/// [`router`] with the service CIDR and nodePort range to allocate from.
///
/// The network is passed beside [`ApiState`] (an axum extension) so that
/// existing `ApiState` literals keep compiling.
pub fn router_with(state: ApiState, services: ServiceNetwork) -> Router {
    if let Err(e) = routes::ensure_namespaces(state.store.as_ref()) {
        tracing::warn!(error = %e, "creating the default namespaces");
    }
    // Pod streams: served here for local pods, passed to the pod's node
    // otherwise (cluster mode, [`nodeproxy`]).
    let pod_streams = Router::new()
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            get(exec::exec).post(exec::exec),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(logs::log))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            get(portforward::portforward).post(portforward::portforward),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            nodeproxy::forward_if_remote,
        ));
    Router::new()
        .merge(discovery::routes())
        .merge(pod_streams)
        .route("/api/v1/{*rest}", any(routes::dispatch))
        .route("/apis/{*rest}", any(routes::dispatch_group))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(services))
        .with_state(state)
}

async fn not_found() -> Failure {
    Failure::from(ApiError::new(
        Reason::NotFound,
        "the server could not find the requested resource",
    ))
}

async fn method_not_allowed() -> Failure {
    Failure::from(ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource",
    ))
}

/// The HTTPS side of the API: where, with which certificate, and the
/// router (authenticated, see [`authenticated`]).
#[derive(Clone)]
pub struct TcpServing {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
    pub router: Router,
}

impl std::fmt::Debug for TcpServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServing")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// `router` behind authentication ([`auth`]): what TCP clients get.
pub fn authenticated(router: Router, state: ApiState) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        state,
        auth::authenticate,
    ))
}

/// The routes only the root-only unix socket serves: `herd kubeconfig`,
/// `herd datastore export|import`.
pub fn local_routes(state: ApiState, services: ServiceNetwork, pki: kubeconfig::ApiPki) -> Router {
    Router::new()
        .route("/herd/v1/kubeconfig", get(kubeconfig::kubeconfig))
        .route("/herd/v1/datastore/export", get(datastore::export))
        .route("/herd/v1/datastore/import", post(datastore::import))
        .layer(axum::Extension(pki))
        .layer(axum::Extension(services))
        .with_state(state)
}

/// Serves `router` on `unix_socket` (a stale socket file is replaced; mode
/// 0600, not authenticated) and, with `tcp`, HTTPS on a TCP address too,
/// until `shutdown` resolves.
pub async fn serve(
    router: Router,
    unix_socket: &Path,
    tcp: Option<TcpServing>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let bind_err = |source| ServerError::BindUnix {
        path: unix_socket.to_path_buf(),
        source,
    };
    match std::fs::remove_file(unix_socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let unix = tokio::net::UnixListener::bind(unix_socket).map_err(bind_err)?;
    std::fs::set_permissions(unix_socket, std::fs::Permissions::from_mode(0o600))
        .map_err(bind_err)?;
    let tcp = match tcp {
        Some(t) => Some((
            tokio::net::TcpListener::bind(t.addr)
                .await
                .map_err(|source| ServerError::BindTcp {
                    addr: t.addr,
                    source,
                })?,
            t,
        )),
        None => None,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let unix_task = axum::serve(unix, router).with_graceful_shutdown(stop(rx.clone()));
    let unix_name = unix_socket.display().to_string();
    match tcp {
        Some((listener, t)) => {
            let what = format!("https {}", t.addr);
            let tcp_task = tls::serve_tls(t.router, listener, t.tls, rx);
            let (a, b) = tokio::join!(unix_task, tcp_task);
            a.map_err(|source| ServerError::Serve {
                what: unix_name,
                source,
            })?;
            b.map_err(|source| ServerError::Serve { what, source })
        }
        None => unix_task.await.map_err(|source| ServerError::Serve {
            what: unix_name,
            source,
        }),
    }
}
