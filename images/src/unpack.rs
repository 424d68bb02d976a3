//! Applying a layer tarball to a snapshot directory for overlayfs.
//!
//! Guarantees:
//! - Nothing is written outside the target directory. Entry paths that are
//!   absolute or contain `..` are refused; parent directories are resolved
//!   with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so a symlink
//!   planted earlier in the layer that points out (absolute or via `..`)
//!   makes the entry fail instead of writing through it; the final component
//!   is always created with `*at` calls that do not follow it; hard-link
//!   targets must lie inside the layer.
//! - Whiteouts `.wh.NAME` become overlayfs whiteouts (0/0 character
//!   devices), `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its
//!   directory; other `.wh..wh.` meta entries are ignored.
//! - Files, directories, symlinks, hard links, device nodes and FIFOs are
//!   created with their mode (setuid/setgid/sticky included), owner (when
//!   `same_owner`), mtime and extended attributes. `trusted.overlay.*`
//!   attributes from the archive are dropped: they would steer overlayfs.
//! - A directory the layer writes into without listing it is created with
//!   the mode and owner of the same directory in a lower snapshot (as
//!   containerd does), or 0755 root when no lower has it.
//!
//! Every error names the archive entry that caused it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::tar::{EntryKind, Header, TarError, TarReader};

