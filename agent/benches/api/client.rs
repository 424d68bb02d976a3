//! The benchmark's HTTP/1.1 client: one keep-alive connection per task
//! (as kubectl/client-go keep one), over TLS with a client certificate for
//! herd and over plain TCP for etcd's gRPC gateway. Both sides pay the same
//! HTTP/1.1 + JSON costs; response bodies are read whole but not decoded
//! (except where the benchmark needs a field).

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::sync::mpsc;

/// Where and how to connect: TLS (herd) or plain (etcd), and the network
/// namespace the socket is opened in (sockets keep it afterwards).
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub netns: Option<std::path::PathBuf>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The TLS config from a kubeconfig written by `herd kubeconfig`: trusts
/// its `certificate-authority-data`, presents its client certificate.
pub fn tls_from_kubeconfig(path: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut text = String::new();
    std::fs::File::open(path)
        .with_context(|| format!("open {}", path.display()))?
        .read_to_string(&mut text)?;
    let field = |name: &str| -> Result<Vec<u8>> {
        let v = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} in {}", path.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(v.trim())?)
    };
    let ca = field("certificate-authority-data")?;
    let cert = field("client-certificate-data")?;
    let key = field("client-key-data")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&key)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TCP connection to `addr`, opened inside `netns` when given (on a
/// short-lived thread that setns'es, so the caller stays where it is).
fn tcp(addr: SocketAddr, netns: Option<&Path>) -> Result<std::net::TcpStream> {
    let Some(ns) = netns else {
        return Ok(std::net::TcpStream::connect(addr)?);
    };
    let ns = std::fs::File::open(ns).with_context(|| format!("open {}", ns.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<std::net::TcpStream> {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(std::net::TcpStream::connect(addr)?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("connect thread panicked"))?
    })
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(t: &Target) -> Result<Conn> {
        let std = tcp(t.addr, t.netns.as_deref())?;
        std.set_nonblocking(true)?;
        std.set_nodelay(true)?;
        let tcp = tokio::net::TcpStream::from_std(std)?;
        let host = t.addr.to_string();
        let send = match &t.tls {
            Some(cfg) => {
                let name = ServerName::IpAddress(t.addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake")?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                send
            }
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                send
            }
        };
        Ok(Conn { send, host })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Response<Incoming>> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Full::new(body.unwrap_or_default()))?;
        self.send.ready().await?;
        Ok(self.send.send_request(req).await?)
    }

    /// Sends a request and reads the whole body; errors unless 2xx.
    pub async fn call(&mut self, method: &str, path: &str, body: Option<Bytes>) -> Result<Bytes> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(400)])
            );
        }
        Ok(body)
    }

    /// Sends a streaming request (a watch) and forwards every complete
    /// JSON value of the response body, with the instant it was parsed,
    /// to the returned channel until the stream ends.
    pub async fn stream(
        mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<mpsc::UnboundedReceiver<(Instant, Value)>> {
        let resp = self.send(method, path, body).await?;
        if !resp.status().is_success() {
            bail!("{method} {path}: {}", resp.status());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _conn = self;
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                let now = Instant::now();
                let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                let mut used = 0;
                while let Some(Ok(v)) = it.next() {
                    used = it.byte_offset();
                    if tx.send((now, v)).is_err() {
                        return;
                    }
                }
                let _ = buf.split_to(used);
            }
        });
        Ok(rx)
    }
}
