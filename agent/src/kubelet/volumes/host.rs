//! hostPath type checks and the tmpfs/mount helpers of pod volumes.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use super::VolumeError;

/// `checkTypeInternal` of the kubelet's hostPath plugin.
pub fn check_host_path(volume: &str, path: &Path, ty: &str) -> Result<(), VolumeError> {
    let fail = |what: &str| VolumeError::HostPathType {
        volume: volume.to_string(),
        message: format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        ),
    };
    let io_err = |e: io::Error| VolumeError::Io {
        volume: volume.to_string(),
        path: path.to_path_buf(),
        source: e,
    };
    let meta = fs::metadata(path).ok();
    let ft = meta.as_ref().map(fs::Metadata::file_type);
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" | "Directory" => match ft {
            None if ty == "DirectoryOrCreate" => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(io_err),
            Some(t) if t.is_dir() => Ok(()),
            _ => Err(fail("a directory")),
        },
        "FileOrCreate" | "File" => match ft {
            None if ty == "FileOrCreate" => fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map(drop)
                .map_err(io_err),
            Some(t) if t.is_file() => Ok(()),
            _ => Err(fail("a file")),
        },
        "Socket" => match ft {
            Some(t) if t.is_socket() => Ok(()),
            _ => Err(fail("a socket file")),
        },
        "CharDevice" => match ft {
            Some(t) if t.is_char_device() => Ok(()),
            _ => Err(fail("a character device")),
        },
        "BlockDevice" => match ft {
            Some(t) if t.is_block_device() => Ok(()),
            _ => Err(fail("a block device")),
        },
        other => Err(VolumeError::HostPathType {
            volume: volume.to_string(),
            message: format!("{other} is an invalid volume type"),
        }),
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let me = fs::symlink_metadata(dir)?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let up = fs::metadata(parent)?;
    Ok(me.dev() != up.dev() || me.ino() == up.ino())
}

/// Mounts a tmpfs on `dir` unless one is there already.
pub fn ensure_tmpfs(volume: &str, dir: &Path, size: u64, mode: u32) -> Result<(), VolumeError> {
    let io_err = |e: io::Error| VolumeError::Io {
        volume: volume.to_string(),
        path: dir.to_path_buf(),
        source: e,
    };
    if is_mount_point(dir).map_err(io_err)? {
        return Ok(());
    }
    let data = format!("size={size},mode={mode:o}");
    let data = std::ffi::CString::new(data).map_err(|e| io_err(io::Error::other(e)))?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| VolumeError::Mount {
        volume: volume.to_string(),
        path: dir.to_path_buf(),
        source: e.into(),
    })
}

/// Undoes the octal escapes of mountinfo (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points (field 5) and fs types of `<proc>/self/mountinfo`.
pub fn mounts(proc_root: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    let text = fs::read_to_string(proc_root.join("self/mountinfo"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if let (Some(mp), Some(fs)) = (fields.get(4), fields.get(sep + 1)) {
            out.push((PathBuf::from(unescape(mp)), (*fs).to_string()));
        }
    }
    Ok(out)
}

/// Every mount at or under `root`, deepest first.
pub fn mounts_under(proc_root: &Path, root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = mounts(proc_root)?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Unmounts `path`, lazily when it is busy.
pub fn unmount(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(_) => rustix::mount::unmount(path, UnmountFlags::DETACH).map_err(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }

    #[test]
    fn parses_mountinfo_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("self")).unwrap();
        fs::write(
            dir.path().join("self/mountinfo"),
            "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
             30 22 0:40 / /var/pods/u1/volumes/a\\040b rw - tmpfs tmpfs rw\n\
             31 30 0:41 / /var/pods/u1/volumes/a\\040b/c rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        let m = mounts_under(dir.path(), Path::new("/var/pods/u1")).unwrap();
        assert_eq!(
            m,
            vec![
                PathBuf::from("/var/pods/u1/volumes/a b/c"),
                PathBuf::from("/var/pods/u1/volumes/a b")
            ]
        );
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let f = d.join("f");
        fs::write(&f, "x").unwrap();
        check_host_path("v", d, "Directory").unwrap();
        check_host_path("v", &f, "File").unwrap();
        let e = check_host_path("v", &f, "Directory").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "MountVolume.SetUp failed for volume \"v\" : \
                 hostPath type check failed: {} is not a directory",
                f.display()
            )
        );
        assert!(check_host_path("v", d, "File").is_err());
        assert!(check_host_path("v", &d.join("missing"), "Directory").is_err());
        assert!(check_host_path("v", d, "Socket").is_err());
        assert!(check_host_path("v", d, "CharDevice").is_err());
        assert!(check_host_path("v", d, "BlockDevice").is_err());
        assert!(check_host_path("v", d, "Bogus").is_err());
        check_host_path("v", Path::new("/dev/null"), "CharDevice").unwrap();
        check_host_path("v", &d.join("new/dir"), "DirectoryOrCreate").unwrap();
        assert!(d.join("new/dir").is_dir());
        check_host_path("v", &d.join("nf"), "FileOrCreate").unwrap();
        let m = fs::metadata(d.join("nf")).unwrap();
        assert!(m.is_file());
        assert!(check_host_path("v", &d.join("no/such/file"), "FileOrCreate").is_err());
    }
}
