//! Mounting a containerd snapshot's mounts (read-only, briefly) so herd can
//! read the image's files while it builds the container's spec.

use std::ffi::CString;
use std::path::Path;

use containerd_client::types::Mount;
use rustix::mount::{MountFlags, UnmountFlags};

use super::ContainerdError;
use crate::pod::RuntimeError;

/// Mounts `mounts` (one overlay or bind mount, as the overlayfs and native
/// snapshotters return) read-only at `target`.
pub fn mount_read_only(mounts: &[Mount], target: &Path) -> Result<(), RuntimeError> {
    let [m] = mounts else {
        return Err(ContainerdError::Invalid(format!(
            "snapshot has {} mounts; herd reads images from one overlay or bind mount",
            mounts.len()
        ))
        .into());
    };
    let fail = |e: std::io::Error| RuntimeError::Io {
        op: "mount snapshot",
        path: target.to_path_buf(),
        source: e,
    };
    let mut flags = MountFlags::RDONLY;
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" | "rw" => {}
            "bind" => flags |= MountFlags::BIND,
            "rbind" => flags |= MountFlags::BIND | MountFlags::REC,
            "nosuid" => flags |= MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            other => data.push(other.to_string()),
        }
    }
    let data = CString::new(data.join(",")).map_err(|e| fail(std::io::Error::other(e)))?;
    let fstype = if flags.contains(MountFlags::BIND) {
        ""
    } else {
        m.r#type.as_str()
    };
    rustix::mount::mount(m.source.as_str(), target, fstype, flags, data.as_c_str())
        .map_err(|e| fail(e.into()))?;
    if flags.contains(MountFlags::BIND) {
        // A bind mount ignores RDONLY until remounted.
        rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, c"")
            .map_err(|e| fail(e.into()))?;
    }
    Ok(())
}

/// Unmounts what [`mount_read_only`] mounted (lazily, ignoring "not
/// mounted").
pub fn unmount(target: &Path) {
    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
}
