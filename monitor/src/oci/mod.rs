//! OCI runtime drivers: runc (default), crun and youki, through their
//! command-line interface (the binary is the interface, as for containerd's
//! runc shim).
//!
//! Every call runs the runtime with an explicit `--root` (its state dir), so
//! several agents on one host never see each other's containers. Errors
//! keep the runtime's exit status and (bounded) stderr, which is where runc
//! explains itself.
//!
//! The three runtimes share the runc CLI for what herd uses (`run --detach`,
//! `exec`, `kill`, `delete`, `state`), so the driver is one type with a
//! [`RuntimeKind`] tag rather than three implementations; the kind matters
//! for selection ([`select_runtime`]: crun refuses hybrid cgroup layouts).

mod console;
mod exec;
pub mod exec_stream;

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use console::{ConsoleError, ConsoleSocket};

/// Which OCI runtime a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuntimeKind {
    Runc,
    Crun,
    Youki,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
            RuntimeKind::Youki => "youki",
        }
    }

    pub fn parse(s: &str) -> Option<RuntimeKind> {
        match s {
            "runc" => Some(RuntimeKind::Runc),
            "crun" => Some(RuntimeKind::Crun),
            "youki" => Some(RuntimeKind::Youki),
            _ => None,
        }
    }
}

/// A runtime binary and the state dir it keeps its containers in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeBinary {
    pub kind: RuntimeKind,
    pub path: PathBuf,
    /// `--root`: the runtime's own state (should be on tmpfs).
    pub root: PathBuf,
}

/// Errors from running the OCI runtime.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} {verb} {id} failed ({status}): {stderr}")]
    Failed {
        binary: PathBuf,
        verb: &'static str,
        id: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{binary} {verb} {id} did not finish within {timeout:?}")]
    Timeout {
        binary: PathBuf,
        verb: &'static str,
        id: String,
        timeout: Duration,
    },
    #[error("cannot read pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid file {path} holds no pid: {content:?}")]
    BadPid { path: PathBuf, content: String },
    #[error("{binary} state {id} printed unexpected output: {source}")]
    BadState {
        binary: PathBuf,
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the exec process spec {path}: {source}")]
    ProcessSpec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("console for {id}: {source}")]
    Console {
        id: String,
        #[source]
        source: ConsoleError,
    },
    #[error(
        "container id {0:?} is invalid (1-128 of [A-Za-z0-9_.-], not starting with '.' or '-')"
    )]
    InvalidId(String),
    #[error("no usable OCI runtime: {0}")]
    NoRuntime(String),
}

/// Most of runc's stderr that is kept in an error.
const STDERR_LIMIT: usize = 16 * 1024;

/// The stdio a detached container inherits (ignored for tty containers).
#[derive(Debug)]
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What `<runtime> state` reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OciState {
    pub id: String,
    /// "created", "running", "paused" or "stopped".
    pub status: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub bundle: PathBuf,
}

/// Result of a foreground exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The OCI runtime driver.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    bin: RuntimeBinary,
}

/// Checks an id before it reaches a command line or a path.
pub fn validate_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidId(id.to_string()))
    }
}

impl OciRuntime {
    pub fn new(bin: RuntimeBinary) -> Self {
        OciRuntime { bin }
    }

