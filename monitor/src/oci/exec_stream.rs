//! Streaming `exec`: `runc exec` in the foreground with its stdio handed
//! to the caller (an API server relaying a WebSocket), instead of collected.
//!
//! Without a tty, stdin/stdout/stderr are pipes. With a tty, runc's stdio
//! is the slave side of a pty of ours (runc relays between it and the
//! container's own pty) and the caller reads and writes the master; a resize
//! sets the master's window size and sends runc SIGWINCH, which makes runc
//! copy the size to the container's terminal. The process spec file is
//! removed when the session is waited for or dropped; dropping a session
//! whose process still runs kills runc (and with it the exec'd process's
//! stdio).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::{ConsoleError, OciError, OciRuntime, validate_id};

/// A running exec. Blocking std handles: bridge them with threads or
/// `spawn_blocking`.
pub struct ExecSession {
    /// Writes to the process's stdin (with a tty: to the terminal). `None`
    /// when stdin was not requested. Drop it to send EOF (pipes).
    pub stdin: Option<Box<dyn Write + Send>>,
    /// The process's stdout (with a tty: everything the terminal prints).
    pub stdout: Option<Box<dyn Read + Send>>,
    /// The process's stderr (`None` with a tty).
    pub stderr: Option<Box<dyn Read + Send>>,
    resizer: Option<Resizer>,
    process: Process,
}

/// The process behind a session: `runc exec` in the foreground, or one a
/// backend runs elsewhere (a containerd exec).
enum Process {
    Runc {
        child: Child,
        process_file: PathBuf,
        binary: PathBuf,
    },
    Remote(Box<dyn RemoteProcess>),
}

/// An exec'd process another backend runs (a containerd exec).
pub trait RemoteProcess: Send {
    /// The process's pid (as the backend reports it).
    fn pid(&self) -> u32;
    /// Waits for its exit code (128+signal when killed).
    fn wait(&mut self) -> Result<i32, OciError>;
    /// Kills it (the caller went away); idempotent.
    fn kill(&mut self);
}

/// Resizes a remote process's terminal.
pub type RemoteResize = Box<dyn Fn(u16, u16) -> std::io::Result<()> + Send + Sync>;

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("pid", &self.pid())
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.resizer.is_some())
            .finish()
    }
}

/// Resizes the terminal of a tty exec; can be moved to another thread.
pub struct Resizer {
    master: Option<OwnedFd>,
    runc_pid: u32,
    remote: Option<RemoteResize>,
}

impl std::fmt::Debug for Resizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resizer")
            .field("runc_pid", &self.runc_pid)
            .field("remote", &self.remote.is_some())
            .finish()
    }
}

impl Resizer {
    /// A resizer calling `f` (a backend's own resize).
    pub fn remote(f: RemoteResize) -> Resizer {
        Resizer {
            master: None,
            runc_pid: 0,
            remote: Some(f),
        }
    }

    /// Sets the terminal size (columns × rows).
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        if let Some(f) = &self.remote {
            return f(width, height);
        }
        let Some(master) = &self.master else {
            return Ok(());
        };
        let ws = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(master, ws)?;
        let pid = rustix::process::Pid::from_raw(self.runc_pid as i32)
            .ok_or_else(|| std::io::Error::other("runc has no pid"))?;
        rustix::process::kill_process(pid, rustix::process::Signal::WINCH)?;
        Ok(())
    }
}

impl ExecSession {
    /// A session over a process another backend runs.
    pub fn remote(
        stdin: Option<Box<dyn Write + Send>>,
        stdout: Option<Box<dyn Read + Send>>,
        stderr: Option<Box<dyn Read + Send>>,
        resizer: Option<Resizer>,
        process: Box<dyn RemoteProcess>,
    ) -> ExecSession {
        ExecSession {
            stdin,
            stdout,
            stderr,
            resizer,
            process: Process::Remote(process),
        }
    }

