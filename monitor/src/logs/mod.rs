//! CRI-format container logs (containerd's on-disk format, which the
//! kubelet and `kubectl logs` read):
//! `<RFC3339Nano UTC> <stdout|stderr> <P|F> <content>\n` under
//! `<root>/<namespace>_<pod>_<uid>/<container>/<attempt>.log`, rotated by
//! size with a file-count limit.
//!
//! - [`format`]: formatting and parsing one record, and the splitter that
//!   cuts a byte stream into records (16 KiB line limit, `P`/`F` tags).
//! - [`writer`]: the rotating writer the per-pod monitor feeds.
//! - [`reader`]: reading a log back across rotated files (`herd logs`).
//! - [`timestamp`]: RFC 3339 without a date crate.

pub mod format;
pub mod reader;
pub mod timestamp;
pub mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use format::{
    CriLine, LineSplitter, MAX_LINE, ParseError, Stream, Tag, format_line, parse_line,
};
pub use reader::{LogEntry, LogRead, log_files, read_log, tail};
pub use writer::{LogWriter, rotated_files};

/// Errors of the log writer and reader.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log path {0} has no usable file name")]
    BadPath(PathBuf),
    #[error("{what} {value:?} cannot be part of a log path (empty, '.', '..' or contains '/')")]
    BadComponent { what: &'static str, value: String },
}

fn check(what: &'static str, value: &str) -> Result<(), LogError> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(LogError::BadComponent {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// `<root>/<namespace>_<name>_<uid>`, the kubelet's pod log directory.
pub fn pod_log_dir(
    root: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<PathBuf, LogError> {
    check("namespace", namespace)?;
    check("pod name", name)?;
    check("pod uid", uid)?;
    Ok(root.join(format!("{namespace}_{name}_{uid}")))
}

/// `<pod log dir>/<container>/<attempt>.log`.
pub fn container_log_path(
    root: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
    container: &str,
    attempt: u32,
) -> Result<PathBuf, LogError> {
    check("container name", container)?;
    Ok(pod_log_dir(root, namespace, name, uid)?
        .join(container)
        .join(format!("{attempt}.log")))
}

#[cfg(test)]
mod tests;

/// Log file limits for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Rotate when the current file exceeds this many bytes (kubelet's
    /// `containerLogMaxSize`, default 10 MiB).
    pub max_size_bytes: u64,
    /// Keep at most this many files, the current one included (kubelet's
    /// `containerLogMaxFiles`, default 5).
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}
