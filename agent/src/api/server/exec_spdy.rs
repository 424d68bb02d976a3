//! Exec over SPDY/3.1 (`X-Stream-Protocol-Version: v4.channel.k8s.io`):
//! what kubectl before 1.30 speaks, and 1.30+ with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`.
//!
//! Guarantees:
//! - The client opens one stream per channel, named by its `streamType`
//!   header: `error` always, `stdin`/`stdout` as asked, `stderr` unless a
//!   tty is asked, `resize` with a tty. Each is answered (SYN_REPLY) when it
//!   arrives; the command starts once all are there (30 s at most, as the
//!   kubelet's stream creation timeout).
//! - Output is copied until the command's pipes close; then stdout and
//!   stderr are half-closed and the v4 `Status` (Success, or Failure with
//!   `NonZeroExitCode` and the code in `details.causes`) is written to the
//!   error stream, which is closed last. A client that goes away kills the
//!   command.
//! - Resize messages are JSON objects `{"Width":..,"Height":..}`, one after
//!   another on the resize stream.

use std::io::Write;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use herd_runtime::pod::ContainerRecord;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exec::{ExecRequest, exit_status, kill, spawn_reader};
use super::spdy::headers::Headers;
use super::spdy::session::{Config, Session};
use super::spdy::stream::Stream;
use super::{ApiResult, Failure};
use crate::api::ApiError;
use crate::api::error::Reason;

/// The one remotecommand version served over SPDY.
pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open its streams.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the request asks for a SPDY upgrade.
pub fn is_spdy(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

/// Answers 101 and serves the exec on the upgraded connection.
pub fn upgrade(
    mut req: Request,
    runtime: std::sync::Arc<herd_runtime::pod::PodRuntime>,
    rec: ContainerRecord,
    exec: ExecRequest,
) -> ApiResult {
    let offered = super::portforward::header_values(req.headers(), "x-stream-protocol-version");
    if !offered.iter().any(|p| p == PROTOCOL) {
        return Err(Failure::from(ApiError::new(
            Reason::Forbidden,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PROTOCOL}\"]"
            ),
        )));
    }
    Ok(super::spdy::upgrade(
        &mut req,
        PROTOCOL,
        "exec",
        move |io| serve(io, runtime, rec, exec),
    )?)
}

#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, exec: &ExecRequest) -> bool {
        self.error.is_some()
            && (!exec.stdin || self.stdin.is_some())
            && (!exec.stdout || self.stdout.is_some())
            && (!exec.stderr || exec.tty || self.stderr.is_some())
            && (!exec.tty || self.resize.is_some())
    }
}

async fn collect(session: &mut Session, exec: &ExecRequest) -> Option<Streams> {
    let mut s = Streams::default();
    let gather = async {
        while !s.complete(exec) {
            let mut stream = session.accept().await?;
            stream.reply(Headers::default()).ok()?;
            let kind = stream.headers().get("streamtype").unwrap_or("").to_string();
            let slot = match kind.as_str() {
                "error" => &mut s.error,
                "stdin" => &mut s.stdin,
                "stdout" => &mut s.stdout,
                "stderr" => &mut s.stderr,
                "resize" => &mut s.resize,
                other => {
                    tracing::debug!(stream = other, "exec: unknown stream type");
                    continue;
                }
            };
            *slot = Some(stream);
        }
        Some(())
    };
    tokio::time::timeout(STREAMS_TIMEOUT, gather).await.ok()??;
    Some(s)
}

async fn serve<T>(
    io: T,
    runtime: std::sync::Arc<herd_runtime::pod::PodRuntime>,
    rec: ContainerRecord,
    exec: ExecRequest,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut session = Session::server(io, Config::default());
    let Some(streams) = collect(&mut session, &exec).await else {
        tracing::debug!("exec: the client did not open its streams");
        return;
    };
    let Streams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    let Some(mut error) = error else { return };
    let cmd = exec.command.clone();
    let (tty, want_stdin) = (exec.tty, exec.stdin);
    let started = tokio::task::spawn_blocking(move || {
        runtime.exec_streaming(&rec, exec.command, tty, want_stdin)
    })
    .await;
    let mut sess = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return write_status(&mut error, exit_status(&cmd, Err(e.to_string()))).await,
        Err(e) => return write_status(&mut error, exit_status(&cmd, Err(e.to_string()))).await,
    };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(64);
    if let Some(r) = sess.stdout.take() {
        spawn_reader(r, 1, out_tx.clone());
    }
    if let Some(r) = sess.stderr.take() {
        spawn_reader(r, 2, out_tx.clone());
    }
    drop(out_tx);
    // stdin: the stream is read here and written on a thread.
    if let (Some(mut from), Some(mut to)) = (stdin, sess.stdin.take()) {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for data in rx {
                if to.write_all(&data).and_then(|()| to.flush()).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    if let (Some(mut from), Some(r)) = (resize, sess.take_resizer()) {
        tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                let mut de = serde_json::Deserializer::from_slice(&pending).into_iter::<Value>();
                let mut used = 0;
                while let Some(Ok(size)) = de.next() {
                    used = de.byte_offset();
                    let w = size.get("Width").and_then(Value::as_u64).unwrap_or(80);
                    let h = size.get("Height").and_then(Value::as_u64).unwrap_or(24);
                    let _ = r.resize(
                        u16::try_from(w).unwrap_or(u16::MAX),
                        u16::try_from(h).unwrap_or(u16::MAX),
                    );
                }
                pending.drain(..used);
                if pending.len() > 64 * 1024 {
                    break;
                }
            }
        });
    }
    let pid = sess.pid();
    let waiter = tokio::task::spawn_blocking(move || sess.wait());
    let (mut stdout, mut stderr) = (stdout, stderr);
    let mut client_gone = false;
    while let Some((ch, data)) = out_rx.recv().await {
        // With a tty, stderr is merged into stdout by the terminal.
        let to = match ch {
            2 => stderr.as_mut().or(stdout.as_mut()),
            _ => stdout.as_mut(),
        };
        if let Some(s) = to
            && s.write_all(&data).await.is_err()
        {
            client_gone = true;
            break;
        }
    }
    if client_gone {
        kill(pid);
        let _ = waiter.await;
        return;
    }
    for s in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = s.shutdown().await;
    }
    let result = match waiter.await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    write_status(&mut error, exit_status(&cmd, result)).await;
    // The client closes the connection once it has the status.
    let _ = tokio::time::timeout(Duration::from_secs(10), session.finish()).await;
}

async fn write_status(error: &mut Stream, status: Value) {
    let _ = error.write_all(status.to_string().as_bytes()).await;
    let _ = error.shutdown().await;
}
