//! `ApiClient`: the CLI's typed client of the agent's Kubernetes-shaped API.
//!
//! It speaks HTTP/1.1 over the agent's unix socket (`<root>/agent.sock`) or
//! over TCP (`--server http://HOST:PORT`; plain HTTP only). Every request
//! opens its own connection, which is what a one-shot CLI needs. Non-2xx
//! answers become [`ClientError::Api`] carrying the server's `Status`
//! (reason, message and field causes); a socket that cannot be reached
//! becomes [`ClientError::Connect`], naming where the agent was expected.
//! Watches and logs stream: events and chunks are handed out as they
//! arrive. Exec upgrades to a WebSocket with the `v5.channel.k8s.io` /
//! `v4.channel.k8s.io` subprotocols (see [`super::channel`]).

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::api::{ApiError, Resource};

use super::channel::Protocol;
pub use super::conn::{Conn, Endpoint};
pub use super::params::{
    DeleteParams, ExecParams, ListParams, LogParams, collection_path, encode_query, object_path,
};
use super::params::{exec_query, list_query, log_query, with_query};
pub use super::streams::{ExecSession, LogStream, WatchEvent, WatchEventType, WatchStream};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the agent is not running at {where_}: {source}")]
    Connect {
        where_: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid --server {url:?}: {reason}")]
    BadServer { url: String, reason: String },
    #[error("http request to {path} failed: {source}")]
    Http {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("building request for {path}: {reason}")]
    Request { path: String, reason: String },
    #[error("{}", .0.error)]
    Api(Box<ApiFailure>),
    #[error("decoding the answer to {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("websocket to {path}: {reason}")]
    WebSocket { path: String, reason: String },
}

/// A `Status` the server answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status code.
    pub code: u16,
    pub error: ApiError,
    /// `details.causes` as `(field, message)`.
    pub causes: Vec<(String, String)>,
}

impl ClientError {
    /// The server's error, when the request reached it.
    pub fn api(&self) -> Option<&ApiFailure> {
        match self {
            ClientError::Api(f) => Some(f),
            _ => None,
        }
    }

    /// True for a 404 from the server.
    pub fn is_not_found(&self) -> bool {
        self.api().is_some_and(|f| f.code == 404)
    }

    /// 409 Conflict (the object changed since it was read).
    pub fn is_conflict(&self) -> bool {
        self.api().is_some_and(|f| f.code == 409)
    }
}

/// Turns an error body into an [`ApiFailure`].
pub fn failure_from_body(code: u16, body: &[u8]) -> ApiFailure {
    let error = ApiError::from_status_json(code, body);
    let causes = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["details"]["causes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    ApiFailure {
        code,
        error,
        causes,
    }
}

/// The agent's API, over a unix socket or TCP.
#[derive(Debug, Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
}

impl ApiClient {
    pub fn new(endpoint: Endpoint) -> ApiClient {
        ApiClient { endpoint }
    }

