//! The kubelet's atomic writer for configMap/secret/projected/downwardAPI
//! volumes.
//!
//! Layout of a volume dir:
//! ```text
//! ..2026_11_23_16_17_25.123456789/   the current payload (a real dir)
//! ..data -> ..2026_11_23_16_17_25.123456789
//! key -> ..data/key                  one symlink per top-level name
//! ```
//! An update writes a new timestamped dir, points `..data_tmp` at it and
//! renames it over `..data` (one atomic step: a reader sees the old or the
//! new payload, never a mix), then fixes the user-visible symlinks and
//! removes the old dir. When the payload on disk already equals the wanted
//! one (bytes and modes), nothing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → content.
pub type Payload = BTreeMap<String, FileData>;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// A payload path must be relative, without `..` and not start with `..`.
pub fn valid_payload_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with("..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn top_level(p: &str) -> &str {
    p.split('/').find(|s| !s.is_empty()).unwrap_or(p)
}

fn current_matches(dir: &Path, payload: &Payload) -> bool {
    let data = dir.join(DATA);
    for (path, f) in payload {
        let file = data.join(path);
        match fs::metadata(&file) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o7777 == f.mode => {}
            _ => return false,
        }
        match fs::read(&file) {
            Ok(b) if b == f.data => {}
            _ => return false,
        }
    }
    // No extra files.
    count_files(&data).is_ok_and(|n| n == payload.len())
}

fn count_files(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += count_files(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

fn timestamp_name() -> String {
    let now = jiff::Timestamp::now();
    format!("..{}", now.strftime("%Y_%m_%d_%H_%M_%S.%f"))
}

/// Writes `payload` into `dir` atomically; `Ok(true)` when something
/// changed. `dir` must exist (and be on tmpfs already for secrets).
pub fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let has_data = fs::symlink_metadata(dir.join(DATA)).is_ok();
    if has_data && current_matches(dir, payload) {
        return Ok(false);
    }
    let old_target = fs::read_link(dir.join(DATA)).ok();
    let mut name = timestamp_name();
    let mut n = 0;
    while fs::symlink_metadata(dir.join(&name)).is_ok() {
        n += 1;
        name = format!("{}.{n}", timestamp_name());
    }
    let ts = dir.join(&name);
    fs::create_dir(&ts)?;
    fs::set_permissions(&ts, fs::Permissions::from_mode(0o755))?;
    for (path, f) in payload {
        let file = ts.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&file, &f.data)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(f.mode))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    symlink(&name, &tmp)?;
    fs::rename(&tmp, dir.join(DATA))?;
    // User-visible names: create the new, drop the ones that went away.
    let wanted: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    for t in &wanted {
        let link = dir.join(t);
        if fs::read_link(&link).is_err() {
            symlink(Path::new(DATA).join(t), &link)?;
        }
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let fname = e.file_name();
        let fname = fname.to_string_lossy();
        if fname.starts_with("..") || wanted.contains(fname.as_ref()) {
            continue;
        }
        if e.file_type()?.is_symlink() {
            fs::remove_file(e.path())?;
        }
    }
    if let Some(old) = old_target
        && old != Path::new(&name)
        && valid_old(&old)
    {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

/// The old `..data` target is a `..<timestamp>` sibling, nothing else.
fn valid_old(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.starts_with("..") && s != DATA && s != DATA_TMP && !s.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileData {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn swaps_data_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(write(d, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)])).unwrap());
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        assert_eq!(fs::read_link(d.join("a")).unwrap(), Path::new("..data/a"));
        let first = fs::read_link(d.join(DATA)).unwrap();
        assert!(first.to_string_lossy().starts_with("..20"));
        let m = fs::metadata(d.join("sub/b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        // Unchanged: nothing written.
        assert!(!write(d, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)])).unwrap());
        assert_eq!(fs::read_link(d.join(DATA)).unwrap(), first);
        // Changed: new dir, old removed, stale link gone.
        assert!(write(d, &payload(&[("a", "3", 0o644)])).unwrap());
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "3");
        assert!(fs::symlink_metadata(d.join("sub")).is_err());
        assert!(!d.join(&first).exists());
        let entries = fs::read_dir(d).unwrap().count();
        assert_eq!(entries, 3, "..ts, ..data, a");
    }

    #[test]
    fn payload_paths() {
        for ok in ["a", "a/b", "a.b"] {
            assert!(valid_payload_path(ok), "{ok}");
        }
        for bad in ["", "/a", "../a", "a/../b", "..a", "./a"] {
            assert!(!valid_payload_path(bad), "{bad}");
        }
    }
}
