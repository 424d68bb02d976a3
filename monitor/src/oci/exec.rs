//! Foreground `exec` into a running container: with pipes (output
//! collected) or with a pty received over a console socket (output is the
//! terminal's). runc exits with the process's exit status, so that is the
//! exec's; a runtime failure (no such container, bad process spec) is an
//! [`OciError`] instead.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use std::os::fd::OwnedFd;

use super::{ConsoleError, ExecOutput, OciError, OciRuntime, validate_id};

impl OciRuntime {
    /// Runs `process` in the container in the foreground and collects its
    /// output (no tty), or relays its pty (tty: output is the terminal's).
    /// `process_file` is where the process spec is written (under the
    /// bundle or a scratch dir). The exec'd process is killed if it outlives
    /// `timeout`.
    pub fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        process_file: &Path,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, OciError> {
        validate_id(id)?;
        let json = serde_json::to_vec(process).map_err(|e| OciError::ProcessSpec {
            path: process_file.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        fs::write(process_file, json).map_err(|source| OciError::ProcessSpec {
            path: process_file.to_path_buf(),
            source,
        })?;
        let result = if process.terminal().unwrap_or(false) {
            self.exec_tty(id, process_file, timeout)
        } else {
            self.exec_pipes(id, process_file, timeout)
        };
        let _ = fs::remove_file(process_file);
        result
    }

    fn exec_pipes(
        &self,
        id: &str,
        process_file: &Path,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, OciError> {
        let mut cmd = self.command();
        cmd.arg("exec").arg("--process").arg(process_file).arg(id);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|source| OciError::Spawn {
            binary: self.bin.path.clone(),
            source,
        })?;
        let out = wait_with_timeout(child, timeout).map_err(|e| self.exec_wait_error(id, e))?;
        exec_output(self, id, out.status, out.stdout, out.stderr)
    }

    fn exec_wait_error(&self, id: &str, e: WaitError) -> OciError {
        match e {
            WaitError::Io(source) => OciError::Spawn {
                binary: self.bin.path.clone(),
                source,
            },
            WaitError::Timeout(timeout) => OciError::Timeout {
                binary: self.bin.path.clone(),
                verb: "exec",
                id: id.to_string(),
                timeout,
            },
        }
    }

    /// A tty exec in the foreground: runc relays between the container's
    /// pty and its own stdio, which must be a terminal, so runc gets the
    /// slave side of a pty of ours and the output is read from our master.
    /// (A console socket is only allowed with `--detach`, which would make
    /// the exec's exit status unobtainable.)
    fn exec_tty(
        &self,
        id: &str,
        process_file: &Path,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, OciError> {
        let (master, child) = self.spawn_tty_exec(id, process_file)?;
        // Read the terminal until the last writer closes it (EIO).
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(master);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match f.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            buf
        });
        let out = wait_with_timeout(child, timeout).map_err(|e| self.exec_wait_error(id, e))?;
        let stdout = reader.join().unwrap_or_default();
        // runc's own errors arrive on the terminal too.
        let stderr = if looks_like_runtime_error(&stdout) {
            stdout.clone()
        } else {
            Vec::new()
        };
        exec_output(self, id, out.status, stdout, stderr)
    }
}

impl OciRuntime {
    /// Starts `runc exec --tty` with a new pty's slave as its stdio and
    /// returns the master. Our copies of the slave are closed, so reading
    /// the master ends (EIO) once runc and the process are done.
    pub(super) fn spawn_tty_exec(
        &self,
        id: &str,
        process_file: &Path,
    ) -> Result<(OwnedFd, std::process::Child), OciError> {
        let console_err = |e: std::io::Error| OciError::Console {
            id: id.to_string(),
            source: ConsoleError::Receive {
                source: e,
                stderr: String::new(),
            },
        };
        let (master, slave) = open_pty().map_err(console_err)?;
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--tty")
            .arg("--process")
            .arg(process_file)
            .arg(id);
        let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        cmd.stdin(dup(&slave).map_err(console_err)?)
            .stdout(dup(&slave).map_err(console_err)?)
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().map_err(|source| OciError::Spawn {
            binary: self.bin.path.clone(),
            source,
        })?;
        drop(cmd);
        Ok((master, child))
    }
}

/// A new pty pair (master, slave), both close-on-exec.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok((master, slave))
}

fn exec_output(
    rt: &OciRuntime,
    id: &str,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> Result<ExecOutput, OciError> {
    use std::os::unix::process::ExitStatusExt;
    // runc exits with the process's exit code; 255 with a message on
    // stderr means runc itself failed before the process ran.
    let exit_code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    };
    if exit_code == 255 && stdout.is_empty() && looks_like_runtime_error(&stderr) {
        return Err(rt.failed("exec", id, status, &stderr));
    }
    Ok(ExecOutput {
        exit_code,
        stdout,
        stderr,
    })
}

fn looks_like_runtime_error(stderr: &[u8]) -> bool {
    let s = String::from_utf8_lossy(stderr);
    s.contains("level=error") || s.contains("exec failed") || s.contains("does not exist")
}

enum WaitError {
    Io(std::io::Error),
    Timeout(Duration),
}

/// Waits for `child`, collecting piped stdout/stderr on threads; kills it
/// after `timeout`.
fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Option<Duration>,
) -> Result<std::process::Output, WaitError> {
    let Some(timeout) = timeout else {
        return child.wait_with_output().map_err(WaitError::Io);
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read_all = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = read_all(stdout.map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err_t = read_all(stderr.map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(WaitError::Io)? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(WaitError::Timeout(timeout));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}
