//! Which cgroup layout a host has, found from filesystem magics (as runc,
//! youki and the kubelet do), never from a hard-coded path.

use std::path::Path;

use super::CgroupError;

/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`.
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// `TMPFS_MAGIC` from `linux/magic.h`.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// How the host mounts its cgroup hierarchies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupLayout {
    /// `root` is a cgroup2 mount: every controller on one tree.
    Unified,
    /// `root` is a tmpfs of v1 hierarchies plus a controller-less cgroup2 at
    /// `root/unified`; limits go through v1.
    Hybrid,
    /// `root` is a tmpfs of v1 hierarchies only.
    Legacy,
}

impl CgroupLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupLayout::Unified => "unified",
            CgroupLayout::Hybrid => "hybrid",
            CgroupLayout::Legacy => "legacy",
        }
    }
}

/// The layout mounted at `root` (normally `/sys/fs/cgroup`): statfs of
/// `root`, then of `root/unified` when `root` is a tmpfs.
pub fn detect_layout(root: &Path) -> Result<CgroupLayout, CgroupError> {
    let root_magic = fs_magic(root)?;
    let unified = root.join("unified");
    let unified_magic = if root_magic == TMPFS_MAGIC && unified.is_dir() {
        Some(fs_magic(&unified)?)
    } else {
        None
    };
    layout_from_magics(root, root_magic, unified_magic)
}

/// The decision behind [`detect_layout`], on magics already read (testable
/// without a kernel).
pub fn layout_from_magics(
    root: &Path,
    root_magic: u64,
    unified_magic: Option<u64>,
) -> Result<CgroupLayout, CgroupError> {
    match (root_magic, unified_magic) {
        (CGROUP2_SUPER_MAGIC, _) => Ok(CgroupLayout::Unified),
        (TMPFS_MAGIC, Some(CGROUP2_SUPER_MAGIC)) => Ok(CgroupLayout::Hybrid),
        (TMPFS_MAGIC, _) => Ok(CgroupLayout::Legacy),
        (magic, _) => Err(CgroupError::NotCgroupFs {
            path: root.to_path_buf(),
            magic,
        }),
    }
}

fn fs_magic(path: &Path) -> Result<u64, CgroupError> {
    let st = rustix::fs::statfs(path).map_err(|e| CgroupError::Statfs {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    // f_type is a signed word on some targets; magics are 32-bit values.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64;
    Ok(magic)
}
