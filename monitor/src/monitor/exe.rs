//! Which executable runs the per-pod monitors.
//!
//! The monitor is built two ways from the same code: the small static
//! `herd-monitor` binary (about 1.5 MB RSS per pod) and `herd monitor`, the
//! agent's own binary re-executed (about 6 MB: a dynamic glibc binary is
//! over 2 MB before it runs a line of its own). The agent prefers the
//! first when it is installed next to `herd` and speaks the same protocol
//! ([`PROTOCOL_VERSION`]), and falls back to the second, so a lone `herd`
//! binary still works.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::MonitorError;
use super::protocol::PROTOCOL_VERSION;

/// File name of the standalone monitor, looked up next to `herd`.
pub const BINARY_NAME: &str = "herd-monitor";

/// How long `herd-monitor --version` may take before it is given up on.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// `herd-monitor <package version> protocol <N>`: what `--version` prints.
pub fn version_line() -> String {
    format!(
        "{BINARY_NAME} {} protocol {PROTOCOL_VERSION}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The command that starts a monitor: `exe args… --pod-dir DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorCommand {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl MonitorCommand {
    /// `herd monitor`: the agent's own binary re-executed.
    pub fn reexec(self_exe: &Path) -> MonitorCommand {
        MonitorCommand {
            exe: self_exe.to_path_buf(),
            args: vec!["monitor".into()],
        }
    }

    /// A standalone `herd-monitor` binary.
    pub fn standalone(exe: &Path) -> MonitorCommand {
        MonitorCommand {
            exe: exe.to_path_buf(),
            args: vec![],
        }
    }
}

/// The monitor the agent uses, and why a standalone one was passed over
/// (for the agent's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorChoice {
    pub command: MonitorCommand,
    pub skipped: Option<String>,
}

/// Chooses the monitor. `explicit` (the agent's `--monitor-path`) must
/// exist and speak this protocol, or it is an error. Otherwise
/// `herd-monitor` next to `self_exe` is used when it speaks this protocol,
/// and `self_exe monitor` when it is missing or does not.
pub fn choose_monitor(
    explicit: Option<&Path>,
    self_exe: &Path,
) -> Result<MonitorChoice, MonitorError> {
    if let Some(exe) = explicit {
        check_version(exe).map_err(|reason| MonitorError::Binary {
            exe: exe.to_path_buf(),
            reason,
        })?;
        return Ok(MonitorChoice {
            command: MonitorCommand::standalone(exe),
            skipped: None,
        });
    }
    let sibling = self_exe.with_file_name(BINARY_NAME);
    if !sibling.exists() {
        return Ok(MonitorChoice {
            command: MonitorCommand::reexec(self_exe),
            skipped: Some(format!("{} not found", sibling.display())),
        });
    }
    Ok(match check_version(&sibling) {
        Ok(()) => MonitorChoice {
            command: MonitorCommand::standalone(&sibling),
            skipped: None,
        },
        Err(reason) => MonitorChoice {
            command: MonitorCommand::reexec(self_exe),
            skipped: Some(format!("{}: {reason}", sibling.display())),
        },
    })
}

/// Runs `exe --version` and checks that it names this protocol.
fn check_version(exe: &Path) -> Result<(), String> {
    let mut child = Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("--version took over {VERSION_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("waiting for --version: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.take(4096).read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("--version exited with {status}"));
    }
    let want = format!("protocol {PROTOCOL_VERSION}");
    let line = out.trim();
    if line.starts_with(BINARY_NAME) && line.ends_with(&want) {
        Ok(())
    } else {
        Err(format!(
            "--version printed {line:?}, this agent needs {want:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn version_line_names_the_protocol() {
        assert!(version_line().starts_with("herd-monitor "));
        assert!(version_line().ends_with(&format!("protocol {PROTOCOL_VERSION}")));
    }

    #[test]
    fn no_sibling_reexecs_herd() {
        let d = tempfile::tempdir().unwrap();
        let herd = d.path().join("herd");
        let c = choose_monitor(None, &herd).unwrap();
        assert_eq!(c.command, MonitorCommand::reexec(&herd));
        assert!(c.skipped.unwrap().contains("not found"));
    }

    #[test]
    fn a_matching_sibling_is_used() {
        let d = tempfile::tempdir().unwrap();
        let herd = d.path().join("herd");
        let m = script(d.path(), BINARY_NAME, &format!("echo '{}'", version_line()));
        let c = choose_monitor(None, &herd).unwrap();
        assert_eq!(c.command, MonitorCommand::standalone(&m));
        assert_eq!(c.command.args, Vec::<OsString>::new());
        assert_eq!(c.skipped, None);
    }

    #[test]
    fn a_sibling_of_another_protocol_is_passed_over() {
        let d = tempfile::tempdir().unwrap();
        let herd = d.path().join("herd");
        script(
            d.path(),
            BINARY_NAME,
            &format!(
                "echo 'herd-monitor 0.0.9 protocol {}'",
                PROTOCOL_VERSION + 1
            ),
        );
        let c = choose_monitor(None, &herd).unwrap();
        assert_eq!(c.command, MonitorCommand::reexec(&herd));
        assert!(c.skipped.unwrap().contains("needs"), "names the mismatch");
    }

    #[test]
    fn a_failing_sibling_is_passed_over() {
        let d = tempfile::tempdir().unwrap();
        let herd = d.path().join("herd");
        script(d.path(), BINARY_NAME, "exit 3");
        let c = choose_monitor(None, &herd).unwrap();
        assert_eq!(c.command, MonitorCommand::reexec(&herd));
        assert!(c.skipped.unwrap().contains("exited"));
    }

    #[test]
    fn an_explicit_monitor_must_work() {
        let d = tempfile::tempdir().unwrap();
        let herd = d.path().join("herd");
        let missing = d.path().join("nope");
        let e = choose_monitor(Some(&missing), &herd).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let bad = script(d.path(), "m", "echo something-else");
        let e = choose_monitor(Some(&bad), &herd).unwrap_err();
        assert!(e.to_string().contains("something-else"), "{e}");
        let good = script(d.path(), "m2", &format!("echo '{}'", version_line()));
        let c = choose_monitor(Some(&good), &herd).unwrap();
        assert_eq!(c.command, MonitorCommand::standalone(&good));
    }
}
