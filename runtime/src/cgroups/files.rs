//! Small file operations on cgroup trees shared by both managers: reads and
//! writes with the path in the error, name checks, pod directory listing,
//! and the kill-then-rmdir teardown.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;
use crate::types::QosClass;

pub(crate) const CGROUP_PROCS: &str = "cgroup.procs";
pub(crate) const BURSTABLE: &str = "burstable";
pub(crate) const BEST_EFFORT: &str = "besteffort";
pub(crate) const POD_PREFIX: &str = "pod";

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may be missing (a controller not enabled there).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` to an existing control file in one `write(2)`.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let werr = |source: io::Error| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(werr)?;
    f.write_all(value.as_bytes()).map_err(werr)
}

pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    let t = s.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse().map_err(|e| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("{t:?} is not a number: {e}"),
    })
}

pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read(path)?)
}

/// Creates one directory; an existing one is fine. Returns whether it was
/// created.
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A pod uid, container id or base name: one non-empty path component of
/// `[A-Za-z0-9_.-]`, at most 200 bytes, not `.` or `..`.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            what,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return bad("empty");
    }
    if value.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if value == "." || value == ".." {
        return bad("not a name");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// A cgroup path as given to `stats` & co ("/herd/pod1/c1"): every
/// component a valid name, so it cannot leave the root.
pub(crate) fn check_cgroup_path(cgroup: &str) -> Result<&str, CgroupError> {
    let rel = cgroup.trim_start_matches('/');
    for part in rel.split('/') {
        check_name("cgroup path component", part).map_err(|_| CgroupError::InvalidName {
            what: "cgroup path",
            value: cgroup.to_string(),
            reason: "components must be non-empty names of [A-Za-z0-9_.-]",
        })?;
    }
    Ok(rel)
}

/// The QoS tier directory (relative to the base) of a class.
pub(crate) fn tier(qos: QosClass) -> Option<&'static str> {
    match qos {
        QosClass::Guaranteed => None,
        QosClass::Burstable => Some(BURSTABLE),
        QosClass::BestEffort => Some(BEST_EFFORT),
    }
}

/// "/base[/tier]/pod<uid>".
pub(crate) fn pod_path(base: &str, uid: &str, qos: QosClass) -> String {
    match tier(qos) {
        Some(t) => format!("/{base}/{t}/{POD_PREFIX}{uid}"),
        None => format!("/{base}/{POD_PREFIX}{uid}"),
    }
}

/// Pod uids found under `base_dir` (a hierarchy's `herd/`): `pod*` directly
/// (Guaranteed) and in the two tiers. A missing directory lists nothing.
pub(crate) fn list_pods_in(
    base_dir: &Path,
    out: &mut BTreeSet<(QosClassKey, String)>,
) -> Result<(), CgroupError> {
    for (qos, dir) in [
        (QosClass::Guaranteed, base_dir.to_path_buf()),
        (QosClass::Burstable, base_dir.join(BURSTABLE)),
        (QosClass::BestEffort, base_dir.join(BEST_EFFORT)),
    ] {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::List { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::List {
                path: dir.clone(),
                source,
            })?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let name = entry.file_name();
            let Some(uid) = name.to_str().and_then(|n| n.strip_prefix(POD_PREFIX)) else {
                continue;
            };
            if is_dir && check_name("pod uid", uid).is_ok() {
                out.insert((QosClassKey(qos), uid.to_string()));
            }
        }
    }
    Ok(())
}

/// `QosClass` ordered, for deterministic listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QosClassKey(pub QosClass);

impl QosClassKey {
    fn rank(self) -> u8 {
        match self.0 {
            QosClass::Guaranteed => 0,
            QosClass::Burstable => 1,
            QosClass::BestEffort => 2,
        }
    }
}

impl PartialOrd for QosClassKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QosClassKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Directories under `dir` (included), children before parents.
fn subtree_post_order(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::List {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::List {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            subtree_post_order(&entry.path(), out)?;
        }
    }
    out.push(dir.to_path_buf());
    Ok(())
}

/// Pids in `cgroup.procs` of `dir` and every cgroup below it.
pub(crate) fn subtree_pids(dir: &Path) -> Result<BTreeSet<i32>, CgroupError> {
    let mut dirs = Vec::new();
    subtree_post_order(dir, &mut dirs)?;
    let mut pids = BTreeSet::new();
    for d in dirs {
        let file = d.join(CGROUP_PROCS);
        let Some(text) = read_opt(&file)? else {
            continue;
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let pid: i32 = line.parse().map_err(|e| CgroupError::Parse {
                path: file.clone(),
                reason: format!("pid {line:?}: {e}"),
            })?;
            pids.insert(pid);
        }
    }
    Ok(pids)
}

/// Teardown of one cgroup in one or more hierarchies.
///
/// Kills every process in the subtrees (writing `cgroup.kill` first where
/// the kernel has it, v2 ≥ 5.14; SIGKILL to each pid of `cgroup.procs`
/// otherwise, repeated until no pid is left so forks are caught), then
/// removes the directories children first, retrying `EBUSY` (a cgroup
/// whose last task is still exiting) until `timeout`. Missing directories
/// are fine. A directory that is not on a cgroup filesystem (a test
/// fixture) has its plain files removed before its `rmdir`.
pub(crate) fn kill_and_remove(dirs: &[PathBuf], timeout: Duration) -> Result<(), CgroupError> {
    let start = Instant::now();
    for dir in dirs {
        let kill = dir.join("cgroup.kill");
        if kill.is_file() {
            write(&kill, "1")?;
        }
    }
    loop {
        let mut pids = BTreeSet::new();
        for dir in dirs {
            pids.extend(subtree_pids(dir)?);
        }
        if pids.is_empty() {
            break;
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::Busy {
                path: dirs.first().cloned().unwrap_or_default(),
                waited: start.elapsed(),
                detail: format!("{} process(es) still in it: {pids:?}", pids.len()),
            });
        }
        for pid in pids {
            kill_pid(dirs, pid)?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for dir in dirs {
        let mut all = Vec::new();
        subtree_post_order(dir, &mut all)?;
        for d in all {
            rmdir_retry(&d, start, timeout)?;
        }
    }
    Ok(())
}

fn kill_pid(dirs: &[PathBuf], pid: i32) -> Result<(), CgroupError> {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return Ok(());
    };
    match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(CgroupError::Kill {
            path: dirs.first().cloned().unwrap_or_default(),
            pid,
            source: e.into(),
        }),
    }
}

fn rmdir_retry(dir: &Path, start: Instant, timeout: Duration) -> Result<(), CgroupError> {
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => remove_plain_files(dir)?,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if start.elapsed() > timeout {
                    return Err(CgroupError::Busy {
                        path: dir.to_path_buf(),
                        waited: start.elapsed(),
                        detail: "rmdir kept failing with EBUSY".to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn remove_plain_files(dir: &Path) -> Result<(), CgroupError> {
    let rerr = |source| CgroupError::Remove {
        path: dir.to_path_buf(),
        source,
    };
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(rerr)? {
        let entry = entry.map_err(rerr)?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            fs::remove_file(entry.path()).map_err(rerr)?;
            removed = true;
        }
    }
    if removed {
        Ok(())
    } else {
        Err(rerr(io::Error::from_raw_os_error(libc::ENOTEMPTY)))
    }
}
