//! The shared PID namespace of a `shareProcessNamespace` pod, without a
//! pause container.
//!
//! A PID namespace lives only as long as its PID 1, so it cannot be held by
//! a bind mount alone. The holder is the `herd` binary re-executed as
//! `herd monitor --pid-holder`: a process that does nothing but reap the
//! orphans reparented to it (as PID 1 of the pod's namespace must) and waits
//! for SIGKILL. It is started with a double fork whose middle process
//! unshares the PID namespace, so the holder is PID 1 inside and not the
//! agent's child. Its namespace is also bind-mounted at `ns/pid` in the
//! sandbox dir, which is what containers join.
//!
//! Removal checks that the recorded pid still runs in that namespace (same
//! nsfs inode) before killing it, so a reused pid is never signalled.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts the holder; returns its pid (as seen from the caller's namespace)
/// once its namespace is bind-mounted at `target`.
pub fn spawn_holder(exe: &Path, args: &[OsString], target: &Path) -> std::io::Result<u32> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let w_raw = w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg("--pid-holder")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe calls (setsid, unshare, fork, write, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::unshare(libc::CLONE_NEWPID) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => Ok(()), // PID 1 of the new namespace: exec the holder
                pid => {
                    let bytes = (pid as u32).to_le_bytes();
                    let n = libc::write(w_raw, bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(if n == 4 { 0 } else { 1 })
                }
            }
        });
    }
    let mut child = cmd.spawn()?;
    drop(cmd);
    drop(w);
    let status = child.wait()?;
    let mut buf = [0u8; 4];
    let mut f = fs::File::from(r);
    f.read_exact(&mut buf)
        .map_err(|e| std::io::Error::other(format!("pid holder did not start ({status}): {e}")))?;
    let pid = u32::from_le_bytes(buf);
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target)?;
    let src = format!("/proc/{pid}/ns/pid");
    if let Err(e) = rustix::mount::mount_bind(src.as_str(), target) {
        kill(pid);
        return Err(e.into());
    }
    Ok(pid)
}

/// Kills the holder `pid` if it still is PID 1 of the namespace bind-mounted
/// at `ns_file`, then unmounts `ns_file`. Idempotent.
pub fn remove_holder(pid: u32, ns_file: &Path) -> std::io::Result<()> {
    if holder_alive(pid, ns_file) {
        kill(pid);
    }
    match rustix::mount::unmount(ns_file, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// `herd monitor --pid-holder`: PID 1 of a pod's shared PID namespace.
/// Reaps every child reparented to it; never returns (killed by SIGKILL).
pub fn run_holder() -> ! {
    // SAFETY: plain signal-mask and wait calls on this single-threaded
    // process; the sigset is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let mut status = 0;
            while libc::waitpid(-1, &mut status, libc::WNOHANG) > 0 {}
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
        }
    }
}

/// True if `pid` runs in the PID namespace bind-mounted at `ns_file`.
pub fn holder_alive(pid: u32, ns_file: &Path) -> bool {
    let ours = fs::metadata(ns_file).ok().map(|m| (m.dev(), m.ino()));
    let theirs = fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| (m.dev(), m.ino()));
    ours.is_some() && ours == theirs
}
