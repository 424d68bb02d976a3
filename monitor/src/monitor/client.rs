//! The agent's side: spawning a pod's monitor and talking to it.
//!
//! [`spawn_monitor`] double-forks (with `setsid`) so the monitor is not the
//! agent's child and outlives it; the intermediate process is reaped at
//! once. Readiness is deterministic: the monitor inherits the write end of
//! a pipe and writes `R` after its socket is bound, or `E<reason>` when its
//! setup fails; EOF without either means it died (see
//! `<pod_dir>/monitor.log`, whose tail the error carries).
//!
//! [`MonitorClient`] opens one connection per request, so calls may be made
//! from several threads at once and a blocking `Wait` holds only its own
//! connection. All calls are blocking (use `spawn_blocking` from async code).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::pipe::{PipeFlags, pipe_with};

use super::MonitorError;
use super::protocol::{MAX_RESPONSE, Request, Response, StartContainer, encode};
use super::state::{ContainerRecord, ExitRecord};

/// How long a new monitor may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on a pod's monitor (just its socket path: cheap to clone).
#[derive(Debug, Clone)]
pub struct MonitorClient {
    pod_dir: PathBuf,
    sock_path: PathBuf,
}

/// Starts the monitor for `pod_dir`: runs `exe exe_args… --pod-dir DIR
/// --ready-fd N` detached from the caller, and waits until it is ready.
pub fn spawn_monitor(
    exe: &Path,
    exe_args: &[OsString],
    pod_dir: &Path,
) -> Result<MonitorClient, MonitorError> {
    start_monitor(exe, exe_args, pod_dir)?.wait_ready()
}

/// A monitor that was started but may not be ready yet: the caller can do
/// other work (cgroups, namespaces) while it execs and binds its socket.
#[derive(Debug)]
pub struct PendingMonitor {
    ready: File,
    log_path: PathBuf,
    pod_dir: PathBuf,
}

impl PendingMonitor {
    /// Waits for the ready signal (bounded).
    pub fn wait_ready(self) -> Result<MonitorClient, MonitorError> {
        wait_ready(&self.ready, &self.log_path)?;
        Ok(MonitorClient::at(&self.pod_dir))
    }
}