    pub fn binary(&self) -> &RuntimeBinary {
        &self.bin
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin.path);
        cmd.arg("--root").arg(&self.bin.root);
        cmd
    }

    /// Runs `cmd` to completion with stdin closed and stdout/stderr
    /// captured; a non-zero exit becomes [`OciError::Failed`].
    fn run_captured(
        &self,
        mut cmd: Command,
        verb: &'static str,
        id: &str,
    ) -> Result<Vec<u8>, OciError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().map_err(|source| OciError::Spawn {
            binary: self.bin.path.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(self.failed(verb, id, out.status, &out.stderr))
        }
    }

    fn failed(&self, verb: &'static str, id: &str, status: ExitStatus, stderr: &[u8]) -> OciError {
        OciError::Failed {
            binary: self.bin.path.clone(),
            verb,
            id: id.to_string(),
            status,
            stderr: bounded_text(stderr),
        }
    }

    /// `run --detach`: creates and starts the container; its init inherits
    /// `stdio` (or gets a pty whose master is sent to `console_socket`).
    /// Returns the init's pid, read from `<bundle>/init.pid`.
    ///
    /// The caller should be a child subreaper: once runc exits, the
    /// container's init is reparented to it.
    pub fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        stdio: ContainerStdio,
        console_socket: Option<&Path>,
    ) -> Result<u32, OciError> {
        validate_id(id)?;
        let pid_file = bundle.join("init.pid");
        let _ = fs::remove_file(&pid_file);
        // With --detach, runc hands its own stdio to the container, so its
        // diagnostics are captured through --log (global flags come first).
        let log = bundle.join("runtime.log");
        let _ = fs::remove_file(&log);
        let mut cmd = Command::new(&self.bin.path);
        cmd.arg("--root")
            .arg(&self.bin.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--detach")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--bundle")
            .arg(bundle);
        if let Some(sock) = console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        cmd.arg(id);
        match stdio.stdin {
            Some(fd) => cmd.stdin(Stdio::from(fd)),
            None => cmd.stdin(Stdio::null()),
        };
        cmd.stdout(Stdio::from(stdio.stdout));
        cmd.stderr(Stdio::from(stdio.stderr));
        let status = cmd.status().map_err(|source| OciError::Spawn {
            binary: self.bin.path.clone(),
            source,
        })?;
        if !status.success() {
            let text = fs::read(&log)
                .map(|b| runtime_log_errors(&b))
                .unwrap_or_default();
            return Err(self.failed("run", id, status, text.as_bytes()));
        }
        read_pid_file(&pid_file)
    }

    /// Sends `signal` to the container's init (`all`: to every process).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        validate_id(id)?;
        let mut cmd = self.command();
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run_captured(cmd, "kill", id).map(drop)
    }

    /// Deletes the container's runtime state (and its cgroup). `force`
    /// kills it first if it still runs. A container the runtime does not
    /// know is not an error.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), OciError> {
        validate_id(id)?;
        let mut cmd = self.command();
        cmd.arg("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        match self.run_captured(cmd, "delete", id) {
            Ok(_) => Ok(()),
            Err(OciError::Failed { stderr, .. }) if is_not_exist(&stderr) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The runtime's view of a container; `Ok(None)` if it does not exist.
    pub fn state(&self, id: &str) -> Result<Option<OciState>, OciError> {
        validate_id(id)?;
        let mut cmd = self.command();
        cmd.arg("state").arg(id);
        match self.run_captured(cmd, "state", id) {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| OciError::BadState {
                        binary: self.bin.path.clone(),
                        id: id.to_string(),
                        source,
                    })
            }
            Err(OciError::Failed { stderr, .. }) if is_not_exist(&stderr) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn read_pid_file(path: &Path) -> Result<u32, OciError> {
    let content = fs::read_to_string(path).map_err(|source| OciError::PidFile {
        path: path.to_path_buf(),
        source,
    })?;
    content
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| OciError::BadPid {
            path: path.to_path_buf(),
            content: content.chars().take(64).collect(),
        })
}

fn is_not_exist(stderr: &str) -> bool {
    stderr.contains("does not exist") || stderr.contains("not found") || stderr.contains("No such")
}

fn bounded_text(bytes: &[u8]) -> String {
    let tail = &bytes[bytes.len().saturating_sub(STDERR_LIMIT)..];
    String::from_utf8_lossy(tail).trim().to_string()
}

/// Pulls the error messages out of a runc/crun JSON log (`--log-format
/// json`), one per line; falls back to the raw text.
fn runtime_log_errors(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let mut msgs = Vec::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
            if matches!(level, "error" | "fatal" | "warning")
                && let Some(m) = v.get("msg").and_then(|m| m.as_str())
            {
                msgs.push(m.to_string());
            }
        }
    }
    if msgs.is_empty() {
        text.trim().to_string()
    } else {
        msgs.join("; ")
    }
}

