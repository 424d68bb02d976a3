//! The per-pod monitor: `herd-monitor --pod-dir DIR` (or `herd monitor`,
//! the agent's binary re-executed; see [`exe`]), one small process per pod.
//!
//! It is a child subreaper and the parent of every container of its pod
//! (`runc run --detach` exits and the container init is reparented to it),
//! holds their stdio (pipes, or the pty master received on a console
//! socket), writes their CRI logs, records exit codes and OOM kills to
//! durable files under `<pod_dir>/containers/<id>/` (see [`state`]), and
//! reaps every orphan that lands on it. It never depends on the agent, so
//! containers survive an agent restart or upgrade; the agent reconnects
//! with [`MonitorClient::connect`] or reads the state files directly.
//!
//! No async runtime and no threads: a blocking poll(2) loop ([`server`])
//! keeps it under 2 MB RSS. The agent spawns it with [`spawn_monitor`] and
//! talks to it over `<pod_dir>/monitor.sock` ([`protocol`]).
//!
//! The entry point [`main_from_args`] must be called before any async
//! runtime or thread is started (signals are blocked per thread).
//!
//! SIGTERM and SIGINT act like `Shutdown`: the monitor stops accepting
//! starts and exits after its last container; it never signals containers
//! itself (stopping them is the agent's job, through the OCI runtime).
//!
//! Stdio: a container's stdout/stderr are pipes whose read ends only the
//! monitor holds; its exit is recorded once both reached EOF, or
//! [`EOF_GRACE`] after the init was reaped if a process that
//! escaped the container's PID namespace keeps them open.
//!
//! Not handled: a monitor that dies (SIGKILL) orphans its containers to the
//! next subreaper/PID 1; their exits are then lost (the agent sees a
//! container without `exit.json` whose pid is gone). A monitor restarted on
//! the same pod dir answers `Wait` from the `exit.json` files but does not
//! re-adopt running containers.

pub mod client;
mod container;
pub mod exe;
pub mod protocol;
pub mod server;
pub mod state;
pub mod sys;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

pub use client::{MonitorClient, PendingMonitor, spawn_monitor, start_monitor};
pub use container::EOF_GRACE;
pub use exe::{MonitorChoice, MonitorCommand, choose_monitor, version_line};
pub use protocol::{Request, Response, StartContainer};
pub use state::{ContainerRecord, ExitRecord, StartedRecord};

/// Errors of the monitor process and its client.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor setup, {what} {path}: {source}")]
    Setup {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a monitor already listens on {0}")]
    AlreadyRunning(PathBuf),
    #[error("monitor poll loop: {0}")]
    Poll(#[source] std::io::Error),
    #[error("monitor binary {exe}: {reason}")]
    Binary { exe: PathBuf, reason: String },
    #[error("bad monitor arguments: {0}")]
    Usage(String),
    #[error("cannot spawn monitor {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor did not become ready: {reason}; monitor.log: {log}")]
    NotReady { reason: String, log: String },
    #[error("cannot connect to monitor at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor connection {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor protocol: {0}")]
    Protocol(String),
    #[error("monitor: {message}")]
    Remote {
        message: String,
        exit_status: Option<i32>,
        stderr: Option<String>,
    },
}

/// Parsed `monitor` arguments.
#[derive(Debug)]
pub struct MonitorArgs {
    pub pod_dir: PathBuf,
    pub ready_fd: Option<i32>,
}

/// Parses `--pod-dir DIR [--ready-fd N]`.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<MonitorArgs, MonitorError> {
    let mut pod_dir = None;
    let mut ready_fd = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--pod-dir") => pod_dir = it.next().map(PathBuf::from),
            Some("--ready-fd") => {
                let v = it
                    .next()
                    .and_then(|v| v.to_str().and_then(|s| s.parse::<i32>().ok()));
                ready_fd = Some(v.filter(|fd| *fd > 2).ok_or_else(|| {
                    MonitorError::Usage("--ready-fd needs a file descriptor number above 2".into())
                })?);
            }
            _ => return Err(MonitorError::Usage(format!("unexpected argument {a:?}"))),
        }
    }
    let pod_dir = pod_dir.ok_or_else(|| MonitorError::Usage("--pod-dir DIR is required".into()))?;
    if !pod_dir.is_absolute() {
        return Err(MonitorError::Usage(format!(
            "--pod-dir {} must be absolute",
            pod_dir.display()
        )));
    }
    Ok(MonitorArgs { pod_dir, ready_fd })
}

/// Runs the monitor with parsed arguments until it shuts down.
pub fn run(args: MonitorArgs) -> Result<(), MonitorError> {
    // Descriptors the spawner leaked without CLOEXEC (a build jobserver, a
    // test harness's pipes) must not be held open by the monitor for its
    // lifetime nor reach runc: close all but stdio and the ready fd.
    let keep = args.ready_fd.unwrap_or(2).max(2);
    // SAFETY: close_range only closes descriptors; nothing in this process
    // owns any above 2 yet except the ready fd, which is kept.
    unsafe {
        if keep > 2 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
    let ready = match args.ready_fd {
        Some(fd) => {
            // SAFETY: fcntl(F_GETFD) only queries the descriptor.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(MonitorError::Usage(format!("--ready-fd {fd} is not open")));
            }
            // SAFETY: the fd is open (checked above) and was passed to us
            // by the spawner for this purpose only; nothing else in this
            // process owns it.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        None => None,
    };
    let mut ready = ready;
    match server::Server::bind(&args.pod_dir, &mut ready) {
        Ok(server) => server.run(),
        Err(e) => {
            // Tell the spawner why, through the ready pipe itself.
            if let Some(fd) = ready.take() {
                let _ = std::fs::File::from(fd).write_all(format!("E{e}").as_bytes());
            }
            Err(e)
        }
    }
}

/// `herd monitor …`: parses `args` (after the subcommand), runs the
/// monitor, and returns the process exit code. Errors go to stderr (the
/// pod's `monitor.log`).
pub fn main_from_args<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.len() == 1 && args[0] == "--pid-holder" {
        crate::pidns::run_holder();
    }
    match parse_args(args).and_then(run) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("herd monitor: {e}");
            1
        }
    }
}