    /// The pid of the `runc exec` process (or the remote process).
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Runc { child, .. } => child.id(),
            Process::Remote(p) => p.pid(),
        }
    }

    /// Takes the pty resizer (tty sessions only).
    pub fn take_resizer(&mut self) -> Option<Resizer> {
        self.resizer.take()
    }

    /// Waits for the process and returns its exit code (128+signal when
    /// killed; runc exits with the process's status).
    pub fn wait(mut self) -> Result<i32, OciError> {
        use std::os::unix::process::ExitStatusExt;
        self.stdin = None;
        match &mut self.process {
            Process::Remote(p) => p.wait(),
            Process::Runc {
                child,
                process_file,
                binary,
            } => {
                let status = child.wait().map_err(|source| OciError::Spawn {
                    binary: binary.clone(),
                    source,
                })?;
                let _ = std::fs::remove_file(process_file);
                Ok(match (status.code(), status.signal()) {
                    (Some(code), _) => code,
                    (None, Some(sig)) => 128 + sig,
                    (None, None) => 255,
                })
            }
        }
    }

    /// Kills `runc exec` or the remote process (the caller went away).
    pub fn kill(&mut self) {
        match &mut self.process {
            Process::Runc { child, .. } => {
                let _ = child.kill();
            }
            Process::Remote(p) => p.kill(),
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Runc {
                child,
                process_file,
                ..
            } => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = std::fs::remove_file(process_file);
            }
            // Its own Drop kills and cleans up.
            Process::Remote(_) => {}
        }
    }
}

impl OciRuntime {
    /// Starts `process` in container `id` in the foreground and returns its
    /// stdio. The process spec's `terminal` decides pipes or pty.
    pub fn exec_streaming(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        process_file: &Path,
        stdin: bool,
    ) -> Result<ExecSession, OciError> {
        validate_id(id)?;
        let json = serde_json::to_vec(process).map_err(|e| OciError::ProcessSpec {
            path: process_file.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(process_file, json).map_err(|source| OciError::ProcessSpec {
            path: process_file.to_path_buf(),
            source,
        })?;
        let result = if process.terminal().unwrap_or(false) {
            self.stream_tty(id, process_file, stdin)
        } else {
            self.stream_pipes(id, process_file, stdin)
        };
        if result.is_err() {
            let _ = std::fs::remove_file(process_file);
        }
        result
    }

    fn stream_pipes(
        &self,
        id: &str,
        process_file: &Path,
        stdin: bool,
    ) -> Result<ExecSession, OciError> {
        let mut cmd = self.command();
        cmd.arg("exec").arg("--process").arg(process_file).arg(id);
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| OciError::Spawn {
            binary: self.bin.path.clone(),
            source,
        })?;
        Ok(ExecSession {
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn Write + Send>),
            stdout: child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            stderr: child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            resizer: None,
            process: Process::Runc {
                child,
                process_file: process_file.to_path_buf(),
                binary: self.bin.path.clone(),
            },
        })
    }

    fn stream_tty(
        &self,
        id: &str,
        process_file: &Path,
        stdin: bool,
    ) -> Result<ExecSession, OciError> {
        let console_err = |e: std::io::Error| OciError::Console {
            id: id.to_string(),
            source: ConsoleError::Receive {
                source: e,
                stderr: String::new(),
            },
        };
        let (master, child) = self.spawn_tty_exec(id, process_file)?;
        let writer = if stdin {
            Some(
                Box::new(File::from(master.try_clone().map_err(console_err)?))
                    as Box<dyn Write + Send>,
            )
        } else {
            None
        };
        let resizer = Resizer {
            master: Some(master.try_clone().map_err(console_err)?),
            runc_pid: child.id(),
            remote: None,
        };
        Ok(ExecSession {
            stdin: writer,
            stdout: Some(Box::new(PtyReader(File::from(master)))),
            stderr: None,
            resizer: Some(resizer),
            process: Process::Runc {
                child,
                process_file: process_file.to_path_buf(),
                binary: self.bin.path.clone(),
            },
        })
    }
}

/// The pty master as a reader: EIO (no slave left) is end of file.
struct PtyReader(File);

impl Read for PtyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(libc_eio()) => Ok(0),
            other => other,
        }
    }
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}
