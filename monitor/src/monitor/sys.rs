//! The few system calls the monitor needs that std does not wrap: a
//! signalfd, the child-subreaper flag and a non-blocking reap loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::process::{Pid, WaitOptions, WaitStatus, wait};

/// A signalfd for a set of signals, which are blocked for the (single)
/// thread so they are only ever read from the fd.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    pub fn new(signals: &[i32]) -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before
        // use and sigaddset only gets signal numbers from the caller (an
        // invalid one makes it return -1, which is checked).
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in signals {
                if libc::sigaddset(&mut set, *s) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        Ok(SignalFd { fd })
    }

    /// Drains the pending signals (each signal number once per delivery;
    /// standard signals coalesce, so one SIGCHLD may stand for many exits).
    pub fn read_pending(&self) -> io::Result<Vec<i32>> {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data of the size the kernel
            // writes; read gets a pointer to it and its exact size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(out),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            if n as usize != size {
                return Ok(out);
            }
            out.push(info.ssi_signo as i32);
        }
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Makes this process a child subreaper: orphaned descendants (container
/// inits once `runc run --detach` exits) are reparented to it.
pub fn set_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)
}

/// One reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: i32,
    /// Exit code, or `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Reaped {
    /// The shell convention: the code, or 128 + signal.
    pub fn exit_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// Reaps every child that has exited (any pid), without blocking.
pub fn reap_all() -> Vec<Reaped> {
    let mut out = Vec::new();
    loop {
        // `wait` is waitpid(-1): any child (`waitpid(None)` would be 0,
        // the caller's process group only).
        match wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => out.push(decode(pid, status)),
            Ok(None) => return out,
            Err(rustix::io::Errno::INTR) => continue,
            // ECHILD: no children left.
            Err(_) => return out,
        }
    }
}

fn decode(pid: Pid, status: WaitStatus) -> Reaped {
    Reaped {
        pid: pid.as_raw_nonzero().get(),
        code: status.exit_status(),
        signal: status.terminating_signal(),
    }
}

/// Sets O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// Resident set size of `pid` in KiB (`VmRSS` of `<proc>/<pid>/status`).
pub fn vm_rss_kib(proc_root: &std::path::Path, pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS line"))
}
