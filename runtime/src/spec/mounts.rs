//! The container's mount list, in containerd CRI order:
//!
//! 1. `/proc` (proc), `/dev` (tmpfs, `mode=755,size=65536k`), `/dev/pts`
//!    (devpts `newinstance,ptmxmode=0666,mode=0620,gid=5`), `/dev/mqueue`,
//!    `/sys` (sysfs, ro unless privileged), `/sys/fs/cgroup` (type `cgroup`:
//!    the OCI runtime mounts the host's layout, v1 or v2; ro unless
//!    privileged);
//! 2. `/dev/shm` bound from the pod's shm tmpfs (the host's with host IPC),
//!    `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` bound from the pod's
//!    files (read-only when `readOnlyRootFilesystem`, as containerd does);
//! 3. the container's own mounts as `rbind` with propagation `rprivate`,
//!    `rslave` (HostToContainer) or `rshared` (Bidirectional), `ro` when
//!    read-only.
//!
//! Container mounts are ordered parents first (by path depth, stable), and
//! one replaces any default mount at the same destination or below it.
//! Destinations must be absolute and free of `..`; host paths absolute.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};

use super::{SpecError, SpecInputs};
use crate::types::{ContainerConfig, MountPropagation};

/// Returns the cleaned form of an absolute path (`//` and `.` removed), or
/// `None` when it is relative or has a `..` component.
pub(crate) fn clean_absolute(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut out = String::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => return None,
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Checks a container mount destination; returns its cleaned form.
pub fn validate_destination(container: &str, destination: &str) -> Result<String, SpecError> {
    let bad = |reason| SpecError::BadMount {
        container: container.to_string(),
        destination: destination.to_string(),
        reason,
    };
    if destination.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if !destination.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    let clean = clean_absolute(destination).ok_or_else(|| bad("must not contain '..'"))?;
    if clean == "/" {
        return Err(bad("cannot mount over the root"));
    }
    Ok(clean)
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|source| SpecError::Build {
            what: "mounts",
            source,
        })
}

fn propagation_option(p: MountPropagation) -> &'static str {
    match p {
        MountPropagation::Private => "rprivate",
        MountPropagation::HostToContainer => "rslave",
        MountPropagation::Bidirectional => "rshared",
    }
}

/// `linux.rootfsPropagation` needed by the container's mounts (containerd:
/// `rshared` for Bidirectional, `rslave` for HostToContainer).
pub(super) fn rootfs_propagation(c: &ContainerConfig) -> Option<String> {
    let has = |p| c.mounts.iter().any(|m| m.propagation == p);
    if has(MountPropagation::Bidirectional) {
        Some("rshared".to_string())
    } else if has(MountPropagation::HostToContainer) {
        Some("rslave".to_string())
    } else {
        None
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

pub(super) fn build_mounts(inputs: &SpecInputs<'_>) -> Result<Vec<Mount>, SpecError> {
    let c = inputs.container;
    let privileged = c.security.privileged;
    let ro_root = c.security.read_only_root_filesystem;

    let mut user = Vec::with_capacity(c.mounts.len());
    for m in &c.mounts {
        let dest = validate_destination(&c.name, &m.container_path)?;
        if !m.host_path.is_absolute() {
            return Err(SpecError::BadMount {
                container: c.name.clone(),
                destination: m.container_path.clone(),
                reason: "host path must be absolute",
            });
        }
        let rw = if m.read_only { "ro" } else { "rw" };
        user.push(mount(
            &dest,
            "bind",
            &m.host_path,
            &["rbind", propagation_option(m.propagation), rw],
        )?);
    }
    // Parents before children whatever the input order (containerd's
    // `orderedMounts`); the sort is stable.
    user.sort_by_key(|m| m.destination().components().count());
    let overridden = |dest: &str| {
        user.iter()
            .any(|m| is_under(dest, &m.destination().to_string_lossy()))
    };

    let sys_mode = if privileged { "rw" } else { "ro" };
    let host_shm = PathBuf::from("/dev/shm");
    let shm = inputs.files.shm.as_ref().unwrap_or(&host_shm);
    let file_mode = if ro_root { "ro" } else { "rw" };
    let defaults: Vec<(&str, &str, &Path, Vec<&str>)> = vec![
        (
            "/proc",
            "proc",
            Path::new("proc"),
            vec!["nosuid", "noexec", "nodev"],
        ),
        (
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            vec!["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            vec!["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            vec!["nosuid", "noexec", "nodev", sys_mode],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            vec!["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
        (
            "/dev/shm",
            "bind",
            shm,
            vec!["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"],
        ),
        (
            "/etc/hostname",
            "bind",
            &inputs.files.hostname,
            vec!["rbind", "rprivate", file_mode],
        ),
        (
            "/etc/hosts",
            "bind",
            &inputs.files.hosts,
            vec!["rbind", "rprivate", file_mode],
        ),
        (
            "/etc/resolv.conf",
            "bind",
            &inputs.files.resolv_conf,
            vec!["rbind", "rprivate", file_mode],
        ),
    ];
    let mut out = Vec::with_capacity(defaults.len() + user.len());
    for (dest, typ, source, options) in defaults {
        if !overridden(dest) {
            out.push(mount(dest, typ, source, &options)?);
        }
    }
    out.extend(user);
    Ok(out)
}
