//! Reading a container's CRI log back: every file in rotation order, `P`
//! chunks joined into whole lines per stream, and `tail`.
//!
//! Lines that are not CRI records (a torn write after a crash, foreign
//! junk) are skipped and counted rather than failing the whole read.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::LogError;
use super::format::{Stream, Tag, parse_line};
use super::writer::rotated_files;

/// One logical line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Time of the line's first chunk.
    pub time: SystemTime,
    pub stream: Stream,
    pub content: Vec<u8>,
    /// False for a line whose end was never logged (e.g. output without
    /// a final newline).
    pub complete: bool,
}

/// A whole log, read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    pub entries: Vec<LogEntry>,
    /// Lines that were not CRI records.
    pub bad_lines: usize,
}

/// The files of the log at `path`: rotated ones oldest first, then the
/// current one if it exists.
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut files = rotated_files(path)?;
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Reads every record of the log at `path` (rotated files included) and
/// joins partial chunks.
pub fn read_log(path: &Path) -> Result<LogRead, LogError> {
    let mut out = LogRead::default();
    let mut open: [Option<LogEntry>; 2] = [None, None];
    for file in log_files(path)? {
        let data = match fs::read(&file) {
            Ok(d) => d,
            // Rotated away between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LogError::Io { path: file, source }),
        };
        for line in data.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let Ok(rec) = parse_line(line) else {
                out.bad_lines += 1;
                continue;
            };
            let slot = &mut open[rec.stream as usize];
            let entry = slot.get_or_insert_with(|| LogEntry {
                time: rec.time,
                stream: rec.stream,
                content: Vec::new(),
                complete: false,
            });
            entry.content.extend_from_slice(rec.content);
            if rec.tag == Tag::Full
                && let Some(mut done) = slot.take()
            {
                done.complete = true;
                out.entries.push(done);
            }
        }
    }
    let mut rest: Vec<LogEntry> = open.into_iter().flatten().collect();
    rest.sort_by_key(|e| e.time);
    out.entries.extend(rest);
    Ok(out)
}

/// The last `n` lines of the log at `path`.
pub fn tail(path: &Path, n: usize) -> Result<LogRead, LogError> {
    let mut read = read_log(path)?;
    let skip = read.entries.len().saturating_sub(n);
    read.entries.drain(..skip);
    Ok(read)
}