/// Why a runtime was passed over during selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub kind: RuntimeKind,
    pub reason: String,
}

/// Chooses the runtime to use: `preferred` if it is installed and works on
/// this host's cgroup layout, else runc. The reasons for skipping are
/// returned so the caller can log them (crun 1.8 refuses hybrid layouts).
pub fn select_runtime(
    preferred: RuntimeKind,
    search_path: &[PathBuf],
    state_root: &Path,
    hybrid_or_v1: bool,
) -> Result<(RuntimeBinary, Vec<Skipped>), OciError> {
    let mut skipped = Vec::new();
    let mut order = vec![preferred];
    if preferred != RuntimeKind::Runc {
        order.push(RuntimeKind::Runc);
    }
    for kind in order {
        let Some(path) = find_binary(kind.name(), search_path) else {
            skipped.push(Skipped {
                kind,
                reason: format!("{} not found in {:?}", kind.name(), search_path),
            });
            continue;
        };
        if kind == RuntimeKind::Crun && hybrid_or_v1 {
            skipped.push(Skipped {
                kind,
                reason: "crun refuses hosts whose cgroup controllers are on v1 (hybrid layout)"
                    .to_string(),
            });
            continue;
        }
        match Command::new(&path).arg("--version").output() {
            Ok(out) if out.status.success() => {
                return Ok((
                    RuntimeBinary {
                        kind,
                        path,
                        root: state_root.join(kind.name()),
                    },
                    skipped,
                ));
            }
            Ok(out) => skipped.push(Skipped {
                kind,
                reason: format!(
                    "{} --version failed: {}",
                    path.display(),
                    bounded_text(&out.stderr)
                ),
            }),
            Err(e) => skipped.push(Skipped {
                kind,
                reason: format!("{} --version: {e}", path.display()),
            }),
        }
    }
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.kind.name(), s.reason))
        .collect();
    Err(OciError::NoRuntime(reasons.join("; ")))
}

fn find_binary(name: &str, search_path: &[PathBuf]) -> Option<PathBuf> {
    search_path
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The default search path for runtime binaries.
pub fn default_search_path() -> Vec<PathBuf> {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1_2.3").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn runtime_log_errors_are_extracted() {
        let log = br#"{"level":"info","msg":"x"}
{"level":"error","msg":"container_linux.go: starting container process caused: exec: \"nope\": executable file not found in $PATH"}
"#;
        assert!(runtime_log_errors(log).contains("executable file not found"));
        assert_eq!(runtime_log_errors(b"plain text\n"), "plain text");
    }

    #[test]
    fn crun_is_skipped_on_hybrid_hosts() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["crun", "runc"] {
            let p = dir.path().join(name);
            fs::write(&p, "#!/bin/sh\necho fake 1.0\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let search = vec![dir.path().to_path_buf()];
        let (bin, skipped) =
            select_runtime(RuntimeKind::Crun, &search, Path::new("/run/x"), true).unwrap();
        assert_eq!(bin.kind, RuntimeKind::Runc);
        assert_eq!(bin.root, Path::new("/run/x/runc"));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("hybrid"));
        let (bin, skipped) =
            select_runtime(RuntimeKind::Crun, &search, Path::new("/run/x"), false).unwrap();
        assert_eq!(bin.kind, RuntimeKind::Crun);
        assert!(skipped.is_empty());
        let err = select_runtime(RuntimeKind::Youki, &[], Path::new("/r"), false).unwrap_err();
        assert!(err.to_string().contains("youki not found"), "{err}");
    }

    #[test]
    fn pid_files_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        fs::write(&p, "1234").unwrap();
        assert_eq!(read_pid_file(&p).unwrap(), 1234);
        fs::write(&p, "zero").unwrap();
        assert!(matches!(read_pid_file(&p), Err(OciError::BadPid { .. })));
    }
}
