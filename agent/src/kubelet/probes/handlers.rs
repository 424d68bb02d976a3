//! The probe actions shared by probes and lifecycle hooks: exec, httpGet,
//! tcpSocket, as the kubelet's `pkg/probe/{exec,http,tcp}` run them.
//!
//! Guarantees: every action finishes within its timeout (exec: the target's
//! own timeout plus a grace, see [`EXEC_GRACE`]); no input makes it panic;
//! an HTTP body is read up to [`MAX_BODY`] bytes only; redirects are
//! followed (at most 10) only to the same host name, a redirect elsewhere
//! ends the probe as a success, like the kubelet's non-local redirect rule.
//! Limits: HTTPS is reported as a failure ("https probes are not
//! supported"), no TLS client is wired in yet.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, HOST, HeaderName, HeaderValue, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ProbeTarget;

/// The `User-Agent` the kubelet sends (`kube-probe/<major>.<minor>`).
pub const USER_AGENT_VALUE: &str = "kube-probe/1.33";
/// How much of a response body or command output is kept (the kubelet's
/// `maxReadLength`).
pub const MAX_BODY: usize = 10 * 1024;
/// Extra time given to an exec target beyond the probe timeout before the
/// prober gives up waiting for it (the target enforces the timeout itself).
pub const EXEC_GRACE: Duration = Duration::from_secs(2);
const MAX_REDIRECTS: usize = 10;

/// The result of one action run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the text is the output or body (possibly empty).
    Success(String),
    /// Failed; the text says why (the kubelet's event message).
    Failure(String),
    /// The action could not be run (the kubelet throws such results away).
    Unknown(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }
}