    /// `--server` when given (`http://HOST:PORT` or `HOST:PORT`), else the
    /// unix socket `<root_dir>/agent.sock`.
    pub fn from_flags(root_dir: &Path, server: Option<&str>) -> Result<ApiClient, ClientError> {
        let Some(url) = server else {
            return Ok(ApiClient::new(Endpoint::Unix(root_dir.join("agent.sock"))));
        };
        let bad = |reason: &str| ClientError::BadServer {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("unix://") {
            return Ok(ApiClient::new(Endpoint::Unix(PathBuf::from(path))));
        }
        if url.starts_with("https://") {
            return Err(bad(
                "the herd CLI talks to the local agent's unix socket; for the HTTPS API use kubectl with the kubeconfig `herd kubeconfig` prints",
            ));
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected http://HOST:PORT"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(ApiClient::new(Endpoint::Tcp(authority)))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn host(&self) -> &str {
        match &self.endpoint {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp(a) => a,
        }
    }

    async fn connect(&self) -> Result<Conn, ClientError> {
        match &self.endpoint {
            Endpoint::Unix(p) => UnixStream::connect(p)
                .await
                .map(Conn::Unix)
                .map_err(|source| ClientError::Connect {
                    where_: p.display().to_string(),
                    source,
                }),
            Endpoint::Tcp(a) => {
                TcpStream::connect(a.as_str())
                    .await
                    .map(Conn::Tcp)
                    .map_err(|source| ClientError::Connect {
                        where_: format!("http://{a}"),
                        source,
                    })
            }
        }
    }

    /// Sends one request; the response body is left to the caller.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let conn = self.connect().await?;
        let http = |source| ClientError::Http {
            path: path.to_string(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection to the agent ended: {e}");
            }
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        sender.send_request(req).await.map_err(http)
    }

    /// Sends a request and reads the whole answer; non-2xx → `Api`.
    pub async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                path: path.to_string(),
                source,
            })?
            .to_bytes();
        check(status, &bytes)?;
        Ok(bytes)
    }

    /// A JSON request decoded into `T`.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let bytes = self.request_bytes(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            path: path.to_string(),
            source,
        })
    }

    /// `GET` one object.
    pub async fn get<T: DeserializeOwned>(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Result<T, ClientError> {
        self.request(Method::GET, &object_path(resource, namespace, name), None)
            .await
    }

    /// `GET` a list (`namespace` `None`: all namespaces).
    pub async fn list<T: DeserializeOwned>(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<T, ClientError> {
        let path = with_query(collection_path(resource, namespace), &list_query(params));
        self.request(Method::GET, &path, None).await
    }

    /// `POST` a new object.
    pub async fn create<T: DeserializeOwned>(
        &self,
        resource: Resource,
        namespace: &str,
        object: &Value,
    ) -> Result<T, ClientError> {
        let ns = resource.namespaced().then_some(namespace);
        self.request(Method::POST, &collection_path(resource, ns), Some(object))
            .await
    }

    /// `PUT` (replace) an object; `object` carries the resourceVersion it
    /// was read at.
    pub async fn replace<T: DeserializeOwned>(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        object: &Value,
    ) -> Result<T, ClientError> {
        let path = self.path_of(resource, namespace, name);
        self.request(Method::PUT, &path, Some(object)).await
    }

    fn path_of(&self, resource: Resource, namespace: &str, name: &str) -> String {
        if resource.namespaced() {
            object_path(resource, namespace, name)
        } else {
            format!("{}/{name}", collection_path(resource, None))
        }
    }

    /// `DELETE` an object; returns what the server answered (the object
    /// being deleted, or a `Status`).
    pub async fn delete(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Value, ClientError> {
        let mut q = Vec::new();
        if let Some(g) = params.grace_period_seconds {
            q.push(("gracePeriodSeconds", g.to_string()));
        }
        if let Some(p) = params.propagation_policy.as_ref() {
            q.push(("propagationPolicy", p.clone()));
        }
        let path = with_query(self.path_of(resource, namespace, name), &q);
        self.request(Method::DELETE, &path, None).await
    }

    /// Starts a watch (`?watch=true`), from `resource_version` when given
    /// (else the server first sends every existing object as ADDED).
    pub async fn watch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: Option<&str>,
    ) -> Result<WatchStream, ClientError> {
        let mut q = list_query(params);
        q.push(("watch", "true".into()));
        if let Some(rv) = resource_version {
            q.push(("resourceVersion", rv.to_string()));
        }
        let path = with_query(collection_path(resource, namespace), &q);
        let body = self.streaming(&path).await?;
        Ok(WatchStream {
            body,
            path,
            buf: Vec::new(),
            done: false,
        })
    }

    /// Streams a container's log (`…/pods/NAME/log`).
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        params: &LogParams,
    ) -> Result<LogStream, ClientError> {
        let path = with_query(
            format!("{}/log", object_path(Resource::Pods, namespace, pod)),
            &log_query(params),
        );
        let body = self.streaming(&path).await?;
        Ok(LogStream { body, path })
    }

    async fn streaming(&self, path: &str) -> Result<Incoming, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body());
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                path: path.to_string(),
                source,
            })?
            .to_bytes();
        check(status, &bytes)?;
        Err(ClientError::Api(Box::new(failure_from_body(
            status.as_u16(),
            &bytes,
        ))))
    }

    /// Opens an exec WebSocket (`…/pods/NAME/exec`).
    pub async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        params: &ExecParams,
    ) -> Result<ExecSession, ClientError> {
        let path = with_query(
            format!("{}/exec", object_path(Resource::Pods, namespace, pod)),
            &exec_query(params),
        );
        let ws_err = |reason: String| ClientError::WebSocket {
            path: path.clone(),
            reason,
        };
        let mut req = format!("ws://{}{path}", self.host())
            .into_client_request()
            .map_err(|e| ws_err(e.to_string()))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        let conn = self.connect().await?;
        let (ws, resp) = match tokio_tungstenite::client_async(req, conn).await {
            Ok(x) => x,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let code = resp.status().as_u16();
                let body = resp.body().clone().unwrap_or_default();
                return Err(ClientError::Api(Box::new(failure_from_body(code, &body))));
            }
            Err(e) => return Err(ws_err(e.to_string())),
        };
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(Protocol::from_header)
            .ok_or_else(|| ws_err("the server chose no supported subprotocol".into()))?;
        Ok(ExecSession { ws, protocol })
    }
}

fn check(status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    Err(ClientError::Api(Box::new(failure_from_body(
        status.as_u16(),
        body,
    ))))
}
