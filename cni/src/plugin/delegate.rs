//! Running a delegated IPAM plugin, as the spec's delegation rules say: the
//! executable named by `ipam.type` is looked up in CNI_PATH and run with the
//! same CNI_* environment (CNI_COMMAND set to the verb) and the same stdin.
//! Its error JSON is passed through with its own code.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use super::env::{Command, PluginEnv};
use crate::error::{CniError, ErrorCode, ErrorResult};

/// Find `plugin` in CNI_PATH.
fn find(plugin: &str, env: &PluginEnv) -> Result<PathBuf, CniError> {
    if env.path.is_empty() {
        return Err(CniError::invalid_env(format!(
            "CNI_PATH is required to run the ipam plugin {plugin:?}"
        )));
    }
    env.path
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::Delegate,
                format!("failed to find plugin {plugin:?} in CNI_PATH"),
            )
            .with_details(
                env.path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
        })
}

/// Run `plugin` for `cmd`; `Ok(Some(json))` when it printed a result.
pub fn exec(
    plugin: &str,
    cmd: Command,
    env: &PluginEnv,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let path = find(plugin, env)?;
    let fail = |what: &str, detail: String| {
        CniError::new(
            ErrorCode::Delegate,
            format!("ipam plugin {}: {what}", path.display()),
        )
        .with_details(detail)
    };
    let mut p = Process::new(&path);
    p.env("CNI_COMMAND", cmd.as_str())
        .env(
            "CNI_PATH",
            std::env::join_paths(&env.path).unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in [
        ("CNI_CONTAINERID", env.container_id.clone()),
        ("CNI_IFNAME", env.ifname.clone()),
        (
            "CNI_NETNS",
            env.netns.as_ref().map(|p| p.display().to_string()),
        ),
        (
            "CNI_ARGS",
            (!env.args.is_empty()).then(|| {
                env.args
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";")
            }),
        ),
    ] {
        match v {
            Some(v) => p.env(k, v),
            None => p.env_remove(k),
        };
    }
    let mut child = p.spawn().map_err(|e| fail("cannot start", e.to_string()))?;
    let input = stdin.to_vec();
    let writer = child.stdin.take().map(|mut w| {
        std::thread::spawn(move || {
            // A plugin that exits without reading stdin closes the pipe;
            // its exit status tells the story.
            let _ = w.write_all(&input);
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| fail("wait failed", e.to_string()))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(match serde_json::from_slice::<ErrorResult>(&out.stdout) {
            Ok(r) => {
                let mut e = CniError::from_result(r);
                if e.details.is_empty() {
                    e.details = stderr;
                }
                e
            }
            Err(_) => fail(
                &format!("failed with {}", out.status),
                format!(
                    "stdout: {} stderr: {stderr}",
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            ),
        });
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| fail("printed an unreadable result", e.to_string()))
}
