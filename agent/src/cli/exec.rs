//! `herd exec NAME [-c C] [-i] [-t] -- CMD…`: a command in a container
//! over the exec WebSocket (`v5.channel.k8s.io`, falling back to v4).
//!
//! With `-i`, stdin is forwarded (and half-closed at EOF on v5); with `-it`
//! on a terminal, the local terminal is put in raw mode for the session
//! (restored on exit, SIGTERM and SIGHUP) and window sizes are sent at
//! start and on SIGWINCH. `-t` without `-i` or without a terminal on stdin
//! runs without a TTY, as kubectl. The process exits with the remote exit
//! code after printing `command terminated with exit code N`.

use std::io::{Read, Write};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::api::Resource;

use super::channel::{self, Channel, ExecStatus};
use super::client::ExecParams;
use super::logs::{default_container, pod_name};
use super::terminal;
use super::{Ctx, Exit};

/// `herd exec` flags.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The pod (NAME or pod/NAME).
    pub name: String,
    /// The container (default: the only or default one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the container.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Stdin is a TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments (after --).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn stdin_reader(tx: mpsc::Sender<Option<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Runs `herd exec`.
pub async fn run(ctx: &Ctx, args: ExecArgs) -> anyhow::Result<()> {
    let name = pod_name(&args.name)?;
    let pod: Pod = ctx.client.get(Resource::Pods, &ctx.namespace, name).await?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        bail!("cannot exec into a container in a completed pod; current phase is {phase}");
    }
    let container = match args.container {
        Some(c) => c,
        None => {
            let (c, msg) = default_container(&pod)?;
            if let Some(m) = msg {
                eprintln!("{m}");
            }
            c
        }
    };
    let mut tty = args.tty && args.stdin;
    if tty && !terminal::stdin_is_terminal() {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        tty = false;
    }
    let params = ExecParams {
        container: Some(container),
        command: args.command.clone(),
        stdin: args.stdin,
        stdout: true,
        stderr: !tty,
        tty,
    };
    let session = ctx.client.exec(&ctx.namespace, name, &params).await?;
    let protocol = session.protocol;
    let (mut sink, mut stream) = session.ws.split();
    let _raw = if tty {
        Some(terminal::RawMode::enable()?)
    } else {
        None
    };
    let mut winch = signal(SignalKind::window_change())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    if tty && let Some((w, h)) = terminal::size() {
        sink.send(Message::Binary(Bytes::from(channel::resize(w, h))))
            .await?;
    }
    let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(8);
    let mut stdin_open = args.stdin;
    if stdin_open {
        stdin_reader(tx);
    } else {
        drop(tx);
    }
    let mut status = None;
    let mut interrupted = false;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { break };
                let data = match msg? {
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                let (ch, payload) = channel::decode(&data)?;
                match ch {
                    Channel::Stdout => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(payload)?;
                        o.flush()?;
                    }
                    Channel::Stderr => {
                        let mut e = std::io::stderr().lock();
                        e.write_all(payload)?;
                        e.flush()?;
                    }
                    Channel::Error => status = Some(channel::exec_status(payload)?),
                    _ => {}
                }
            }
            input = rx.recv(), if stdin_open => {
                match input.flatten() {
                    Some(data) => {
                        sink.send(Message::Binary(Bytes::from(channel::encode(Channel::Stdin, &data)))).await?;
                    }
                    None => {
                        stdin_open = false;
                        if protocol.can_close() {
                            sink.send(Message::Binary(Bytes::from(channel::close_stdin()))).await?;
                        }
                    }
                }
            }
            _ = winch.recv(), if tty => {
                if let Some((w, h)) = terminal::size() {
                    sink.send(Message::Binary(Bytes::from(channel::resize(w, h)))).await?;
                }
            }
            _ = term.recv() => { interrupted = true; break; }
            _ = hup.recv() => { interrupted = true; break; }
        }
    }
    let _ = sink.close().await;
    drop(_raw);
    if interrupted {
        return Err(Exit { code: 130 }.into());
    }
    match status {
        None | Some(ExecStatus::Success) => Ok(()),
        Some(ExecStatus::ExitCode(n)) => {
            eprintln!("command terminated with exit code {n}");
            Err(Exit { code: n }.into())
        }
        Some(ExecStatus::Failure(m)) => bail!("{m}"),
    }
}
