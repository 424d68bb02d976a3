//! Resource usage of one cgroup, read the way cadvisor reads it.

use std::path::Path;

use super::CgroupError;
use super::files;

/// Usage of a pod or container cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Total CPU time (v2 `cpu.stat usage_usec` × 1000, v1 `cpuacct.usage`).
    pub cpu_usage_ns: u64,
    /// v2 `memory.current`, v1 `memory.usage_in_bytes`.
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file cache (v2 `inactive_file`, v1
    /// `total_inactive_file`), never below zero: what the kubelet evicts on.
    pub memory_working_set_bytes: u64,
    /// OOM kills in the cgroup and below (see [`CgroupManager::oom_kill_count`]).
    ///
    /// [`CgroupManager::oom_kill_count`]: super::CgroupManager::oom_kill_count
    pub oom_kills: u64,
    /// Processes in the cgroup and below (`pids.current`).
    pub pids: u64,
}

/// The `oom_kill` counter of a v2 `memory.events` or v1
/// `memory.oom_control` file; 0 when the line is absent (kernels before
/// 4.13) or unreadable as a number. Shared with the per-pod monitor.
pub fn parse_oom_kill_count(contents: &str) -> u64 {
    flat_keyed(contents, "oom_kill").unwrap_or(0)
}

/// The value of `key` in a flat keyed file ("key value" lines).
pub fn flat_keyed(contents: &str, key: &str) -> Option<u64> {
    contents.lines().find_map(|line| {
        let mut it = line.split_ascii_whitespace();
        match (it.next(), it.next()) {
            (Some(k), Some(v)) if k == key => v.parse().ok(),
            _ => None,
        }
    })
}

/// Like [`flat_keyed`] on a file, with a typed error when the key is absent.
pub(crate) fn keyed_from_file(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = files::read(path)?;
    flat_keyed(&text, key).ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("no {key:?} line"),
    })
}

/// Working set as cadvisor computes it.
pub(crate) fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// `pids.current` of a cgroup, through libcgroups' parser.
pub(crate) fn pids_current(dir: &Path) -> Result<u64, CgroupError> {
    libcgroups::stats::pid_stats(dir)
        .map(|s| s.current)
        .map_err(|e| CgroupError::Parse {
            path: dir.join("pids.current"),
            reason: e.to_string(),
        })
}