/// Errors while applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream itself is malformed.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// An entry path is absolute.
    #[error("entry {entry:?}: absolute paths are not allowed in a layer")]
    AbsolutePath {
        /// The entry.
        entry: String,
    },
    /// An entry path contains `..`.
    #[error("entry {entry:?}: path contains '..' and could escape the layer")]
    PathTraversal {
        /// The entry.
        entry: String,
    },
    /// Resolving the entry's parent would leave the layer (through a symlink).
    #[error("entry {entry:?}: path resolves outside the layer through a symlink")]
    SymlinkEscape {
        /// The entry.
        entry: String,
    },
    /// A hard link points outside the layer.
    #[error("entry {entry:?}: hard link target {target:?} is outside the layer")]
    HardlinkEscape {
        /// The entry.
        entry: String,
        /// The link target.
        target: String,
    },
    /// A hard link's target is not in this layer.
    #[error("entry {entry:?}: hard link target {target:?} does not exist in this layer")]
    HardlinkTargetMissing {
        /// The entry.
        entry: String,
        /// The link target.
        target: String,
    },
    /// A parent of the entry exists but is not a directory.
    #[error("entry {entry:?}: a parent path component is not a directory")]
    NotADirectory {
        /// The entry.
        entry: String,
    },
    /// A filesystem operation failed.
    #[error("entry {entry:?}: {op}: {source}")]
    Io {
        /// The entry.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Opening the target directory failed.
    #[error("opening snapshot directory {path}: {source}")]
    Target {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// How to apply a layer.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Parent snapshot directories, topmost first (for implicit parents).
    pub lowers: Vec<PathBuf>,
    /// Apply the archive's uid/gid (needs CAP_CHOWN; true for the agent).
    pub same_owner: bool,
}

/// What a layer contained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries applied (whiteouts included).
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Applies the uncompressed tar stream `reader` to `target` (an existing,
/// normally empty, directory). Returns the stats and the reader, positioned
/// after the end-of-archive marker, so the caller can drain it for the
/// diff ID.
pub fn unpack<R: Read>(
    reader: R,
    target: &Path,
    opts: &UnpackOptions,
) -> Result<(UnpackStats, R), UnpackError> {
    let root = rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Target {
        path: target.to_owned(),
        source: e.into(),
    })?;
    let mut lowers = Vec::new();
    for l in &opts.lowers {
        let fd = rfs::open(
            l,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Target {
            path: l.clone(),
            source: e.into(),
        })?;
        lowers.push(fd);
    }
    let mut u = Unpacker {
        root,
        lowers,
        same_owner: opts.same_owner,
        dir_times: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut tar = TarReader::new(reader);
    while let Some(h) = tar.next_header()? {
        u.apply(&h, &mut tar)?;
        u.stats.entries += 1;
    }
    u.finish_dir_times()?;
    Ok((u.stats, tar.into_inner()))
}

struct Unpacker {
    root: OwnedFd,
    lowers: Vec<OwnedFd>,
    same_owner: bool,
    dir_times: Vec<(Vec<u8>, String, i64)>,
    stats: UnpackStats,
}

/// Splits an archive path into clean components.
fn components(raw: &[u8], entry: &str) -> Result<Vec<Vec<u8>>, UnpackError> {
    if raw.starts_with(b"/") {
        return Err(UnpackError::AbsolutePath {
            entry: entry.to_owned(),
        });
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(UnpackError::PathTraversal {
                    entry: entry.to_owned(),
                });
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn ts(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn io_at<'a>(entry: &'a str, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

impl Unpacker {
    /// Opens `comps` (a directory path below the root) without leaving the root.
    fn open_beneath(&self, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        let path = if comps.is_empty() {
            b".".to_vec()
        } else {
            join(comps)
        };
        rfs::openat2(
            &self.root,
            os(&path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
    }

    /// Opens the parent directory, creating missing components.
    fn parent(&self, comps: &[Vec<u8>], entry: &str) -> Result<OwnedFd, UnpackError> {
        let map = |e: Errno, entry: &str| match e {
            Errno::XDEV | Errno::LOOP => UnpackError::SymlinkEscape {
                entry: entry.to_owned(),
            },
            Errno::NOTDIR => UnpackError::NotADirectory {
                entry: entry.to_owned(),
            },
            e => UnpackError::Io {
                entry: entry.to_owned(),
                op: "open parent directory",
                source: e.into(),
            },
        };
        match self.open_beneath(comps) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(map(e, entry)),
        }
        // Slow path: create the missing directories one by one.
        let mut fd = self.open_beneath(&[]).map_err(|e| map(e, entry))?;
        for k in 1..=comps.len() {
            match self.open_beneath(&comps[..k]) {
                Ok(next) => fd = next,
                Err(Errno::NOENT) => {
                    let (mode, uid, gid) =
                        self.lower_dir_attrs(&comps[..k]).unwrap_or((0o755, 0, 0));
                    let name = os(&comps[k - 1]);
                    match rfs::mkdirat(&fd, name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(map(e, entry)),
                    }
                    let next = self.open_beneath(&comps[..k]).map_err(|e| map(e, entry))?;
                    rfs::fchmod(&next, Mode::from_raw_mode(mode))
                        .map_err(io_at(entry, "chmod implicit directory"))?;
                    if self.same_owner {
                        rfs::fchown(&next, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                            .map_err(io_at(entry, "chown implicit directory"))?;
                    }
                    fd = next;
                }
                Err(e) => return Err(map(e, entry)),
            }
        }
        Ok(fd)
    }

    /// Mode/owner of the same directory in the topmost lower that has it.
    fn lower_dir_attrs(&self, comps: &[Vec<u8>]) -> Option<(u32, u32, u32)> {
        let path = join(comps);
        for lower in &self.lowers {
            let Ok(fd) = rfs::openat2(
                lower,
                os(&path),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                BENEATH,
            ) else {
                continue;
            };
            let Ok(st) = rfs::fstat(&fd) else { continue };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Some((st.st_mode & 0o7777, st.st_uid, st.st_gid));
            }
        }
        None
    }

    /// Removes whatever is at `parent/name` (from earlier in this layer).
    fn clear(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        keep_dir: bool,
        entry: &str,
    ) -> Result<bool, UnpackError> {
        let st = match rfs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_at(entry, "stat existing entry")(e)),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if is_dir {
            // The /proc magic link pins the parent we resolved beneath the
            // root; std's remove_dir_all does not follow symlinks below it.
            let path = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(parent)
            ))
            .join(os(name));
            std::fs::remove_dir_all(&path).map_err(|e| UnpackError::Io {
                entry: entry.to_owned(),
                op: "replace existing directory",
                source: e,
            })?;
        } else {
            rfs::unlinkat(parent, os(name), AtFlags::empty())
                .map_err(io_at(entry, "replace existing entry"))?;
        }
        Ok(false)
    }

    fn apply<R: Read>(&mut self, h: &Header, tar: &mut TarReader<R>) -> Result<(), UnpackError> {
        let entry = h.display_path();
        let comps = components(&h.path, &entry)?;
        let Some((name, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): take its attributes.
            if h.kind == EntryKind::Directory {
                let root = self
                    .open_beneath(&[])
                    .map_err(io_at(&entry, "open layer root"))?;
                self.set_attrs_fd(&root, h, &entry)?;
                self.dir_times.push((Vec::new(), entry, h.mtime));
            }
            return Ok(());
        };

        if name.starts_with(WHITEOUT_PREFIX) {
            let parent = self.parent(parent_comps, &entry)?;
            if name.as_slice() == OPAQUE_MARKER {
                rfs::fsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(io_at(&entry, "mark directory opaque"))?;
            } else if !name.starts_with(WHITEOUT_META_PREFIX) {
                let hidden = &name[WHITEOUT_PREFIX.len()..];
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(UnpackError::PathTraversal { entry });
                }
                self.clear(&parent, hidden, false, &entry)?;
                rfs::mknodat(
                    &parent,
                    os(hidden),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(io_at(&entry, "create whiteout"))?;
            }
            return Ok(());
        }

        let parent = self.parent(parent_comps, &entry)?;
        let existing_dir = self.clear(&parent, name, h.kind == EntryKind::Directory, &entry)?;
        let n = os(name);
        match h.kind {
            EntryKind::Directory => {
                if !existing_dir {
                    rfs::mkdirat(&parent, n, Mode::from_raw_mode(0o700))
                        .map_err(io_at(&entry, "create directory"))?;
                }
                let fd = rfs::openat(
                    &parent,
                    n,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_at(&entry, "open directory"))?;
                self.set_attrs_fd(&fd, h, &entry)?;
                self.dir_times.push((join(&comps), entry, h.mtime));
            }
            EntryKind::File => {
                let fd = rfs::openat(
                    &parent,
                    n,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_at(&entry, "create file"))?;
                let mut file = File::from(fd);
                self.stats.bytes += tar.copy_data(&mut file)?;
                self.set_attrs_fd(file.as_fd(), h, &entry)?;
                rfs::futimens(&file, &ts(h.mtime)).map_err(io_at(&entry, "set mtime"))?;
            }
            EntryKind::Symlink => {
                rfs::symlinkat(os(&h.link), &parent, n).map_err(io_at(&entry, "create symlink"))?;
                if self.same_owner {
                    self.chown_at(&parent, n, h, &entry)?;
                }
                rfs::utimensat(&parent, n, &ts(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_at(&entry, "set symlink mtime"))?;
            }
            EntryKind::HardLink => {
                let target = String::from_utf8_lossy(&h.link).into_owned();
                let tcomps =
                    components(&h.link, &entry).map_err(|_| UnpackError::HardlinkEscape {
                        entry: entry.clone(),
                        target: target.clone(),
                    })?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(UnpackError::HardlinkEscape { entry, target });
                };
                let tdir = match self.open_beneath(tparent) {
                    Ok(fd) => fd,
                    Err(Errno::XDEV | Errno::LOOP) => {
                        return Err(UnpackError::HardlinkEscape { entry, target });
                    }
                    Err(_) => return Err(UnpackError::HardlinkTargetMissing { entry, target }),
                };
                match rfs::linkat(&tdir, os(tname), &parent, n, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::NOENT) => {
                        return Err(UnpackError::HardlinkTargetMissing { entry, target });
                    }
                    Err(e) => return Err(io_at(&entry, "create hard link")(e)),
                }
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                let ft = match h.kind {
                    EntryKind::CharDevice => FileType::CharacterDevice,
                    EntryKind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                rfs::mknodat(
                    &parent,
                    n,
                    ft,
                    Mode::from_raw_mode(h.mode),
                    rfs::makedev(h.dev_major, h.dev_minor),
                )
                .map_err(io_at(&entry, "create device node"))?;
                let fd = rfs::openat(
                    &parent,
                    n,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_at(&entry, "open device node"))?;
                if self.same_owner {
                    self.chown_at(&parent, n, h, &entry)?;
                }
                // chmod through the O_PATH descriptor's /proc link: fchmod
                // does not accept O_PATH descriptors.
                let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
                rfs::chmod(proc.as_str(), Mode::from_raw_mode(h.mode))
                    .map_err(io_at(&entry, "chmod device node"))?;
                rfs::utimensat(&parent, n, &ts(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_at(&entry, "set mtime"))?;
            }
        }
        Ok(())
    }

    fn ids(h: &Header, entry: &str) -> Result<(Uid, Gid), UnpackError> {
        let bad = |what: &str, v: u64| UnpackError::Io {
            entry: entry.to_owned(),
            op: "read owner",
            source: io::Error::other(format!("{what} {v} out of range")),
        };
        let uid = u32::try_from(h.uid)
            .ok()
            .filter(|&u| u != u32::MAX)
            .ok_or_else(|| bad("uid", h.uid))?;
        let gid = u32::try_from(h.gid)
            .ok()
            .filter(|&g| g != u32::MAX)
            .ok_or_else(|| bad("gid", h.gid))?;
        Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
    }

    fn chown_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        h: &Header,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let (uid, gid) = Self::ids(h, entry)?;
        rfs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_at(entry, "chown"))
    }

    /// Owner, xattrs and mode, in that order (chown clears setuid bits).
    fn set_attrs_fd(&self, fd: impl AsFd, h: &Header, entry: &str) -> Result<(), UnpackError> {
        if self.same_owner {
            let (uid, gid) = Self::ids(h, entry)?;
            rfs::fchown(&fd, Some(uid), Some(gid)).map_err(io_at(entry, "chown"))?;
        }
        for (key, value) in &h.xattrs {
            if key.starts_with("trusted.overlay.") {
                tracing::debug!(entry, key, "dropping overlay xattr from layer");
                continue;
            }
            rfs::fsetxattr(&fd, key.as_str(), value, XattrFlags::empty())
                .map_err(io_at(entry, "set xattr"))?;
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(h.mode)).map_err(io_at(entry, "chmod"))
    }

    /// Directory mtimes last, deepest first: creating children changes them.
    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        let times = std::mem::take(&mut self.dir_times);
        for (path, entry, mtime) in times.into_iter().rev() {
            let comps: Vec<Vec<u8>> = if path.is_empty() {
                Vec::new()
            } else {
                path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect()
            };
            // The directory may have been replaced later in the layer.
            let Ok(fd) = self.open_beneath(&comps) else {
                continue;
            };
            rfs::futimens(&fd, &ts(mtime)).map_err(io_at(&entry, "set directory mtime"))?;
        }
        Ok(())
    }
}

/// Wraps a possibly compressed layer stream in the right decompressor,
/// sniffing the magic bytes (gzip, zstd, or plain tar).
pub fn decompress<'a, R: io::BufRead + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_cleaned_and_checked() {
        assert_eq!(
            components(b"./a//b/", "x").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(matches!(
            components(b"/etc/passwd", "x"),
            Err(UnpackError::AbsolutePath { .. })
        ));
        assert!(matches!(
            components(b"a/../../b", "x"),
            Err(UnpackError::PathTraversal { .. })
        ));
        assert!(components(b"./", "x").unwrap().is_empty());
    }
}
