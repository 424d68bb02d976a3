//! The monitor's durable state, readable by the agent without the monitor:
//! `<pod_dir>/containers/<id>/started.json` and `exit.json`.
//!
//! Files are written to a temporary name, fsynced and renamed, so a reader
//! sees either nothing or a whole record. `exit.json` is written only after
//! the container's stdout/stderr reached EOF and its log was flushed: when
//! the agent sees the exit, the log is complete.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// `started.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRecord {
    pub pid: u32,
    /// RFC 3339 (UTC, nanoseconds).
    pub started_at: String,
}

/// `exit.json`, also the answer to `Wait`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, or 128 + signal when the container was killed.
    pub exit_code: i32,
    /// The terminating signal, if any.
    pub signal: Option<i32>,
    /// The cgroup's `oom_kill` counter grew while the container ran.
    pub oom_killed: bool,
    pub finished_at: String,
    pub started_at: String,
}

/// One container as `List` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pid: u32,
    pub started_at: String,
    /// `None` while it runs (or while its output is still being drained).
    pub exit: Option<ExitRecord>,
}

/// Errors reading or writing state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<pod_dir>/containers/<id>`.
pub fn container_dir(pod_dir: &Path, id: &str) -> PathBuf {
    pod_dir.join("containers").join(id)
}

pub fn started_path(pod_dir: &Path, id: &str) -> PathBuf {
    container_dir(pod_dir, id).join("started.json")
}

pub fn exit_path(pod_dir: &Path, id: &str) -> PathBuf {
    container_dir(pod_dir, id).join("exit.json")
}

/// Writes `value` as JSON to `path` through `<path>.tmp` and a rename.
/// With `sync`, the file and its directory are fsynced so the record
/// survives a host crash; without, call [`sync_file`] later.
pub fn write_json_atomic<T: Serialize>(
    path: &Path,
    value: &T,
    sync: bool,
) -> Result<(), StateError> {
    let json = serde_json::to_vec(value).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&json).map_err(io_err(&tmp))?;
    if sync {
        f.sync_all().map_err(io_err(&tmp))?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if sync {
        sync_dir(path)?;
    }
    Ok(())
}

/// fsyncs a file written without `sync`, and its directory entry.
pub fn sync_file(path: &Path) -> Result<(), StateError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), StateError> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StateError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The container's `started.json`, if it was started.
pub fn read_started(pod_dir: &Path, id: &str) -> Result<Option<StartedRecord>, StateError> {
    read_json(&started_path(pod_dir, id))
}

/// The container's `exit.json`, if it has exited (and its logs are complete).
pub fn read_exit(pod_dir: &Path, id: &str) -> Result<Option<ExitRecord>, StateError> {
    read_json(&exit_path(pod_dir, id))
}

/// Every container recorded under `<pod_dir>/containers`, from the files
/// alone (for an agent that cannot reach the monitor). A container with
/// neither file (a start that failed early) is left out.
pub fn scan(pod_dir: &Path) -> Result<Vec<ContainerRecord>, StateError> {
    let dir = pod_dir.join("containers");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(started) = read_started(pod_dir, &id)? else {
            continue;
        };
        out.push(ContainerRecord {
            exit: read_exit(pod_dir, &id)?,
            id,
            pid: started.pid,
            started_at: started.started_at,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The `oom_kill` counter of a cgroup v2 `memory.events` or a v1
/// `memory.oom_control` file (both have an `oom_kill N` line); 0 when the
/// line is absent (kernels before 4.13).
pub fn read_oom_kills(path: &Path) -> Result<u64, StateError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    Ok(parse_oom_kills(&text))
}

fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters_of_both_versions() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_oom_kills(v2), 2);
        assert_eq!(parse_oom_kills(v1), 7);
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let cdir = container_dir(dir.path(), "c1");
        fs::create_dir_all(&cdir).unwrap();
        assert_eq!(read_exit(dir.path(), "c1").unwrap(), None);
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at: "2024-01-01T00:00:01Z".into(),
            started_at: "2024-01-01T00:00:00Z".into(),
        };
        write_json_atomic(&exit_path(dir.path(), "c1"), &rec, true).unwrap();
        assert_eq!(read_exit(dir.path(), "c1").unwrap(), Some(rec.clone()));
        assert!(!cdir.join("exit.json.tmp").exists());
        assert!(scan(dir.path()).unwrap().is_empty());
        let started = StartedRecord {
            pid: 42,
            started_at: "2024-01-01T00:00:00Z".into(),
        };
        write_json_atomic(&started_path(dir.path(), "c1"), &started, false).unwrap();
        let all = scan(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].pid, all[0].exit.as_ref()), (42, Some(&rec)));
        fs::write(started_path(dir.path(), "c1"), "{nope").unwrap();
        assert!(matches!(
            read_started(dir.path(), "c1"),
            Err(StateError::Json { .. })
        ));
    }
}
