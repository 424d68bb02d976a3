//! The CRI log writer with size-based rotation.
//!
//! Records are appended to `<attempt>.log`. Before a record would make the
//! file exceed `max_size_bytes`, the file is renamed to
//! `<attempt>.log.<YYYYMMDD-HHMMSS>` (UTC; `.<n>` appended when that name
//! is taken within the same second) and a new file is started; the oldest
//! rotated files are then deleted so that at most `max_files` files remain,
//! the current one included. A record is never split across files, so every
//! line is in exactly one file (a single record larger than the limit gets
//! a file of its own).
//!
//! Records are buffered between [`LogWriter::flush`] calls, which the
//! monitor makes after every read from a container, so readers see output
//! with one read's delay at most. Nothing is fsynced: logs are best effort
//! across a host crash, as with containerd.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::LogError;
use super::format::{Stream, Tag, format_line};
use super::timestamp::format_rotation_suffix;
use crate::logs::LogLimits;

/// Buffered bytes that trigger a write.
const FLUSH_AT: usize = 32 * 1024;

/// Appends CRI records to a container's log file, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
    buf: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(io_err(path))
}

impl LogWriter {
    /// Opens (creating the directories) or continues `path`.
    pub fn open(path: &Path, limits: LogLimits) -> Result<LogWriter, LogError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let file = open_append(path)?;
        let size = file.metadata().map_err(io_err(path))?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            limits,
            buf: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers one record; rotates first if it would not fit the file.
    pub fn record(
        &mut self,
        time: SystemTime,
        stream: Stream,
        tag: Tag,
        content: &[u8],
    ) -> Result<(), LogError> {
        let start = self.buf.len();
        format_line(&mut self.buf, time, stream, tag, content);
        let before = self.size + start as u64;
        let after = before + (self.buf.len() - start) as u64;
        if after > self.limits.max_size_bytes && before > 0 {
            let rec = self.buf.split_off(start);
            let flushed = self.flush();
            self.buf = rec;
            flushed?;
            self.rotate(time)?;
        }
        // Many short lines from one read must not grow the buffer (and the
        // monitor's heap) without bound.
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered records. On error they are dropped (a full disk
    /// must not make the monitor grow without bound).
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.buf);
        if r.is_ok() {
            self.size += self.buf.len() as u64;
        }
        self.buf.clear();
        r.map_err(io_err(&self.path))
    }

    fn rotate(&mut self, now: SystemTime) -> Result<(), LogError> {
        let stamp = format_rotation_suffix(now);
        // After the oldest of several same-second files was deleted, its
        // name must not be reused: it would sort before the newer ones.
        let name = file_name(&self.path)?;
        let next_seq = rotated_keys(&self.path)?
            .iter()
            .filter(|((s, _), _)| *s == stamp)
            .map(|((_, n), _)| n + 1)
            .max();
        let target = match next_seq {
            None => self.path.with_file_name(format!("{name}.{stamp}")),
            Some(n) => self.path.with_file_name(format!("{name}.{stamp}.{n}")),
        };
        fs::rename(&self.path, &target).map_err(io_err(&self.path))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        let rotated = rotated_files(&self.path)?;
        let keep = self.limits.max_files.max(1) as usize - 1;
        let excess = rotated.len().saturating_sub(keep);
        for old in &rotated[..excess] {
            match fs::remove_file(old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LogError::Io {
                        path: old.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The rotation order of a rotated file's name, if it is one of `name`'s.
fn rotation_key(name: &str, file_name: &str) -> Option<(String, u64)> {
    let suffix = file_name.strip_prefix(name)?.strip_prefix('.')?;
    let (stamp, seq) = match suffix.split_once('.') {
        Some((s, n)) => (s, n.parse::<u64>().ok()?),
        None => (suffix, 0),
    };
    let b = stamp.as_bytes();
    let ok = b.len() == 15
        && b[8] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit());
    ok.then(|| (stamp.to_string(), seq))
}

fn file_name(path: &Path) -> Result<&str, LogError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| LogError::BadPath(path.to_path_buf()))
}

type RotationKey = (String, u64);

fn rotated_keys(path: &Path) -> Result<Vec<(RotationKey, PathBuf)>, LogError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = file_name(path)?;
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(source) => {
            return Err(LogError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let file_name = entry.file_name();
        if let Some(key) = file_name.to_str().and_then(|f| rotation_key(name, f)) {
            found.push((key, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The rotated files of the log at `path`, oldest first (the current file
/// not included).
pub fn rotated_files(path: &Path) -> Result<Vec<PathBuf>, LogError> {
    Ok(rotated_keys(path)?.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_names_are_recognised_and_ordered() {
        assert_eq!(
            rotation_key("0.log", "0.log.20240101-000000"),
            Some(("20240101-000000".into(), 0))
        );
        assert_eq!(
            rotation_key("0.log", "0.log.20240101-000000.12"),
            Some(("20240101-000000".into(), 12))
        );
        for other in [
            "0.log",
            "0.log.gz",
            "0.log.2024",
            "1.log.20240101-000000",
            "0.log.20240101-00000x",
        ] {
            assert_eq!(rotation_key("0.log", other), None, "{other}");
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        for n in [
            "0.log.20240101-000001.10",
            "0.log.20240101-000001.2",
            "0.log.20240101-000001",
            "0.log.20231231-235959",
            "junk",
        ] {
            fs::write(dir.path().join(n), "").unwrap();
        }
        let names: Vec<String> = rotated_files(&log)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0.log.20231231-235959",
                "0.log.20240101-000001",
                "0.log.20240101-000001.2",
                "0.log.20240101-000001.10"
            ]
        );
    }
}
