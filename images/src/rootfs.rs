//! Container root filesystems: an overlay of the image's snapshots (read
//! only, topmost first) plus a per-container upper and work directory.
//!
//! Snapshot directories are numbered (`snapshots/17/fs`) so the `lowerdir`
//! option stays short. When the option would still exceed the kernel's
//! one-page limit for mount data (deep images), the mount is made with the
//! new mount API instead, passing each layer with `lowerdir+` (Linux 6.8+),
//! which has no such limit. The mount is recorded in the metadata *before*
//! it is made, as a lease that keeps the image and its snapshots from being
//! removed or collected while the container exists.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::fsutil;
use crate::metadata::{MountRecord, now};
use crate::store::{ImageError, ImageStore, io_err};

/// Errors mounting a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The container ID is not a safe name.
    #[error(
        "invalid container id {0:?} (use 1-128 characters of [A-Za-z0-9_.-], not starting with '.')"
    )]
    BadId(String),
    /// A rootfs with this ID exists.
    #[error("a rootfs for container {0:?} already exists")]
    Exists(String),
    /// No rootfs with this ID.
    #[error("no rootfs for container {0:?}")]
    Unknown(String),
    /// A path cannot be used in overlay options.
    #[error("path {0} contains ',' or ':' and cannot be used in overlay mount options")]
    BadPath(PathBuf),
    /// The mount syscall failed.
    #[error("mount overlay at {target} ({layers} layers): {source}")]
    Mount {
        /// Mount point.
        target: PathBuf,
        /// Number of lower layers.
        layers: usize,
        /// The OS error.
        source: io::Error,
    },
    /// The unmount failed.
    #[error("unmount {target}: {source}")]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The kernel copies at most one page of mount data.
const MOUNT_DATA_LIMIT: usize = 4095;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_path(p: &Path) -> Result<String, MountError> {
    let s = p.to_string_lossy().into_owned();
    if s.contains(',') || s.contains(':') || p.to_str().is_none() {
        return Err(MountError::BadPath(p.to_owned()));
    }
    Ok(s)
}

impl ImageStore {
    /// Mounts the rootfs for `container_id` from `image` at `target`
    /// (created if missing). The container's writable layer lives under
    /// `<root>/mounts/<id>/`.
    pub fn mount_rootfs(
        &self,
        container_id: &str,
        image: &str,
        target: &Path,
    ) -> Result<MountRecord, ImageError> {
        if !valid_id(container_id) {
            return Err(MountError::BadId(container_id.into()).into());
        }
        let _lock = self.writer_lock()?;
        let img = self.resolve(image)?;
        let chains = self.ensure_snapshots(&img.layers, &mut |_, _| {})?;
        let record = MountRecord {
            image: img.name.clone(),
            manifest: img.manifest.clone(),
            top: chains.last().cloned(),
            target: target.to_owned(),
            created: now(),
        };
        self.meta.update(|m| {
            if m.mounts.contains_key(container_id) {
                return Err(ImageError::from(MountError::Exists(container_id.into())));
            }
            m.mounts.insert(container_id.to_owned(), record.clone());
            if let Some(i) = m.images.get_mut(&img.name) {
                i.last_used = now();
            }
            Ok(())
        })?;
        let res = self.do_mount(container_id, &record);
        if res.is_err() {
            let _ = self.meta.update(|m| {
                m.mounts.remove(container_id);
                Ok::<_, ImageError>(())
            });
            let _ = fsutil::remove_dir_all_if_exists(&self.root.join("mounts").join(container_id));
        }
        res.map(|()| record)
    }

    fn do_mount(&self, id: &str, record: &MountRecord) -> Result<(), ImageError> {
        let dir = self.root.join("mounts").join(id);
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&upper, &work, &record.target] {
            std::fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        let mut lowers = match &record.top {
            Some(top) => self.snapshot_stack(top)?,
            None => Vec::new(),
        };
        if lowers.is_empty() {
            // An image with no layers: an empty read-only lower.
            let empty = dir.join("empty");
            std::fs::create_dir_all(&empty).map_err(io_err("create", &empty))?;
            lowers.push(empty);
        }
        let lower_strs = lowers
            .iter()
            .map(|p| check_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (upper_s, work_s) = (check_path(&upper)?, check_path(&work)?);
        let data = format!(
            "lowerdir={},upperdir={upper_s},workdir={work_s}",
            lower_strs.join(":")
        );
        let mount_err = |source: io::Error| MountError::Mount {
            target: record.target.clone(),
            layers: lowers.len(),
            source,
        };
        if data.len() <= MOUNT_DATA_LIMIT {
            let c = CString::new(data).map_err(|e| mount_err(io::Error::other(e)))?;
            rustix::mount::mount(
                "overlay",
                &record.target,
                "overlay",
                MountFlags::empty(),
                c.as_c_str(),
            )
            .map_err(|e| mount_err(e.into()))?;
        } else {
            mount_with_fsconfig(&lower_strs, &upper_s, &work_s, &record.target)
                .map_err(mount_err)?;
        }
        Ok(())
    }

    /// Unmounts and deletes the rootfs of `container_id` and drops its lease.
    pub fn unmount_rootfs(&self, container_id: &str) -> Result<(), ImageError> {
        if !valid_id(container_id) {
            return Err(MountError::BadId(container_id.into()).into());
        }
        let meta = self.meta.read()?;
        let rec = meta
            .mounts
            .get(container_id)
            .ok_or_else(|| MountError::Unknown(container_id.into()))?;
        match rustix::mount::unmount(&rec.target, UnmountFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(&rec.target, UnmountFlags::DETACH).map_err(|e| {
                    MountError::Unmount {
                        target: rec.target.clone(),
                        source: e.into(),
                    }
                })?;
            }
            Err(e) => {
                return Err(MountError::Unmount {
                    target: rec.target.clone(),
                    source: e.into(),
                }
                .into());
            }
        }
        let dir = self.root.join("mounts").join(container_id);
        fsutil::remove_dir_all_if_exists(&dir).map_err(io_err("remove", &dir))?;
        self.meta.update(|m| {
            m.mounts.remove(container_id);
            Ok::<_, ImageError>(())
        })
    }

    /// All recorded rootfs mounts.
    pub fn mounts(&self) -> Result<Vec<(String, MountRecord)>, ImageError> {
        Ok(self.meta.read()?.mounts.into_iter().collect())
    }
}

/// Overlay through fsopen/fsconfig/fsmount, one `lowerdir+` per layer.
fn mount_with_fsconfig(
    lowers: &[String],
    upper: &str,
    work: &str,
    target: &Path,
) -> io::Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in lowers {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l.as_str())?;
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work)?;
    rustix::mount::fsconfig_create(&fs)?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}
