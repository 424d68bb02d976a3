//! containerd as an alternative backend (gRPC over its socket, through
//! `containerd-client`).
//!
//! [`Client`] is the connection every containerd part shares: it checks the
//! daemon's version, claims herd's namespace (a namespace another client
//! already uses is refused), and runs the async gRPC calls on a small
//! runtime of its own so the synchronous pod runtime can call it from any
//! thread. [`images`] keeps images in containerd's content store and
//! snapshotter; [`tasks`] runs containers as containerd tasks.

pub mod exec;
pub mod exits;
pub mod images;
pub mod logger;
pub mod mounts;
pub mod tasks;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CreateNamespaceRequest, GetNamespaceRequest, ListContainersRequest, ListImagesRequest,
    Namespace, UpdateNamespaceRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The label herd puts on its namespace, containers and images.
pub const OWNER_LABEL: &str = "herd.io/owner";
/// Its value.
pub const OWNER: &str = "herd";
/// The oldest containerd herd drives (the APIs and events it relies on).
pub const MIN_VERSION: (u32, u32) = (1, 6);

/// How to reach containerd and where herd's objects live in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket (`/run/containerd/containerd.sock`).
    pub address: PathBuf,
    /// containerd namespace for herd's images and containers (`herd`).
    pub namespace: String,
    /// Snapshotter for image layers and container root filesystems.
    pub snapshotter: String,
    /// How long one call may take (image layers get longer).
    pub timeout: Duration,
}

impl ContainerdConfig {
    pub fn new(address: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        ContainerdConfig {
            address: address.into(),
            namespace: namespace.into(),
            snapshotter: "overlayfs".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What can go wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd socket {0} does not exist: is containerd running? (--containerd-address)")]
    SocketMissing(PathBuf),
    #[error("connecting to containerd at {path}: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error(
        "containerd {version} is not supported: herd needs containerd {}.{} or newer",
        MIN_VERSION.0,
        MIN_VERSION.1
    )]
    Unsupported { version: String },
    #[error(
        "containerd namespace {namespace:?} is in use by another client ({what}); \
         give herd its own with --containerd-namespace"
    )]
    ForeignNamespace { namespace: String, what: String },
    #[error("containerd {op}: {}: {}", status.code(), status.message())]
    Rpc { op: String, status: Status },
    #[error("containerd {op}: timed out after {timeout:?}")]
    Timeout { op: String, timeout: Duration },
    #[error("containerd: {0}")]
    Invalid(String),
    #[error("containerd client runtime: {0}")]
    Runtime(String),
}

impl ContainerdError {
    /// The gRPC status code, for calls that failed in containerd.
    pub fn code(&self) -> Option<Code> {
        match self {
            ContainerdError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }
}

/// Maps a failed call to [`ContainerdError::Rpc`] naming the operation.
pub fn rpc(op: impl Into<String>) -> impl FnOnce(Status) -> ContainerdError {
    let op = op.into();
    move |status| ContainerdError::Rpc { op, status }
}

/// A connection to containerd, scoped to herd's namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ContainerdConfig,
    channel: Channel,
    version: String,
    rt: tokio::runtime::Runtime,
}

