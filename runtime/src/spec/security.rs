//! Capabilities, masked/read-only paths and device rules.
//!
//! - Default capability set: Docker's and containerd's 14. `add`/`drop`
//!   follow containerd: `add: [ALL]` starts from every capability, `drop:
//!   [ALL]` from none, then drops apply, then adds (an add wins over a drop).
//!   Names are accepted with or without `CAP_`, in any case; an unknown name
//!   is an error. Privileged containers (and `add: [ALL]`) get every
//!   capability in this process's bounding set, as containerd does: asking
//!   for more makes runc fail with EPERM.
//! - Device cgroup: deny everything, then runc's default allow list (the
//!   null/zero/full/random/urandom/tty/console/ptmx nodes, `/dev/pts/*`,
//!   `mknod` of any node). `/dev/net/tun` is not allowed by default.
//!   Privileged containers: allow all (`a *:* rwm`) and every host device
//!   node under `/dev` is created in the container, like containerd's
//!   `WithDevices(HostDevices)`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceType,
};

use super::SpecError;
use crate::types::ContainerConfig;

/// Docker's and containerd's default capabilities.
pub fn default_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
}

/// Every capability oci-spec knows (Linux 0 to 40).
pub fn all_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ]
}

/// The kernel's number of a capability (`include/uapi/linux/capability.h`).
pub fn capability_number(cap: Capability) -> u32 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// Every capability in the calling process's bounding set, i.e. what
/// "all capabilities" can mean for a container started from here
/// (containerd's `WithAllCurrentCapabilities`). A capability the kernel
/// cannot be asked about is kept.
pub fn current_capabilities() -> Vec<Capability> {
    all_capabilities()
        .into_iter()
        .filter(|c| {
            let bit =
                rustix::thread::CapabilitySet::from_bits_retain(1u64 << capability_number(*c));
            rustix::thread::capability_is_in_bounding_set(bit).unwrap_or(true)
        })
        .collect()
}

/// Parses a capability name (`NET_ADMIN`, `cap_net_admin`, `CAP_NET_ADMIN`).
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare.is_empty() || bare.starts_with("CAP_") {
        return None;
    }
    serde_json::from_value(serde_json::Value::String(format!("CAP_{bare}"))).ok()
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The container's capability set (bounding = effective = permitted).
pub(super) fn capability_set(c: &ContainerConfig) -> Result<Capabilities, SpecError> {
    let sec = &c.security;
    let parse = |name: &String| {
        parse_capability(name).ok_or_else(|| SpecError::UnknownCapability {
            container: c.name.clone(),
            name: name.clone(),
        })
    };
    // Validate every name first so a bad one is reported even if unused.
    let adds: Vec<Capability> = sec
        .capabilities_add
        .iter()
        .filter(|n| !is_all(n))
        .map(parse)
        .collect::<Result<_, _>>()?;
    let drops: Vec<Capability> = sec
        .capabilities_drop
        .iter()
        .filter(|n| !is_all(n))
        .map(parse)
        .collect::<Result<_, _>>()?;
    if sec.privileged {
        return Ok(current_capabilities().into_iter().collect());
    }
    let mut set: Capabilities = if sec.capabilities_add.iter().any(|n| is_all(n)) {
        current_capabilities().into_iter().collect()
    } else {
        default_capabilities().into_iter().collect()
    };
    if sec.capabilities_drop.iter().any(|n| is_all(n)) {
        set.clear();
    }
    for d in &drops {
        set.remove(d);
    }
    set.extend(adds);
    Ok(set)
}

/// containerd's masked paths.
pub(super) fn masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// containerd's read-only paths.
pub(super) fn readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// Deny all, then runc's default device allow list.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false);
    deny_all.set_access(Some("rwm".to_string()));
    let mut rules = vec![deny_all];
    rules.push(rule(true, C, None, None, "m"));
    rules.push(rule(true, B, None, None, "m"));
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(rule(true, C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(true, C, Some(136), None, "rwm"));
    rules
}

/// Allow every device (privileged).
pub(super) fn allow_all_devices() -> LinuxDeviceCgroup {
    rule(true, LinuxDeviceType::A, None, None, "rwm")
}

const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Lists the character and block device nodes under `dev_root` (the host's
/// `/dev`), as containerd's `HostDevices`: the `pts`, `shm`, `fd`, `mqueue`
/// directories and `console` are skipped, symlinks are not followed, and
/// nodes vanishing during the walk are ignored. Paths in the result are
/// `/dev/...` whatever `dev_root` is.
pub fn host_devices(dev_root: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut out = Vec::new();
    walk(dev_root, dev_root, &mut out)?;
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<LinuxDevice>) -> Result<(), SpecError> {
    let err = |source| SpecError::HostDevices {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(err)?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let st = match rustix::fs::lstat(&path) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(err(e.into())),
        };
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let typ = match ft {
            rustix::fs::FileType::Directory => {
                if !SKIP_DIRS.contains(&name.as_ref()) {
                    walk(root, &path, out)?;
                }
                continue;
            }
            rustix::fs::FileType::CharacterDevice => LinuxDeviceType::C,
            rustix::fs::FileType::BlockDevice => LinuxDeviceType::B,
            _ => continue,
        };
        if dir == root && name == "console" {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let dev = st.st_rdev;
        let built = LinuxDeviceBuilder::default()
            .path(PathBuf::from("/dev").join(rel))
            .typ(typ)
            .major(i64::from(rustix::fs::major(dev)))
            .minor(i64::from(rustix::fs::minor(dev)))
            .file_mode(st.st_mode & 0o7777)
            .uid(st.st_uid)
            .gid(st.st_gid)
            .build()
            .map_err(|source| SpecError::Build {
                what: "linux.devices",
                source,
            })?;
        out.push(built);
    }
    Ok(())
}
