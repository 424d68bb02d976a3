//! The cgroup module's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Every failure of the cgroup layer carries the path (or name) it is about.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("statfs {path}: {source}")]
    Statfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a cgroup mount (filesystem magic {magic:#x})")]
    NotCgroupFs { path: PathBuf, magic: u64 },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still busy after {waited:?} ({detail})")]
    Busy {
        path: PathBuf,
        waited: Duration,
        detail: String,
    },
    #[error("cgroup {path} still has pod cgroups in it")]
    NotEmpty { path: PathBuf },
    #[error("kill process {pid} of {path}: {source}")]
    Kill {
        path: PathBuf,
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("controller {controller} is not available in {path}")]
    MissingController {
        path: PathBuf,
        controller: &'static str,
    },
    #[error("no cgroup v1 hierarchy with the {controller} controller under {root}")]
    NoHierarchy {
        root: PathBuf,
        controller: &'static str,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}
