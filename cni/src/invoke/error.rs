//! Errors of the CNI invoker.
//!
//! Every error that comes from running a plugin carries the plugin's name,
//! the binary that ran, the CNI command, and what the plugin left behind:
//! exit status, the last [`STDERR_KEEP`] bytes of its stderr and, when it
//! printed one, its error JSON parsed into [`PluginErrorReply`].

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How much of a plugin's stderr is kept (the tail).
pub const STDERR_KEEP: usize = 64 * 1024;

/// The error JSON a plugin prints on stdout when it fails
/// (`{"cniVersion", "code", "msg", "details"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginErrorReply {
    /// The spec's error code (1-7, 11, 50, 51, 100+ plugin specific).
    pub code: u32,
    /// Short message.
    #[serde(default)]
    pub msg: String,
    /// Longer explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// How a plugin process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// One plugin call that went wrong: who, what, and everything it said.
#[derive(Debug, Clone)]
pub struct PluginFailure {
    /// The plugin's `type`.
    pub plugin: String,
    /// The binary that ran.
    pub binary: PathBuf,
    /// `ADD`, `DEL`, `CHECK`, `STATUS`, `GC` or `VERSION`.
    pub command: &'static str,
    /// How it ended (`None` when it was killed on timeout before being reaped).
    pub exit: Option<Exit>,
    /// Its error JSON, when stdout held one.
    pub reply: Option<PluginErrorReply>,
    /// Raw stdout when it was not the JSON expected (first 4 KiB).
    pub stdout: String,
    /// The tail of its stderr (at most [`STDERR_KEEP`] bytes).
    pub stderr: String,
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {} ({}) {}",
            self.plugin,
            self.binary.display(),
            self.command
        )?;
        if let Some(exit) = self.exit {
            write!(f, ": {exit}")?;
        }
        if let Some(r) = &self.reply {
            write!(f, ": error code {}: {}", r.code, r.msg)?;
            if !r.details.is_empty() {
                write!(f, " ({})", r.details)?;
            }
        } else if !self.stdout.is_empty() {
            write!(f, ": stdout: {}", self.stdout.trim_end())?;
        }
        let stderr = self.stderr.trim_end();
        if !stderr.is_empty() {
            write!(f, "; stderr: {stderr}")?;
        }
        Ok(())
    }
}

/// Errors of the CNI invoker.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// A filesystem operation on configs, cache or netns failed.
    #[error("cni invoke: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A network configuration file is not valid JSON.
    #[error("network config {path}: invalid JSON: {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A network configuration file has a bad or missing field.
    #[error("network config {path}: field {field}: {reason}")]
    ConfigInvalid {
        /// The file (or `<memory>` for configs not read from disk).
        path: PathBuf,
        /// The field, as a JSON path (`plugins[1].type`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No network configuration (with that name) in the directory.
    #[error("no network config{} in {dir}", name.as_deref().map(|n| format!(" named {n:?}")).unwrap_or_default())]
    NoNetwork {
        /// The directory searched.
        dir: PathBuf,
        /// The name asked for, if any.
        name: Option<String>,
    },
    /// A plugin binary is not in any directory of the search path.
    #[error("cni plugin {plugin:?} not found in {}", fmt_paths(searched))]
    PluginNotFound {
        /// The plugin's `type`.
        plugin: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The plugin could not be started.
    #[error("cni plugin {plugin} ({binary}): cannot run: {source}")]
    Spawn {
        /// The plugin's `type`.
        plugin: String,
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The plugin did not finish in time; its process group was killed.
    #[error("timed out after {timeout:?}: {failure}")]
    Timeout {
        /// The limit that was hit.
        timeout: Duration,
        /// What the plugin had said by then.
        failure: Box<PluginFailure>,
    },
    /// The plugin exited non-zero (or was killed).
    #[error("{0}")]
    PluginFailed(Box<PluginFailure>),
    /// The plugin exited 0 but its stdout is not what the command returns.
    #[error("bad output ({reason}): {failure}")]
    BadOutput {
        /// What is wrong with it.
        reason: String,
        /// The call, with the raw stdout.
        failure: Box<PluginFailure>,
    },
    /// A plugin does not support the network's cniVersion.
    #[error(
        "cni plugin {plugin} ({binary}) does not support cniVersion {version} of network {network} (it supports {})",
        supported.join(", ")
    )]
    UnsupportedVersion {
        /// The plugin's `type`.
        plugin: String,
        /// The binary.
        binary: PathBuf,
        /// The network.
        network: String,
        /// The network's version.
        version: String,
        /// What the plugin reported.
        supported: Vec<String>,
    },
    /// The network's cniVersion is too old for the command (CHECK < 0.4.0).
    #[error(
        "network {network}: {command} needs cniVersion {needed} or later, config has {version}"
    )]
    CommandNotSupported {
        /// The command.
        command: &'static str,
        /// The network.
        network: String,
        /// Its version.
        version: String,
        /// The first version with the command.
        needed: &'static str,
    },
    /// CHECK without a cached ADD result.
    #[error("network {network}: no cached result for container {container_id} ifname {ifname}")]
    NoCachedResult {
        /// The network.
        network: String,
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
    },
    /// A cache entry is unreadable.
    #[error("cni result cache {path}: {reason}")]
    CacheCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The attachment parameters break the spec's rules.
    #[error("invalid attachment: {field}: {reason}")]
    InvalidAttachment {
        /// `container_id`, `ifname`, `netns`, `args`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// GC went through every step; these failed.
    #[error("gc of network {network}: {} error(s): {}", errors.len(), errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Gc {
        /// The network.
        network: String,
        /// Every failure, in the order met.
        errors: Vec<InvokeError>,
    },
}

impl InvokeError {
    /// The plugin call behind this error, if it is one.
    pub fn failure(&self) -> Option<&PluginFailure> {
        match self {
            InvokeError::Timeout { failure, .. }
            | InvokeError::PluginFailed(failure)
            | InvokeError::BadOutput { failure, .. } => Some(failure),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| InvokeError::Io { op, path, source }
    }
}

fn fmt_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "an empty plugin path".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}
