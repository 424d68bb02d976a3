//! One container inside the monitor: starting it through the OCI runtime,
//! draining its stdio into the CRI log, and recording its exit.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustix::pipe::{PipeFlags, pipe_with};

use super::protocol::{Response, StartContainer};
use super::state::{self, ContainerRecord, ExitRecord, StartedRecord};
use super::sys::{Reaped, set_nonblocking};
use crate::logs::timestamp::format_rfc3339_nano;
use crate::logs::{LineSplitter, LogWriter, Stream};
use crate::oci::{ConsoleSocket, ContainerStdio, OciError, OciRuntime, validate_id};

/// How long a tty runtime may take to send the pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the container's exit its stdio may stay open (held by a
/// process that escaped into another PID namespace) before the exit is
/// recorded anyway.
pub const EOF_GRACE: Duration = Duration::from_secs(2);

/// A stdio stream being drained into the log.
#[derive(Debug)]
pub struct Pipe {
    pub file: File,
    pub stream: Stream,
    splitter: LineSplitter,
}

#[derive(Debug)]
pub enum Status {
    Running,
    /// Reaped; waiting for its stdio to reach EOF.
    Draining {
        reaped: Reaped,
        finished_at: SystemTime,
        oom_killed: bool,
        deadline: Instant,
    },
    Exited(ExitRecord),
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub pid: u32,
    pub started_at: String,
    pub status: Status,
    /// stdout, stderr (a tty container has only the pty in slot 0).
    pub pipes: [Option<Pipe>; 2],
    log: Option<LogWriter>,
    log_failed: bool,
    /// Our end of the container's stdin, kept open while it runs.
    stdin: Option<OwnedFd>,
    oom_file: Option<PathBuf>,
    oom_base: u64,
}