/// The first half of [`spawn_monitor`]: forks and execs the monitor and
/// returns without waiting for it.
pub fn start_monitor(
    exe: &Path,
    exe_args: &[OsString],
    pod_dir: &Path,
) -> Result<PendingMonitor, MonitorError> {
    let setup = |what: &str, path: &Path| {
        let what = what.to_string();
        let path = path.to_path_buf();
        move |source| MonitorError::Setup { what, path, source }
    };
    std::fs::create_dir_all(pod_dir).map_err(setup("mkdir", pod_dir))?;
    let pod_dir = std::fs::canonicalize(pod_dir).map_err(setup("canonicalize", pod_dir))?;
    let log_path = pod_dir.join("monitor.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(setup("open", &log_path))?;
    let log2 = log.try_clone().map_err(setup("dup", &log_path))?;
    let (ready_r, ready_w) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| MonitorError::Spawn {
        exe: exe.to_path_buf(),
        source: e.into(),
    })?;
    let w_raw = ready_w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(exe_args)
        .arg("--pod-dir")
        .arg(&pod_dir)
        .arg("--ready-fd")
        .arg(w_raw.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (setsid, fork, _exit, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => {
                    // The grandchild becomes the monitor: keep the ready pipe
                    // open across exec.
                    if libc::fcntl(w_raw, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                }
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = cmd.spawn().map_err(|source| MonitorError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    // The intermediate exits at once; reap it.
    let _ = child.wait();
    drop(cmd);
    drop(ready_w);
    Ok(PendingMonitor {
        ready: File::from(ready_r),
        log_path,
        pod_dir,
    })
}

fn wait_ready(ready: &File, log_path: &Path) -> Result<(), MonitorError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MonitorError::NotReady {
                reason: format!("no ready signal within {READY_TIMEOUT:?}"),
                log: log_tail(log_path),
            });
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(ready, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => break,
            Err(e) => {
                return Err(MonitorError::NotReady {
                    reason: format!("poll: {e}"),
                    log: log_tail(log_path),
                });
            }
        }
    }
    // `R`: ready. `E<message>`: setup failed. EOF: it died first.
    let mut msg = Vec::new();
    let _ = ready.take(4096).read_to_end(&mut msg);
    match msg.split_first() {
        Some((b'R', _)) => Ok(()),
        Some((b'E', reason)) => Err(MonitorError::NotReady {
            reason: String::from_utf8_lossy(reason).into_owned(),
            log: log_tail(log_path),
        }),
        _ => Err(MonitorError::NotReady {
            reason: "monitor exited before it was ready".to_string(),
            log: log_tail(log_path),
        }),
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let tail = &text[text.len().saturating_sub(2048)..];
    String::from_utf8_lossy(tail).trim().to_string()
}

impl MonitorClient {
    fn at(pod_dir: &Path) -> MonitorClient {
        MonitorClient {
            pod_dir: pod_dir.to_path_buf(),
            sock_path: pod_dir.join("monitor.sock"),
        }
    }

    /// Connects to the running monitor of `pod_dir` (after an agent
    /// restart); fails if none answers.
    pub fn connect(pod_dir: &Path) -> Result<MonitorClient, MonitorError> {
        let client = MonitorClient::at(pod_dir);
        client.open(Some(Duration::from_secs(5)))?;
        Ok(client)
    }

    pub fn pod_dir(&self) -> &Path {
        &self.pod_dir
    }

    fn open(&self, timeout: Option<Duration>) -> Result<UnixStream, MonitorError> {
        let conn = |source| MonitorError::Connect {
            path: self.sock_path.clone(),
            source,
        };
        let s = UnixStream::connect(&self.sock_path).map_err(conn)?;
        s.set_read_timeout(timeout).map_err(conn)?;
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(conn)?;
        Ok(s)
    }

    /// Sends one request and reads its response (`timeout`: how long to
    /// wait for the answer; `None` waits forever).
    pub fn request(
        &self,
        req: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, MonitorError> {
        let mut s = self.open(timeout)?;
        let proto = |source| MonitorError::Io {
            path: self.sock_path.clone(),
            source,
        };
        s.write_all(&encode(req)).map_err(proto)?;
        let mut line = Vec::new();
        let mut reader = BufReader::new(s).take(MAX_RESPONSE as u64 + 1);
        reader.read_until(b'\n', &mut line).map_err(proto)?;
        if line.last() != Some(&b'\n') {
            return Err(MonitorError::Protocol(if line.len() > MAX_RESPONSE {
                "response too long".to_string()
            } else {
                "connection closed before a response".to_string()
            }));
        }
        serde_json::from_slice(&line)
            .map_err(|e| MonitorError::Protocol(format!("bad response: {e}")))
    }

    fn unexpected(r: Response) -> MonitorError {
        match r {
            Response::Error {
                message,
                exit_status,
                stderr,
            } => MonitorError::Remote {
                message,
                exit_status,
                stderr,
            },
            other => MonitorError::Protocol(format!("unexpected response {other:?}")),
        }
    }

    /// Starts a container; returns its init pid.
    pub fn start_container(&self, req: StartContainer) -> Result<u32, MonitorError> {
        match self.request(
            &Request::StartContainer(req),
            Some(Duration::from_secs(120)),
        )? {
            Response::Started { pid } => Ok(pid),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Waits until the container's exit is recorded (logs complete).
    pub fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitRecord, MonitorError> {
        match self.request(&Request::Wait { id: id.to_string() }, timeout)? {
            Response::Exited(r) => Ok(r),
            other => Err(Self::unexpected(other)),
        }
    }

    pub fn list(&self) -> Result<Vec<ContainerRecord>, MonitorError> {
        match self.request(&Request::List, Some(Duration::from_secs(10)))? {
            Response::Containers { containers } => Ok(containers),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Asks the monitor to exit once no container runs; returns how many
    /// still do.
    pub fn shutdown(&self) -> Result<usize, MonitorError> {
        match self.request(&Request::Shutdown, Some(Duration::from_secs(10)))? {
            Response::ShuttingDown { running } => Ok(running),
            other => Err(Self::unexpected(other)),
        }
    }

    /// The monitor's pid from `monitor.pid`.
    pub fn pid(&self) -> Result<u32, MonitorError> {
        let path = self.pod_dir.join("monitor.pid");
        let text = std::fs::read_to_string(&path).map_err(|source| MonitorError::Io {
            path: path.clone(),
            source,
        })?;
        text.trim()
            .parse()
            .map_err(|_| MonitorError::Protocol(format!("{} holds no pid", path.display())))
    }
}