/// Parses containerd's version (`1.6.20~ds1`, `v1.7.2`) into (major, minor).
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['~', '-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Client {
    /// Connects, checks the version and claims the namespace.
    pub fn connect(cfg: ContainerdConfig) -> Result<Client, ContainerdError> {
        if !cfg.address.exists() {
            return Err(ContainerdError::SocketMissing(cfg.address.clone()));
        }
        if cfg.namespace.is_empty()
            || !cfg
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ContainerdError::Invalid(format!(
                "namespace {:?} is not a valid containerd namespace (letters, digits, '-', '_', '.')",
                cfg.namespace
            )));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("containerd-client")
            .enable_all()
            .build()
            .map_err(|e| ContainerdError::Runtime(e.to_string()))?;
        let address = cfg.address.clone();
        let timeout = cfg.timeout;
        let channel = rt.block_on(async move {
            tokio::time::timeout(timeout, containerd_client::connect(&address))
                .await
                .map_err(|_| ContainerdError::Connect {
                    path: address.clone(),
                    reason: format!("no answer within {timeout:?}"),
                })?
                .map_err(|e| ContainerdError::Connect {
                    path: address.clone(),
                    reason: error_chain(&e),
                })
        })?;
        let ch = channel.clone();
        let address = cfg.address.clone();
        let version = rt.block_on(async move {
            let v = tokio::time::timeout(timeout, VersionClient::new(ch).version(Request::new(())))
                .await
                .map_err(|_| ContainerdError::Timeout {
                    op: "version".into(),
                    timeout,
                })?;
            v.map(|r| r.into_inner().version)
                .map_err(|status| match status.code() {
                    Code::Unavailable | Code::Unknown => ContainerdError::Connect {
                        path: address.clone(),
                        reason: format!("{} (is this containerd's gRPC socket?)", status.message()),
                    },
                    _ => ContainerdError::Rpc {
                        op: "version".into(),
                        status,
                    },
                })
        })?;
        match parse_version(&version) {
            Some(v) if v >= MIN_VERSION => {}
            _ => return Err(ContainerdError::Unsupported { version }),
        }
        let client = Client {
            inner: Arc::new(Inner {
                cfg,
                channel,
                version,
                rt,
            }),
        };
        client.claim_namespace()?;
        Ok(client)
    }

    pub fn config(&self) -> &ContainerdConfig {
        &self.inner.cfg
    }
    pub fn namespace(&self) -> &str {
        &self.inner.cfg.namespace
    }
    pub fn snapshotter(&self) -> &str {
        &self.inner.cfg.snapshotter
    }
    /// containerd's version string as it reports it.
    pub fn version(&self) -> &str {
        &self.inner.version
    }
    pub fn channel(&self) -> Channel {
        self.inner.channel.clone()
    }
    /// The client's own runtime (for tasks that outlive one call, such as
    /// the event subscription).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.inner.rt.handle().clone()
    }

    /// A request in herd's namespace.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.inner.cfg.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        r
    }

    /// A request in herd's namespace that holds its new objects under
    /// `lease` (safe from containerd's garbage collector until the lease
    /// goes).
    pub fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.request(msg);
        if let Ok(v) = lease.parse() {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    /// Runs `fut` on the client's runtime and waits for it, within the
    /// configured timeout. Call from any thread that is not one of this
    /// client's runtime threads.
    pub fn call<T: Send + 'static>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T, ContainerdError>> + Send + 'static,
    ) -> Result<T, ContainerdError> {
        self.call_within(op, self.inner.cfg.timeout, fut)
    }

    /// [`Client::call`] with its own time limit.
    pub fn call_within<T: Send + 'static>(
        &self,
        op: &str,
        timeout: Duration,
        fut: impl Future<Output = Result<T, ContainerdError>> + Send + 'static,
    ) -> Result<T, ContainerdError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let op2 = op.to_string();
        self.inner.rt.spawn(async move {
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(ContainerdError::Timeout { op: op2, timeout }),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| ContainerdError::Runtime(format!("{op}: the client runtime stopped")))?
    }

    /// Claims the namespace for herd: creates it with herd's owner label,
    /// or labels an existing one nobody uses. A namespace with containers
    /// or images and without herd's label belongs to another client.
    fn claim_namespace(&self) -> Result<(), ContainerdError> {
        let c = self.clone();
        self.call("namespace", async move {
            let ns = c.namespace().to_string();
            let mut nsc = NamespacesClient::new(c.channel());
            let labels = HashMap::from([(OWNER_LABEL.to_string(), OWNER.to_string())]);
            match nsc
                .get(c.request(GetNamespaceRequest { name: ns.clone() }))
                .await
            {
                Ok(r) => {
                    let existing = r.into_inner().namespace.unwrap_or_default();
                    if existing.labels.get(OWNER_LABEL).map(String::as_str) == Some(OWNER) {
                        return Ok(());
                    }
                    let containers = ContainersClient::new(c.channel())
                        .list(c.request(ListContainersRequest { filters: vec![] }))
                        .await
                        .map_err(rpc("list containers"))?
                        .into_inner()
                        .containers
                        .len();
                    let images = ImagesClient::new(c.channel())
                        .list(c.request(ListImagesRequest { filters: vec![] }))
                        .await
                        .map_err(rpc("list images"))?
                        .into_inner()
                        .images
                        .len();
                    if containers > 0 || images > 0 {
                        return Err(ContainerdError::ForeignNamespace {
                            namespace: ns,
                            what: format!(
                                "{containers} containers and {images} images, \
                                 and no {OWNER_LABEL}={OWNER} label"
                            ),
                        });
                    }
                    let mut l = existing.labels.clone();
                    l.extend(labels);
                    // Namespaced: containerd publishes an event in it.
                    nsc.update(c.request(UpdateNamespaceRequest {
                        namespace: Some(Namespace {
                            name: ns,
                            labels: l,
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec![format!("labels.{OWNER_LABEL}")],
                        }),
                    }))
                    .await
                    .map_err(rpc("label namespace"))?;
                    Ok(())
                }
                Err(s) if s.code() == Code::NotFound => {
                    match nsc
                        .create(c.request(CreateNamespaceRequest {
                            namespace: Some(Namespace { name: ns, labels }),
                        }))
                        .await
                    {
                        Ok(_) => Ok(()),
                        // Another herd process created it at the same time.
                        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                        Err(s) => Err(rpc("create namespace")(s)),
                    }
                }
                Err(s) => Err(rpc("get namespace")(s)),
            }
        })
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// The runc shim's options (`containerd.runc.v1.Options`, from containerd's
/// `runtime/v2/runc/options/oci.proto`; containerd-client does not ship it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    /// The runc binary (empty: `runc` on containerd's PATH).
    #[prost(string, tag = "6")]
    pub binary_name: String,
    /// runc's state directory (`--root`).
    #[prost(string, tag = "7")]
    pub root: String,
}

impl RuncOptions {
    pub fn to_any(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: prost::Message::encode_to_vec(self),
        }
    }
}

/// A path as the UTF-8 string containerd's API needs.
pub fn path_str(p: &Path) -> Result<&str, ContainerdError> {
    p.to_str()
        .ok_or_else(|| ContainerdError::Invalid(format!("path {} is not UTF-8", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.6.20~ds1"), Some((1, 6)));
        assert_eq!(parse_version("v1.7.2"), Some((1, 7)));
        assert_eq!(parse_version("2.0.0-rc.1"), Some((2, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("1.5.9").is_some_and(|v| v < MIN_VERSION));
    }
}