fn failure(message: String, e: Option<&OciError>) -> Response {
    let (exit_status, stderr) = match e {
        Some(OciError::Failed { status, stderr, .. }) => (status.code(), Some(stderr.clone())),
        _ => (None, None),
    };
    Response::Error {
        message,
        exit_status,
        stderr,
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe_with(PipeFlags::CLOEXEC).map_err(io::Error::from)
}

fn dev_null() -> io::Result<OwnedFd> {
    File::options()
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
}

impl Container {
    /// Runs `req` with the OCI runtime and returns the running container,
    /// or the error response for the client.
    pub fn start(pod_dir: &Path, req: StartContainer) -> Result<Container, Response> {
        validate_id(&req.id).map_err(|e| failure(e.to_string(), None))?;
        if !req.bundle.is_absolute() || !req.log_path.is_absolute() {
            return Err(Response::error(
                "bundle and log_path must be absolute paths",
            ));
        }
        let dir = state::container_dir(pod_dir, &req.id);
        fs::create_dir_all(&dir)
            .map_err(|e| Response::error(format!("cannot create {}: {e}", dir.display())))?;
        for stale in [
            state::exit_path(pod_dir, &req.id),
            state::started_path(pod_dir, &req.id),
        ] {
            let _ = fs::remove_file(stale);
        }
        let log = LogWriter::open(&req.log_path, req.log_limits)
            .map_err(|e| Response::error(e.to_string()))?;
        let io_fail = |what: &str, e: io::Error| Response::error(format!("{what}: {e}"));

        let runtime = OciRuntime::new(req.runtime.clone());
        let mut pipes: [Option<Pipe>; 2] = [None, None];
        let mut stdin_keep = None;
        let pid = if req.tty {
            let sock_path = pod_dir.join("console.sock");
            let console =
                ConsoleSocket::bind(&sock_path).map_err(|e| failure(e.to_string(), None))?;
            let stdio = ContainerStdio {
                stdin: None,
                stdout: dev_null().map_err(|e| io_fail("/dev/null", e))?,
                stderr: dev_null().map_err(|e| io_fail("/dev/null", e))?,
            };
            let pid = runtime
                .run_detached(&req.id, &req.bundle, stdio, Some(&sock_path))
                .map_err(|e| failure(e.to_string(), Some(&e)))?;
            let master = match console.receive(CONSOLE_TIMEOUT) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = runtime.kill(&req.id, libc::SIGKILL, true);
                    return Err(failure(
                        format!("container {} started without a console: {e}", req.id),
                        None,
                    ));
                }
            };
            set_nonblocking(master.as_fd()).map_err(|e| io_fail("pty", e))?;
            if req.stdin {
                stdin_keep = master.try_clone().ok();
            }
            pipes[0] = Some(Pipe {
                file: File::from(master),
                stream: Stream::Stdout,
                splitter: LineSplitter::new(),
            });
            pid
        } else {
            let (out_r, out_w) = pipe_pair().map_err(|e| io_fail("pipe", e))?;
            let (err_r, err_w) = pipe_pair().map_err(|e| io_fail("pipe", e))?;
            let stdin = if req.stdin {
                let (in_r, in_w) = pipe_pair().map_err(|e| io_fail("pipe", e))?;
                stdin_keep = Some(in_w);
                Some(in_r)
            } else {
                None
            };
            let stdio = ContainerStdio {
                stdin,
                stdout: out_w,
                stderr: err_w,
            };
            // The write ends are closed when the runtime's Command is
            // dropped, so only the container holds them afterwards.
            let pid = runtime
                .run_detached(&req.id, &req.bundle, stdio, None)
                .map_err(|e| failure(e.to_string(), Some(&e)))?;
            for (slot, (fd, stream)) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)]
                .into_iter()
                .enumerate()
            {
                set_nonblocking(fd.as_fd()).map_err(|e| io_fail("pipe", e))?;
                pipes[slot] = Some(Pipe {
                    file: File::from(fd),
                    stream,
                    splitter: LineSplitter::new(),
                });
            }
            pid
        };
        let started_at = format_rfc3339_nano(SystemTime::now());
        let oom_base = req
            .oom_counter_file
            .as_deref()
            .and_then(|p| state::read_oom_kills(p).ok())
            .unwrap_or(0);
        let record = StartedRecord {
            pid,
            started_at: started_at.clone(),
        };
        // Not fsynced here, to keep the start path short: the server syncs
        // it right after replying.
        state::write_json_atomic(&state::started_path(pod_dir, &req.id), &record, false)
            .map_err(|e| Response::error(e.to_string()))?;
        Ok(Container {
            id: req.id,
            pid,
            started_at,
            status: Status::Running,
            pipes,
            log: Some(log),
            log_failed: false,
            stdin: stdin_keep,
            oom_file: req.oom_counter_file,
            oom_base,
        })
    }

    pub fn is_running(&self) -> bool {
        !matches!(self.status, Status::Exited(_))
    }

    pub fn record(&self) -> ContainerRecord {
        ContainerRecord {
            id: self.id.clone(),
            pid: self.pid,
            started_at: self.started_at.clone(),
            exit: match &self.status {
                Status::Exited(r) => Some(r.clone()),
                _ => None,
            },
        }
    }

    /// Reads once from pipe `slot` into the log; closes it at EOF.
    pub fn drain(&mut self, slot: usize, buf: &mut [u8]) {
        let Some(pipe) = self.pipes[slot].as_mut() else {
            return;
        };
        let eof = match pipe.file.read(buf) {
            Ok(0) => true,
            Ok(n) => {
                let now = SystemTime::now();
                let stream = pipe.stream;
                if let Some(log) = self.log.as_mut() {
                    let mut err = None;
                    pipe.splitter.feed(&buf[..n], |tag, line| {
                        if let Err(e) = log.record(now, stream, tag, line) {
                            err = Some(e);
                        }
                    });
                    let flushed = log.flush();
                    if let Some(e) = err.or(flushed.err())
                        && !self.log_failed
                    {
                        self.log_failed = true;
                        eprintln!("monitor: container {}: {e}", self.id);
                    }
                }
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                false
            }
            // EIO: the last pty slave closed. Anything else: give up.
            Err(_) => true,
        };
        if eof {
            self.close_pipe(slot);
        }
    }

    fn close_pipe(&mut self, slot: usize) {
        let Some(mut pipe) = self.pipes[slot].take() else {
            return;
        };
        if let Some(log) = self.log.as_mut() {
            let now = SystemTime::now();
            let mut err = None;
            pipe.splitter.finish(|tag, line| {
                if let Err(e) = log.record(now, pipe.stream, tag, line) {
                    err = Some(e);
                }
            });
            if let Some(e) = err.or(log.flush().err()) {
                eprintln!("monitor: container {}: {e}", self.id);
            }
        }
    }

    /// The container's init was reaped.
    pub fn reaped(&mut self, reaped: Reaped) {
        let oom_now = self
            .oom_file
            .as_deref()
            .and_then(|p| state::read_oom_kills(p).ok())
            .unwrap_or(0);
        self.status = Status::Draining {
            reaped,
            finished_at: SystemTime::now(),
            oom_killed: oom_now > self.oom_base,
            deadline: Instant::now() + EOF_GRACE,
        };
        self.stdin = None;
    }

    /// When the container is draining, the time its exit is recorded
    /// regardless of open stdio.
    pub fn deadline(&self) -> Option<Instant> {
        match self.status {
            Status::Draining { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Records the exit once the stdio is closed (or the grace is over):
    /// flushes the log, writes `exit.json`. Returns the record when this
    /// call recorded it.
    pub fn try_finish(&mut self, pod_dir: &Path, now: Instant) -> Option<ExitRecord> {
        let Status::Draining {
            reaped,
            finished_at,
            oom_killed,
            deadline,
        } = self.status
        else {
            return None;
        };
        let open = self.pipes.iter().any(Option::is_some);
        if open && now < deadline {
            return None;
        }
        for slot in 0..2 {
            self.close_pipe(slot);
        }
        self.log = None;
        let record = ExitRecord {
            exit_code: reaped.exit_code(),
            signal: reaped.signal,
            oom_killed,
            finished_at: format_rfc3339_nano(finished_at),
            started_at: self.started_at.clone(),
        };
        if let Err(e) =
            state::write_json_atomic(&state::exit_path(pod_dir, &self.id), &record, true)
        {
            eprintln!("monitor: container {}: {e}", self.id);
        }
        self.status = Status::Exited(record.clone());
        Some(record)
    }
}
