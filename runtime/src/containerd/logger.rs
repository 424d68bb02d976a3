//! The containerd shim's logging binary: `herd containerd-logger <dir>`.
//!
//! containerd's runc shim starts it for a task whose stdout/stderr URI is
//! `binary:///<herd>?containerd-logger=<container dir>` (a query key and
//! value become the two arguments), with the container's stdout on fd 3,
//! its stderr on fd 4 and a pipe on fd 5 that it closes once ready. It
//! writes CRI-format lines to the container's log path with the
//! container's rotation limits (both from `container.json` in the dir),
//! exactly as the native monitor does, and survives agent restarts (the
//! shim owns it).
//!
//! The shim keeps its write ends of the pipes open until the task is
//! deleted, so the container's exit is no end-of-file here. Instead the
//! exit recorder asks (`<dir>/drain-request`, then SIGUSR1 to the pid in
//! `<dir>/logger.pid` so the logger does not have to poll) and it answers
//! (`<dir>/logs-drained`) once both pipes are empty and the log is
//! flushed: everything the container wrote before it exited is in the log
//! when its exit is recorded (as with the native backend). SIGTERM (the
//! shim's, at task delete) or end-of-file on both pipes ends it.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::logs::format::{LineSplitter, Stream};
use crate::logs::writer::LogWriter;
use crate::pod::ContainerRecord;

/// The mark the logger leaves once the log is complete.
pub const DRAINED: &str = "logs-drained";
/// The exit recorder's request for that mark.
pub const DRAIN_REQUEST: &str = "drain-request";
/// The logger's pid.
pub const PID_FILE: &str = "logger.pid";

/// The stdio URI of a container whose logs `exe` writes.
pub fn uri(exe: &Path, container_dir: &Path) -> String {
    format!(
        "binary://{}?containerd-logger={}",
        exe.display(),
        container_dir.display()
    )
}

static TERM: AtomicBool = AtomicBool::new(false);
static DRAIN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

extern "C" fn on_drain(_: libc::c_int) {
    DRAIN.store(true, Ordering::SeqCst);
}

/// Asks the logger of the container in `dir` to mark its log complete
/// (the mark appears once everything written so far is in the log).
pub fn request_drain(dir: &Path) {
    let _ = std::fs::write(dir.join(DRAIN_REQUEST), b"");
    let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    // Only that logger: a recycled pid must not get the signal.
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let c = String::from_utf8_lossy(&c);
        c.contains("containerd-logger") && c.contains(&*dir.to_string_lossy())
    });
    if ours && let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::USR1);
    }
}

/// Runs the logger for the container recorded in `dir` (fds 3, 4, 5 as
/// the shim passes them).
pub fn run(dir: &Path) -> Result<(), String> {
    let record: ContainerRecord = {
        let p = dir.join("container.json");
        let b = std::fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        serde_json::from_slice(&b).map_err(|e| format!("decode {}: {e}", p.display()))?
    };
    // SAFETY: the shim passes these fds and nothing else in this process
    // owns them; a missing fd fails the reads below with EBADF.
    let (out, err, ready) = unsafe {
        (
            OwnedFd::from_raw_fd(3),
            OwnedFd::from_raw_fd(4),
            OwnedFd::from_raw_fd(5),
        )
    };
    // SAFETY: installs async-signal-safe handlers (one atomic store each).
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGUSR1,
            on_drain as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let _ = std::fs::write(dir.join(PID_FILE), std::process::id().to_string());
    let mut log = LogWriter::open(&record.log_path, record.config.log)
        .map_err(|e| format!("open log {}: {e}", record.log_path.display()))?;
    drop(ready);
    let mut pipes: [Option<(File, LineSplitter, Stream)>; 2] = [
        Some((File::from(out), LineSplitter::new(), Stream::Stdout)),
        Some((File::from(err), LineSplitter::new(), Stream::Stderr)),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut failed = false;
    let mut answered = false;
    while pipes.iter().any(Option::is_some) {
        let mut fds: Vec<rustix::event::PollFd<'_>> = Vec::new();
        let mut slots = Vec::new();
        for (i, p) in pipes.iter().enumerate() {
            if let Some((f, _, _)) = p {
                fds.push(rustix::event::PollFd::new(
                    f,
                    rustix::event::PollFlags::IN | rustix::event::PollFlags::HUP,
                ));
                slots.push(i);
            }
        }
        let timeout = rustix::event::Timespec {
            // A backstop: a drain request comes with a signal.
            tv_sec: 1,
            tv_nsec: 0,
        };
        let n = match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => 0,
            Err(e) => return Err(format!("poll: {e}")),
        };
        let ready: Vec<usize> = fds
            .iter()
            .zip(&slots)
            .filter(|(f, _)| !f.revents().is_empty())
            .map(|(_, s)| *s)
            .collect();
        drop(fds);
        if n == 0 && TERM.load(Ordering::SeqCst) {
            // Asked to stop and nothing is readable: done.
            break;
        }
        for slot in ready {
            let Some((f, splitter, stream)) = pipes[slot].as_mut() else {
                continue;
            };
            let now = SystemTime::now();
            let stream = *stream;
            match f.read(&mut buf) {
                Ok(0) | Err(_) => {
                    splitter.finish(|tag, line| {
                        failed |= log.record(now, stream, tag, line).is_err();
                    });
                    pipes[slot] = None;
                }
                Ok(n) => splitter.feed(&buf[..n], |tag, line| {
                    failed |= log.record(now, stream, tag, line).is_err();
                }),
            }
        }
        if log.flush().is_err() {
            failed = true;
        }
        let asked = DRAIN.load(Ordering::SeqCst) || n == 0;
        if asked && !answered && dir.join(DRAIN_REQUEST).exists() {
            let empty = pipes
                .iter()
                .flatten()
                .all(|(f, _, _)| rustix::io::ioctl_fionread(f).is_ok_and(|n| n == 0));
            if empty {
                let now = SystemTime::now();
                for p in pipes.iter_mut().flatten() {
                    let stream = p.2;
                    p.1.finish(|tag, line| {
                        failed |= log.record(now, stream, tag, line).is_err();
                    });
                }
                failed |= log.flush().is_err();
                let _ = std::fs::write(dir.join(DRAINED), b"");
                answered = true;
            }
        }
    }
    let now = SystemTime::now();
    for p in pipes.iter_mut().flatten() {
        let stream = p.2;
        p.1.finish(|tag, line| {
            failed |= log.record(now, stream, tag, line).is_err();
        });
    }
    let flushed = log.flush();
    let _ = std::fs::write(dir.join(DRAINED), b"");
    if failed || flushed.is_err() {
        return Err(format!("writing {}", record.log_path.display()));
    }
    Ok(())
}

/// Whether the logger of the container in `dir` finished its log.
pub fn drained(dir: &Path) -> bool {
    dir.join(DRAINED).exists()
}
