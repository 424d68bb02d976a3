//! Running one plugin binary: lookup in the search path, a clean
//! environment, stdin/stdout/stderr, an optional netns to run in, a timeout.
//!
//! Guarantees:
//! - The environment holds only `PATH` (the caller's, or a default) and the
//!   `CNI_*` variables given.
//! - The plugin runs in its own process group; on timeout the whole group is
//!   sent SIGKILL and the plugin is reaped, so no plugin outlives the call
//!   (a grandchild that leaves the group is the caller's problem, as with
//!   libcni).
//! - With a host netns, the child `setns()`es into it between fork and exec;
//!   the invoking process never changes namespace.
//! - A binary that is busy (ETXTBSY, being written) is retried with
//!   backoff for about a second, as libcni does.
//! - stdout is read up to [`MAX_STDOUT`]; stderr keeps its last
//!   [`STDERR_KEEP`] bytes; both are kept in every error.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::error::{Exit, InvokeError, PluginErrorReply, PluginFailure, STDERR_KEEP};

/// Largest stdout accepted from a plugin (a result is a few KiB).
pub const MAX_STDOUT: usize = 4 * 1024 * 1024;
/// How much raw stdout is quoted in an error.
const STDOUT_QUOTE: usize = 4096;
/// PATH given to plugins when the invoking process has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Backoff cap when the plugin binary is busy (ETXTBSY): ~1.3 s in all.
const SPAWN_RETRY_LIMIT: Duration = Duration::from_millis(1000);
/// How long to wait for a SIGKILLed plugin to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// Finds `plugin` in `search` (first directory holding an executable file of that name).
pub fn find_plugin(plugin: &str, search: &[PathBuf]) -> Result<PathBuf, InvokeError> {
    for dir in search {
        let candidate = dir.join(plugin);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(InvokeError::PluginNotFound {
        plugin: plugin.to_owned(),
        searched: search.to_vec(),
    })
}

/// One plugin call.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub plugin: &'a str,
    pub binary: &'a Path,
    pub command: &'static str,
    /// The `CNI_*` variables.
    pub env: Vec<(&'static str, String)>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    /// Network namespace to run the plugin in.
    pub netns: Option<BorrowedFd<'a>>,
}

/// What a successful (exit 0) call printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    /// A [`PluginFailure`] for a call that exited 0 but printed the wrong thing.
    pub fn bad(self, call: &Call<'_>, reason: impl Into<String>) -> InvokeError {
        InvokeError::BadOutput {
            reason: reason.into(),
            failure: Box::new(PluginFailure {
                plugin: call.plugin.to_owned(),
                binary: call.binary.to_owned(),
                command: call.command,
                exit: Some(Exit::Code(0)),
                reply: None,
                stdout: quote(&self.stdout),
                stderr: self.stderr,
            }),
        }
    }
}

/// Runs the call; `Ok` only when the plugin exited 0 within the timeout.
pub(crate) async fn run(call: &Call<'_>) -> Result<Output, InvokeError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut cmd = tokio::process::Command::new(call.binary);
    cmd.env_clear()
        .env("PATH", path)
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(ns) = call.netns {
        let raw = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the setns(2) syscall (async-signal-safe) on `raw`, which is
        // open for the whole call: the caller borrows it for `'a`, and fork
        // copies the descriptor table.
        unsafe {
            cmd.pre_exec(move || {
                let fd = BorrowedFd::borrow_raw(raw);
                rustix::thread::move_into_link_name_space(
                    fd,
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(io::Error::from)
            });
        }
    }
    // ETXTBSY: the binary is being written (an install in progress, or a
    // writable fd inherited by a process forked elsewhere that has not
    // exec'd yet). libcni retries too; a short backoff suffices.
    let mut backoff = Duration::from_millis(10);
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && backoff < SPAWN_RETRY_LIMIT => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(source) => {
                return Err(InvokeError::Spawn {
                    plugin: call.plugin.to_owned(),
                    binary: call.binary.to_owned(),
                    source,
                });
            }
        }
    };
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let mut out = Vec::new();
    let mut out_overflow = false;
    let mut err = Vec::new();
    let finished = {
        let io = async {
            let write = async {
                if let Some(mut pipe) = stdin {
                    // A plugin may exit without reading stdin (EPIPE): its
                    // exit status and output tell what happened.
                    let _ = pipe.write_all(&call.stdin).await;
                }
            };
            let (_, overflow, ()) = tokio::join!(
                write,
                read_head(stdout, &mut out, MAX_STDOUT),
                read_tail(stderr, &mut err, STDERR_KEEP)
            );
            out_overflow = overflow;
            child.wait().await
        };
        tokio::time::timeout(call.timeout, io).await
    };

    let failure = |exit: Option<Exit>, out: &[u8], err: &[u8]| PluginFailure {
        plugin: call.plugin.to_owned(),
        binary: call.binary.to_owned(),
        command: call.command,
        exit,
        reply: serde_json::from_slice::<PluginErrorReply>(out).ok(),
        stdout: quote(out),
        stderr: String::from_utf8_lossy(tail(err)).into_owned(),
    };
    let status = match finished {
        Err(_elapsed) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                // The group may already be gone (ESRCH): nothing to kill.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let exit = match tokio::time::timeout(REAP_GRACE, child.wait()).await {
                Ok(Ok(status)) => Some(exit_of(status)),
                _ => None,
            };
            return Err(InvokeError::Timeout {
                timeout: call.timeout,
                failure: Box::new(failure(exit, &out, &err)),
            });
        }
        Ok(Err(source)) => {
            return Err(InvokeError::Spawn {
                plugin: call.plugin.to_owned(),
                binary: call.binary.to_owned(),
                source,
            });
        }
        Ok(Ok(status)) => status,
    };
    if !status.success() {
        return Err(InvokeError::PluginFailed(Box::new(failure(
            Some(exit_of(status)),
            &out,
            &err,
        ))));
    }
    let output = Output {
        stdout: out,
        stderr: String::from_utf8_lossy(tail(&err)).into_owned(),
    };
    if out_overflow {
        return Err(output.bad(call, format!("stdout larger than {MAX_STDOUT} bytes")));
    }
    Ok(output)
}

fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    }
}

/// The last [`STDERR_KEEP`] bytes.
fn tail(err: &[u8]) -> &[u8] {
    &err[err.len().saturating_sub(STDERR_KEEP)..]
}

fn quote(out: &[u8]) -> String {
    let end = out.len().min(STDOUT_QUOTE);
    String::from_utf8_lossy(&out[..end]).into_owned()
}

/// Reads everything, keeping the first `limit` bytes; true when more came.
async fn read_head(pipe: Option<impl AsyncRead + Unpin>, buf: &mut Vec<u8>, limit: usize) -> bool {
    let Some(mut pipe) = pipe else { return false };
    let mut chunk = [0u8; 8192];
    let mut overflow = false;
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return overflow,
            Ok(n) => {
                let room = limit.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                overflow |= n > room;
            }
        }
    }
}

/// Reads everything, keeping the last `keep` bytes.
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>, buf: &mut Vec<u8>, keep: usize) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * keep {
                    let cut = buf.len() - keep;
                    buf.drain(..cut);
                }
            }
        }
    }
}
