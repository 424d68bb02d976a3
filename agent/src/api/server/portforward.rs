//! `GET|POST /api/v1/namespaces/{ns}/pods/{name}/portforward`: the
//! `portforward.k8s.io` protocol over SPDY/3.1 ([`super::spdy`]), as the
//! kubelet serves it, for pods on this node.
//!
//! Transports: a WebSocket with subprotocol [`TUNNEL_PROTOCOL`] carrying
//! the SPDY session in binary messages (kubectl's default since 1.31), or
//! a plain `Upgrade: SPDY/3.1` connection with `X-Stream-Protocol-Version:
//! portforward.k8s.io` (its fallback). Anything else gets 400 (so kubectl
//! falls back from WebSocket to SPDY).
//!
//! Protocol: the client opens, per forwarded connection, an `error` stream
//! and a `data` stream with headers `streamtype`, `port` and `requestid`
//! (without `requestid`, the pairing of old clients: the error stream's id,
//! the data stream's id minus 2). Every stream gets a SYN_REPLY at once.
//! When both are there, the port is dialled at `127.0.0.1` (then `::1`)
//! INSIDE the pod's network namespace, from a short-lived thread that
//! setns'es into it (the socket stays in that namespace; the thread ends),
//! and bytes are copied both ways ([`LINGER`] says when it stops). A port that
//! does not parse or a dial that fails is reported as text on the error
//! stream, in the kubelet's words (`error forwarding port 8080 to pod
//! name_ns, uid …: …`); both streams are then closed. A request whose
//! second stream does not come within [`PAIR_TIMEOUT`] is dropped (with a
//! message on its error stream, if that is the one that came).
//!
//! Errors before the upgrade are `Status` objects: unknown pod 404, pod
//! bound to another node 503 (the proxy to the pod's node is the lead's),
//! pod without a sandbox here 400, node without a runtime 503.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::query::Query;
use super::spdy::{self, Headers, Session, Stream};
use super::{ApiResult, ApiState, Failure};
use crate::api::{ApiError, Resource};
use crate::store::Key;

/// The protocol inside the SPDY session.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of the SPDY tunnel.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long a dial inside the pod may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a forwarded connection failed (the text sent on its error stream).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("enter network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error(
        "failed to connect to localhost:{port} inside namespace {netns}, IPv4: dial tcp4 127.0.0.1:{port}: connect: {} IPv6 dial tcp6 [::1]:{port}: connect: {}",
        go_errno(.v4),
        go_errno(.v6)
    )]
    Connect {
        port: u16,
        netns: String,
        v4: io::Error,
        v6: io::Error,
    },
    #[error("dial thread: {0}")]
    Thread(io::Error),
}

/// An OS error as Go prints it (`connection refused`), so that messages
/// match the kubelet's.
fn go_errno(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// The pod a request names, resolved on this node.
#[derive(Debug, Clone)]
pub struct Target {
    /// `name_namespace`, as the kubelet names pods in its messages.
    pub pod: String,
    pub uid: String,
    /// The pod's network namespace (None: host network).
    pub netns: Option<PathBuf>,
}

pub async fn portforward(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    for p in q.all("ports").iter().flat_map(|p| p.split(',')) {
        if p.trim().parse::<u16>().ok().filter(|n| *n != 0).is_none() {
            return Err(ApiError::bad_request(format!("invalid port {p:?}")).into());
        }
    }
    let st = state.clone();
    let target = tokio::task::spawn_blocking(move || resolve(&st, &ns, &name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let headers = req.headers();
    let upgrade = header_str(headers, header::UPGRADE.as_str()).unwrap_or_default();
    if upgrade.eq_ignore_ascii_case("websocket") {
        let wants_tunnel = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str())
            .iter()
            .any(|p| p == TUNNEL_PROTOCOL);
        if !wants_tunnel {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade: portforward over WebSocket needs subprotocol {TUNNEL_PROTOCOL}"
            ))
            .into());
        }
        let (mut parts, _) = req.into_parts();
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state)
            .await
            .map_err(|e| ApiError::bad_request(format!("unable to upgrade: {e}")))?;
        return Ok(ws
            .protocols([TUNNEL_PROTOCOL])
            .on_upgrade(move |socket| serve(spdy::ws::WsIo::new(socket), target))
            .into_response());
    }
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Err(ApiError::bad_request(
            "Upgrade request required: portforward is served over SPDY/3.1 or a WebSocket tunnel",
        )
        .into());
    }
    let offered = header_values(headers, "x-stream-protocol-version");
    if !offered.is_empty() && !offered.iter().any(|p| p == PROTOCOL) {
        return Err(Failure::from(ApiError::new(
            crate::api::error::Reason::Forbidden,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{PROTOCOL:?}]"
            ),
        )));
    }
    let mut req = req;
    Ok(spdy::upgrade(
        &mut req,
        PROTOCOL,
        "portforward",
        move |io| serve(io, target),
    )?)
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// All comma-separated values of every `name` header.
pub(super) fn header_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Finds the pod and its network namespace on this node.
pub fn resolve(state: &ApiState, ns: &str, name: &str) -> Result<Target, Failure> {
    let pod = state
        .store
        .get(&Key::namespaced(Resource::Pods, ns, name))?;
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    match node {
        None | Some("") => {
            return Err(
                ApiError::bad_request(format!("pod {name} does not have a host assigned")).into(),
            );
        }
        Some(n) if n != state.node_name => {
            return Err(ApiError::unavailable(format!(
                "pod {name} runs on node {n}, not on this node ({}); port-forward through that node",
                state.node_name
            ))
            .into());
        }
        Some(_) => {}
    }
    let runtime = state
        .runtime
        .clone()
        .ok_or_else(|| ApiError::unavailable("this node runs no containers"))?;
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let record = runtime
        .sandbox(&uid)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} is not running on this node")))?;
    let dir = herd_runtime::sandbox::SandboxDir::new(&runtime.config().run_dir, &uid)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Target {
        pod: format!("{name}_{ns}"),
        uid,
        netns: dir.netns(&record.config),
    })
}