fn lossy_capped(data: &[u8]) -> String {
    let end = data.len().min(MAX_BODY);
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// Runs `command` through `target.exec` on a blocking thread. Exit 0 is a
/// success; a non-zero exit a failure carrying the output; a target error
/// that reads as a timeout (or no answer within `timeout` + grace) is a
/// failure `command "…" timed out`; any other target error is `Unknown`.
pub async fn exec(command: &[String], target: Arc<dyn ProbeTarget>, timeout: Duration) -> Outcome {
    if command.is_empty() {
        return Outcome::Failure("exec probe has no command".to_string());
    }
    let cmd = command.to_vec();
    let task = tokio::task::spawn_blocking(move || target.exec(&cmd, timeout));
    let timed_out = || Outcome::Failure(format!("command {command:?} timed out"));
    match tokio::time::timeout(timeout + EXEC_GRACE, task).await {
        Err(_) => timed_out(),
        Ok(Err(join)) => Outcome::Unknown(format!("exec of {command:?} failed: {join}")),
        Ok(Ok(Err(msg))) if is_timeout(&msg) => timed_out(),
        Ok(Ok(Err(msg))) => Outcome::Unknown(msg),
        Ok(Ok(Ok((0, out)))) => Outcome::Success(lossy_capped(&out)),
        Ok(Ok(Ok((code, out)))) => {
            let text = lossy_capped(&out);
            if text.trim().is_empty() {
                Outcome::Failure(format!("command {command:?} exited with {code}"))
            } else {
                Outcome::Failure(text)
            }
        }
    }
}

/// Whether a target's exec error is a timeout: "timed out", or the
/// runtime's "… did not finish within …".
fn is_timeout(msg: &str) -> bool {
    msg.contains("timed out") || msg.contains("did not finish within")
}

/// The port number of a probe/hook port: a number, or the name of one of
/// the container's ports (a numeric string is accepted like the kubelet).
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port);
            match (named, name.parse::<i32>()) {
                (Some(n), _) | (None, Ok(n)) => n,
                (None, Err(_)) => {
                    return Err(format!(
                        "couldn't find port {name:?} in container {:?}",
                        container.name
                    ));
                }
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

fn host_of(explicit: Option<&str>, target: &dyn ProbeTarget) -> Result<String, String> {
    match explicit.filter(|h| !h.is_empty()) {
        Some(h) => Ok(h.to_string()),
        None => target
            .pod_ip()
            .map(|ip| ip.to_string())
            .ok_or_else(|| "pod has no IP address yet".to_string()),
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("lookup {host}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("lookup {host}: no such host"))
}

/// Connects to the action's host (default the pod IP) and port.
pub async fn tcp_socket(
    action: &TCPSocketAction,
    container: &Container,
    target: &dyn ProbeTarget,
    timeout: Duration,
) -> Outcome {
    let (host, port) = match (
        host_of(action.host.as_deref(), target),
        resolve_port(&action.port, container),
    ) {
        (Ok(h), Ok(p)) => (h, p),
        (Err(e), _) | (_, Err(e)) => return Outcome::Failure(e),
    };
    let hp = join_host_port(&host, port);
    let attempt = async {
        let addr = resolve(&host, port).await?;
        tokio::net::TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {hp}: {e}"))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Outcome::Failure(format!("dial tcp {hp}: i/o timeout")),
        Ok(Err(e)) => Outcome::Failure(e),
        Ok(Ok(())) => Outcome::Success(String::new()),
    }
}

/// One request of an httpGet action, after defaults.
#[derive(Debug, Clone)]
struct HttpRequest {
    host: String,
    port: u16,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    host_header: Option<HeaderValue>,
}

impl HttpRequest {
    fn url(&self) -> String {
        format!(
            "http://{}{}",
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

fn build_request(
    action: &HTTPGetAction,
    container: &Container,
    target: &dyn ProbeTarget,
) -> Result<HttpRequest, String> {
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    if scheme.eq_ignore_ascii_case("HTTPS") {
        return Err("https probes are not supported".to_string());
    }
    if !scheme.eq_ignore_ascii_case("HTTP") {
        return Err(format!("unsupported scheme {scheme:?}"));
    }
    let host = host_of(action.host.as_deref(), target)?;
    let port = resolve_port(&action.port, container)?;
    let raw = action.path.as_deref().unwrap_or("");
    let path = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    let mut headers = Vec::new();
    let mut host_header = None;
    for h in action.http_headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| format!("invalid header name {:?}: {e}", h.name))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|e| format!("invalid value of header {:?}: {e}", h.name))?;
        if name == HOST {
            host_header = Some(value);
        } else {
            headers.push((name, value));
        }
    }
    Ok(HttpRequest {
        host,
        port,
        path,
        headers,
        host_header,
    })
}

/// An httpGet response after redirects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The first [`MAX_BODY`] bytes, lossily decoded.
    pub body: String,
    /// The server redirected to another host, which is not followed.
    pub redirected_away: bool,
}

/// Sends the GET (following same-host redirects) within `timeout`; `Err`
/// is a transport error or timeout, in the kubelet's words.
pub async fn http_fetch(
    action: &HTTPGetAction,
    container: &Container,
    target: &dyn ProbeTarget,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let req = build_request(action, container, target)?;
    let url = req.url();
    match tokio::time::timeout(timeout, follow(req)).await {
        Err(_) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
        Ok(Ok((status, body, redirected_away))) => Ok(HttpResponse {
            status: status.as_u16(),
            body,
            redirected_away,
        }),
    }
}

/// [`http_fetch`] as a probe: 200–399 (or a redirect to another host) is a
/// success, another status `HTTP probe failed with statuscode: N`.
pub async fn http_get(
    action: &HTTPGetAction,
    container: &Container,
    target: &dyn ProbeTarget,
    timeout: Duration,
) -> Outcome {
    match http_fetch(action, container, target, timeout).await {
        Err(e) => Outcome::Failure(e),
        Ok(r) if r.redirected_away => Outcome::Success(format!(
            "Probe terminated redirects, Response body: {}",
            r.body
        )),
        Ok(r) if (200..400).contains(&r.status) => Outcome::Success(r.body),
        Ok(r) => Outcome::Failure(format!("HTTP probe failed with statuscode: {}", r.status)),
    }
}

/// Where a `Location` leads: same host (new path and port) or elsewhere.
enum Redirect {
    Same { port: u16, path: String },
    Away,
}

fn redirect_target(current: &HttpRequest, location: &str) -> Result<Redirect, String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Ok(Redirect::Same {
            port: current.port,
            path: location.to_string(),
        });
    }
    let uri: Uri = location
        .parse()
        .map_err(|e| format!("invalid redirect location {location:?}: {e}"))?;
    let Some(authority) = uri.authority() else {
        // A relative reference: resolve against the current directory.
        let dir = current.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        return Ok(Redirect::Same {
            port: current.port,
            path: format!("{dir}/{location}"),
        });
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !host.eq_ignore_ascii_case(&current.host) || uri.scheme_str() == Some("https") {
        return Ok(Redirect::Away);
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    Ok(Redirect::Same {
        port: authority.port_u16().unwrap_or(80),
        path,
    })
}

async fn follow(mut req: HttpRequest) -> Result<(StatusCode, String, bool), String> {
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, body) = send_once(&req).await?;
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            return Ok((status, body, false));
        };
        match redirect_target(&req, &location)? {
            Redirect::Away => return Ok((status, body, true)),
            Redirect::Same { port, path } => {
                req.port = port;
                req.path = path;
            }
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

async fn send_once(req: &HttpRequest) -> Result<(StatusCode, Option<String>, String), String> {
    let hp = join_host_port(&req.host, req.port);
    let addr = resolve(&req.host, req.port).await?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {hp}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake with {hp}: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let mut builder = Request::get(req.path.as_str());
        let host_value = match &req.host_header {
            Some(v) => v.clone(),
            None => HeaderValue::from_str(&hp).map_err(|e| format!("invalid host {hp:?}: {e}"))?,
        };
        builder = builder.header(HOST, host_value);
        let has = |n: &HeaderName| req.headers.iter().any(|(k, _)| k == n);
        if !has(&USER_AGENT) {
            builder = builder.header(USER_AGENT, USER_AGENT_VALUE);
        }
        if !has(&ACCEPT) {
            builder = builder.header(ACCEPT, "*/*");
        }
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let request = builder
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("invalid request for path {:?}: {e}", req.path))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request to {hp}: {e}"))?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = response.into_body();
        let mut data = Vec::new();
        while data.len() < MAX_BODY {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(format!("reading body from {hp}: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        data.extend_from_slice(&chunk);
                    }
                }
            }
        }
        Ok((status, location, lossy_capped(&data)))
    }
    .await;
    conn.abort();
    result
}
