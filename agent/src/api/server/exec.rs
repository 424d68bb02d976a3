//! `GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec` over WebSocket
//! (subprotocols `v5.channel.k8s.io`, `v4.channel.k8s.io`, as kubectl 1.30+
//! speaks them) or over SPDY/3.1 ([`super::exec_spdy`], older kubectls).
//!
//! Binary messages carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the
//! final `Status` (Success, or Failure/NonZeroExitCode with the exit code
//! in `details.causes`), 4 terminal resize `{"Width":..,"Height":..}`;
//! with v5, `[255, 0]` closes stdin. The status is sent after all output;
//! then the socket is closed. A client that goes away kills the exec.

use std::io::{Read, Write};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::response::IntoResponse;
use herd_runtime::pod::{ContainerRecord, ContainerState};
use serde_json::{Value, json};

use super::logs::{attempts, resolve, waiting};
use super::query::Query;
use super::{ApiResult, ApiState, Failure};
use crate::api::ApiError;

pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What the client asked to run, and which streams it wants.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub async fn exec(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    request: axum::extract::Request,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let command = q.all("command");
    if command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        )
        .into());
    }
    let req = ExecRequest {
        command,
        stdin: q.flag("stdin")?,
        stdout: q.flag("stdout")?,
        stderr: q.flag("stderr")?,
        tty: q.flag("tty")?,
    };
    let spdy = super::exec_spdy::is_spdy(request.headers());
    let (mut parts, _) = request.into_parts();
    let ws = if spdy {
        None
    } else {
        Some(
            WebSocketUpgrade::from_request_parts(&mut parts, &state)
                .await
                .map_err(|_| {
                    ApiError::bad_request(
                        "Upgrade request required: exec is served over WebSocket or SPDY/3.1",
                    )
                })?,
        )
    };
    let container = q.get("container").map(str::to_string);
    let st = state.clone();
    let n = name.clone();
    let (target, rec) = tokio::task::spawn_blocking(move || {
        let t = resolve(&st, &ns, &n, container.as_deref())?;
        match attempts(&t)?.pop() {
            Some((rec, ContainerState::Running { .. })) => Ok((t, rec)),
            Some(_) => Err(Failure::from(ApiError::bad_request(format!(
                "container {} is not running in pod {n}",
                t.container
            )))),
            None => Err(waiting(&t.container, &n)),
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let runtime = target.runtime;
    match ws {
        Some(ws) => Ok(ws
            .protocols(PROTOCOLS)
            .on_upgrade(move |socket| session(socket, runtime, rec, req))
            .into_response()),
        None => super::exec_spdy::upgrade(
            axum::extract::Request::from_parts(parts, axum::body::Body::empty()),
            runtime,
            rec,
            req,
        ),
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The channel-3 `Status` for an exit code or a failure to run.
pub fn exit_status(command: &[String], result: Result<i32, String>) -> Value {
    match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

pub(super) fn spawn_reader(
    mut r: Box<dyn Read + Send>,
    channel: u8,
    tx: tokio::sync::mpsc::Sender<(u8, Vec<u8>)>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send((channel, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

async fn session(
    mut socket: WebSocket,
    runtime: std::sync::Arc<herd_runtime::pod::PodRuntime>,
    rec: ContainerRecord,
    req: ExecRequest,
) {
    let cmd = req.command.clone();
    let started = tokio::task::spawn_blocking(move || {
        runtime.exec_streaming(&rec, req.command, req.tty, req.stdin)
    })
    .await;
    let mut sess = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return finish(socket, exit_status(&cmd, Err(e.to_string()))).await,
        Err(e) => return finish(socket, exit_status(&cmd, Err(e.to_string()))).await,
    };
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(64);
    if let Some(r) = sess.stdout.take() {
        spawn_reader(r, 1, out_tx.clone());
    }
    if let Some(r) = sess.stderr.take() {
        spawn_reader(r, 2, out_tx.clone());
    }
    drop(out_tx);
    // stdin: written on a thread; dropping the sender closes it.
    let mut stdin_tx = sess.stdin.take().map(|mut w| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for data in rx {
                if w.write_all(&data).and_then(|()| w.flush()).is_err() {
                    break;
                }
            }
        });
        tx
    });
    let resizer = sess.take_resizer();
    let pid = sess.pid();
    let waiter = tokio::task::spawn_blocking(move || sess.wait());
    let mut client_gone = false;
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some((ch, data)) => {
                    if socket.send(frame(ch, &data)).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                None => break,
            },
            msg = socket.recv(), if !client_gone => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    0 => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(b[1..].to_vec());
                        }
                    }
                    4 => {
                        if let (Some(r), Ok(size)) = (&resizer, serde_json::from_slice::<Value>(&b[1..])) {
                            let w = size.get("Width").and_then(Value::as_u64).unwrap_or(80);
                            let h = size.get("Height").and_then(Value::as_u64).unwrap_or(24);
                            let _ = r.resize(
                                u16::try_from(w).unwrap_or(u16::MAX),
                                u16::try_from(h).unwrap_or(u16::MAX),
                            );
                        }
                    }
                    255 if b.get(1) == Some(&0) => stdin_tx = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    client_gone = true;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin_tx);
    if client_gone {
        kill(pid);
        let _ = waiter.await;
        return;
    }
    let result = match waiter.await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    finish(socket, exit_status(&cmd, result)).await;
}

pub(super) fn kill(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

async fn finish(mut socket: WebSocket, status: Value) {
    let _ = socket.send(frame(3, status.to_string().as_bytes())).await;
    // A normal closure (1000): kubectl treats a close without a code
    // (1005) as an error on the streams it still reads.
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_objects() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        assert_eq!(exit_status(&cmd, Ok(0))["status"], "Success");
        let f = exit_status(&cmd, Ok(3));
        assert_eq!(f["reason"], "NonZeroExitCode");
        assert_eq!(f["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(f["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&cmd, Err("boom".into()))["status"], "Failure");
    }
}