/// How long the second stream of a request may take to arrive (the
/// kubelet's stream creation timeout).
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    since: tokio::time::Instant,
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Drops the requests whose pair did not complete in time, telling the
/// client on the error stream when there is one.
fn expire(pairs: &mut HashMap<String, Pair>) {
    let now = tokio::time::Instant::now();
    let late: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.since + PAIR_TIMEOUT <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in late {
        if let Some(Some(mut e)) = pairs.remove(&id).map(|p| p.error) {
            tokio::spawn(async move {
                let msg = format!("timed out waiting for the streams of request {id}");
                let _ = e.write_all(msg.as_bytes()).await;
                let _ = e.shutdown().await;
            });
        }
    }
}

/// Serves one portforward session until the client goes away.
pub async fn serve<T>(io: T, target: Target)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = Session::server(io, spdy::Config::default());
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    loop {
        let deadline = pairs.values().map(|p| p.since + PAIR_TIMEOUT).min();
        let mut stream = tokio::select! {
            s = session.accept() => match s {
                Some(s) => s,
                None => break,
            },
            () = sleep_until(deadline) => {
                expire(&mut pairs);
                continue;
            }
        };
        if stream.reply(Headers::default()).is_err() {
            break;
        }
        let h = stream.headers();
        let kind = h.get("streamtype").unwrap_or_default().to_string();
        let id = match h.get("requestid") {
            Some(r) => r.to_string(),
            None if kind == "data" => stream.id().saturating_sub(2).to_string(),
            None => stream.id().to_string(),
        };
        let pair = pairs.entry(id.clone()).or_insert_with(|| Pair {
            error: None,
            data: None,
            since: tokio::time::Instant::now(),
        });
        match kind.as_str() {
            "error" if pair.error.is_none() => pair.error = Some(stream),
            "data" if pair.data.is_none() => pair.data = Some(stream),
            _ => {
                tracing::debug!(kind, id, "portforward: unexpected stream");
                stream.reset(spdy::frame::rst::PROTOCOL_ERROR);
                continue;
            }
        }
        if pair.error.is_some()
            && pair.data.is_some()
            && let Some(Pair {
                error: Some(e),
                data: Some(d),
                ..
            }) = pairs.remove(&id)
        {
            tokio::spawn(forward(target.clone(), e, d));
        }
    }
    if let Err(e) = session.finish().await {
        tracing::debug!(error = %e, pod = %target.pod, "portforward session ended");
    }
}

/// One forwarded connection.
async fn forward(target: Target, mut error: Stream, data: Stream) {
    let port_header = data.headers().get("port").unwrap_or_default().to_string();
    let sock = match port_header.parse::<u16>().ok().filter(|p| *p != 0) {
        None => Err(ForwardError::Port(port_header.clone())),
        Some(port) => dial(target.netns.clone(), port).await,
    };
    match sock {
        Ok(sock) => pipe(data, sock).await,
        Err(e) => {
            drop(data); // FIN
            let msg = format!(
                "error forwarding port {port_header} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            tracing::debug!(%msg, "portforward");
            let _ = error.write_all(msg.as_bytes()).await;
        }
    }
    let _ = error.shutdown().await;
}

/// How long the client may still send once the pod closed its side.
pub const LINGER: Duration = Duration::from_secs(1);

/// Copies both ways. When the client half-closes, the pod's socket is
/// half-closed and its answer still flows back until it closes. When the
/// pod closes first, the client gets FIN and at most [`LINGER`] more to
/// finish sending (containerd's rule): kubectl only closes its local
/// connection once the error stream ends, which is after this returns.
/// Copy errors (a reset on either side) just end the connection.
async fn pipe(data: Stream, sock: TcpStream) {
    let (mut from_client, mut to_client) = tokio::io::split(data);
    let (mut from_pod, mut to_pod) = sock.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_pod).await;
        let _ = to_pod.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_pod, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => down.await,
        () = &mut down => {
            let _ = tokio::time::timeout(LINGER, up).await;
        }
    }
}

/// Dials `port` on loopback inside `netns` (the caller's namespace if
/// None).
pub async fn dial(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, ForwardError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("herd-portfwd".into())
        .spawn(move || {
            let _ = tx.send(dial_blocking(netns.as_ref(), port));
        })
        .map_err(ForwardError::Thread)?;
    let sock = rx
        .await
        .map_err(|_| ForwardError::Thread(io::Error::other("dial thread ended")))??;
    sock.set_nonblocking(true).map_err(ForwardError::Thread)?;
    TcpStream::from_std(sock).map_err(ForwardError::Thread)
}

/// Runs on a thread of its own: it moves into the pod's namespace and ends
/// there, so no thread of the agent is left in a pod's namespace.
fn dial_blocking(netns: Option<&PathBuf>, port: u16) -> Result<std::net::TcpStream, ForwardError> {
    if let Some(path) = netns {
        let netns_err = |source| ForwardError::Netns {
            path: path.clone(),
            source,
        };
        let f = std::fs::File::open(path).map_err(netns_err)?;
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| netns_err(e.into()))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let e4 = match std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    match std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e6) => Err(ForwardError::Connect {
            port,
            netns: netns
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "host".into()),
            v4: e4,
            v6: e6,
        }),
    }
}

#[cfg(test)]
#[path = "portforward_tests.rs"]
mod tests;
