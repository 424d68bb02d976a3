//! SPDY/3.1, server side, as `kubectl port-forward` (and exec/attach of
//! older clients) speaks it through `k8s.io/apimachinery`'s
//! `httpstream/spdy`, which uses `moby/spdystream`.
//!
//! Layers: [`frame`] (wire format), [`headers`] (name/value blocks with
//! one zlib context per direction primed with the SPDY/3 dictionary),
//! [`flow`] (windows), [`session`] (the server: accepts client-initiated
//! streams and hands them out as [`Stream`]s, `AsyncRead + AsyncWrite`),
//! [`ws`] (an `AsyncRead + AsyncWrite` over a WebSocket's binary messages,
//! for kubectl's `SPDY/3.1+portforward.k8s.io` tunnel).
//!
//! Not implemented: server-initiated streams, server PINGs, a GOAWAY(OK)
//! when the server side ends (the connection just closes), waiting for
//! the peer's window (spdystream does no flow control), CREDENTIAL frames.

pub mod flow;
pub mod frame;
pub mod headers;
pub mod session;
pub mod stream;
#[cfg(test)]
pub(crate) mod test_client;
pub mod ws;

pub use headers::Headers;
pub use session::{Config, Session};
pub use stream::Stream;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy frame: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("spdy header block: {0}")]
    Header(#[from] headers::HeaderError),
    #[error("spdy connection: {0}")]
    Io(#[source] std::io::Error),
    #[error("spdy connection closed inside a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("spdy session task: {0}")]
    Task(String),
}

/// Answers an HTTP `Upgrade: SPDY/3.1` request with `101` and
/// `X-Stream-Protocol-Version: protocol`, and runs `serve` on the upgraded
/// connection. `what` names the caller in logs.
pub fn upgrade<F, Fut>(
    req: &mut axum::extract::Request,
    protocol: &'static str,
    what: &'static str,
    serve: F,
) -> Result<axum::response::Response, crate::api::ApiError>
where
    F: FnOnce(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use axum::http::{StatusCode, header};
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "{what}: spdy upgrade"),
        }
    });
    axum::response::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(axum::body::Body::empty())
        .map_err(|e| crate::api::ApiError::internal(e.to_string()))
}
