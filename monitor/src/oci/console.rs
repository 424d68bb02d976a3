//! The receiving end of an OCI `--console-socket`: the runtime connects to
//! it and sends the pty master of a tty container (or exec) as SCM_RIGHTS.
//!
//! The socket file is removed when the [`ConsoleSocket`] is dropped.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on console socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime did not send a console within {timeout:?}{stderr}")]
    Timeout { timeout: Duration, stderr: String },
    #[error("receiving the console: {source}{stderr}")]
    Receive {
        #[source]
        source: std::io::Error,
        stderr: String,
    },
    #[error("runtime connected to the console socket but sent no file descriptor{stderr}")]
    NoFd { stderr: String },
}

impl ConsoleError {
    /// Appends the runtime's stderr, which usually says why no console came.
    pub fn with_stderr(self, stderr: &[u8]) -> ConsoleError {
        let text = String::from_utf8_lossy(stderr).trim().to_string();
        if text.is_empty() {
            return self;
        }
        let extra = format!(" (runtime: {text})");
        match self {
            ConsoleError::Timeout { timeout, .. } => ConsoleError::Timeout {
                timeout,
                stderr: extra,
            },
            ConsoleError::Receive { source, .. } => ConsoleError::Receive {
                source,
                stderr: extra,
            },
            ConsoleError::NoFd { .. } => ConsoleError::NoFd { stderr: extra },
            other => other,
        }
    }
}

/// A listening console socket.
#[derive(Debug)]
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> Result<ConsoleSocket, ConsoleError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| ConsoleError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ConsoleSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for the runtime to connect and send the pty
    /// master.
    pub fn receive(&self, timeout: Duration) -> Result<OwnedFd, ConsoleError> {
        let deadline = Instant::now() + timeout;
        let recv_err = |source: std::io::Error| ConsoleError::Receive {
            source,
            stderr: String::new(),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConsoleError::Timeout {
                    timeout,
                    stderr: String::new(),
                });
            }
            let ts = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => continue,
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(recv_err(e.into())),
            }
        }
        let (stream, _) = self.listener.accept().map_err(recv_err)?;
        let mut name = [0u8; 4096];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        recvmsg(
            stream.as_fd(),
            &mut [IoSliceMut::new(&mut name)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| recv_err(e.into()))?;
        for msg in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg
                && let Some(fd) = fds.next()
            {
                return Ok(fd);
            }
        }
        Err(ConsoleError::NoFd {
            stderr: String::new(),
        })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
