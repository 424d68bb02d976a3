//! Pod sandboxes without a pause container.
//!
//! A sandbox is a directory `<run_dir>/pods/<uid>/` plus the namespaces its
//! containers join: network, IPC and UTS namespaces are created on a
//! short-lived thread (`unshare` is per thread for these kinds), the
//! hostname is set inside the new UTS namespace, and each namespace is kept
//! alive by bind-mounting `/proc/thread-self/ns/<kind>` onto a file in the
//! sandbox dir (`ns/net`, `ns/ipc`, `ns/uts`), as `ip netns add` does. The
//! pod's `/dev/shm` is a size-limited tmpfs at `shm/`; `/etc/hosts`,
//! `/etc/hostname` and `/etc/resolv.conf` are files in the sandbox dir that
//! every container bind-mounts.
//!
//! Host namespaces (`hostNetwork`, `hostIPC`) are simply not created.
//! Creation is idempotent and removal tolerates anything already gone, so
//! a crash at any point is repaired by removing (or re-creating) the
//! sandbox. The sandbox's config is recorded in `sandbox.json` (atomically)
//! so an agent restart can find and re-adopt it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};
use rustix::thread::UnshareFlags;
use serde::{Deserialize, Serialize};

use crate::spec::{NamespaceMode, SandboxFiles, SandboxNamespaces};
use crate::types::{PodSandboxConfig, QosClass};

/// Errors creating or removing a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the {kind} namespace for pod {uid}: {source}")]
    Namespace {
        kind: &'static str,
        uid: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pod uid {0:?}")]
    InvalidUid(String),
    #[error("invalid hostname {0:?}")]
    InvalidHostname(String),
    #[error("sandbox record {path} is corrupt: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A pod's sandbox as recorded on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub config: PodSandboxConfig,
    pub qos: QosClass,
    /// The pod cgroup (relative to the cgroup root).
    pub cgroup: String,
    /// Unix seconds.
    pub created: u64,
}

/// Paths of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir {
    dir: PathBuf,
}

/// Checks a pod uid before it becomes a path component.
pub fn validate_uid(uid: &str) -> Result<(), SandboxError> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && !uid.starts_with(['.', '-'])
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidUid(uid.to_string()))
    }
}

fn validate_hostname(h: &str) -> Result<(), SandboxError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidHostname(h.to_string()))
    }
}

impl SandboxDir {
    pub fn new(run_dir: &Path, uid: &str) -> Result<SandboxDir, SandboxError> {
        validate_uid(uid)?;
        Ok(SandboxDir {
            dir: run_dir.join("pods").join(uid),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }
    pub fn ns_path(&self, kind: &str) -> PathBuf {
        self.dir.join("ns").join(kind)
    }
    pub fn shm(&self) -> PathBuf {
        self.dir.join("shm")
    }
    pub fn containers(&self) -> PathBuf {
        self.dir.join("containers")
    }
    pub fn files(&self, host_ipc: bool) -> SandboxFiles {
        SandboxFiles {
            hosts: self.dir.join("hosts"),
            hostname: self.dir.join("hostname"),
            resolv_conf: self.dir.join("resolv.conf"),
            shm: (!host_ipc).then(|| self.shm()),
        }
    }

    /// The namespaces containers of this pod join.
    pub fn namespaces(&self, cfg: &PodSandboxConfig) -> SandboxNamespaces {
        let ns = &cfg.namespaces;
        let join_or_host = |host: bool, kind: &str| {
            if host {
                NamespaceMode::Host
            } else {
                NamespaceMode::Join(self.ns_path(kind))
            }
        };
        SandboxNamespaces {
            network: join_or_host(ns.host_network, "net"),
            ipc: join_or_host(ns.host_ipc, "ipc"),
            // Kubernetes: hostNetwork pods also use the host's UTS namespace.
            uts: join_or_host(ns.host_network, "uts"),
            pid: if ns.host_pid {
                NamespaceMode::Host
            } else if ns.share_process_namespace {
                NamespaceMode::Join(self.ns_path("pid"))
            } else {
                NamespaceMode::New
            },
        }
    }

    /// The network namespace path (None for hostNetwork pods).
    pub fn netns(&self, cfg: &PodSandboxConfig) -> Option<PathBuf> {
        (!cfg.namespaces.host_network).then(|| self.ns_path("net"))
    }

    /// Creates the sandbox dir, namespaces, shm and /etc files. Idempotent.
    pub fn create(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        let cfg = &record.config;
        validate_hostname(&cfg.hostname)?;
        for d in [self.dir.clone(), self.dir.join("ns"), self.containers()] {
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        write_atomic(
            &self.record_path(),
            &serde_json::to_vec_pretty(record).map_err(|e| SandboxError::Io {
                op: "encode",
                path: self.record_path(),
                source: std::io::Error::other(e),
            })?,
        )?;
        let mut kinds = Vec::new();
        if !cfg.namespaces.host_network {
            kinds.push(NsKind::Net);
            kinds.push(NsKind::Uts);
        }
        if !cfg.namespaces.host_ipc {
            kinds.push(NsKind::Ipc);
        }
        let missing: Vec<NsKind> = kinds
            .into_iter()
            .filter(|k| !is_ns_mount(&self.ns_path(k.name())))
            .collect();
        if !missing.is_empty() {
            self.hold_namespaces(&cfg.uid, &missing, &cfg.hostname)?;
        }
        if !cfg.namespaces.host_ipc {
            self.mount_shm(cfg.shm_size_bytes)?;
        }
        let files = self.files(cfg.namespaces.host_ipc);
        let hostname = format!("{}\n", cfg.hostname);
        write_atomic(&files.hostname, hostname.as_bytes())?;
        let hosts = crate::spec::hosts_file(cfg.pod_ip, &cfg.hostname, &cfg.host_aliases);
        write_atomic(&files.hosts, hosts.as_bytes())?;
        let resolv = if cfg.dns.nameservers.is_empty() && cfg.dns.searches.is_empty() {
            // Like the kubelet's "Default" policy: the node's resolver.
            fs::read("/etc/resolv.conf").unwrap_or_default()
        } else {
            crate::spec::resolv_conf(&cfg.dns).into_bytes()
        };
        write_atomic(&files.resolv_conf, &resolv)?;
        Ok(())
    }

    /// For `shareProcessNamespace` pods: makes sure the pod's PID namespace
    /// and its PID 1 holder (see `pidns`) exist. Idempotent.
    pub fn ensure_pid_holder(
        &self,
        uid: &str,
        exe: &Path,
        args: &[std::ffi::OsString],
    ) -> Result<(), SandboxError> {
        let ns_file = self.ns_path("pid");
        let pid_file = self.dir.join("ns").join("pid-holder");
        if let Ok(text) = fs::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
            && crate::pidns::holder_alive(pid, &ns_file)
        {
            return Ok(());
        }
        let ns_err = |source| SandboxError::Namespace {
            kind: "pid",
            uid: uid.to_string(),
            source,
        };
        unmount_if_mounted(&ns_file)?;
        let pid = crate::pidns::spawn_holder(exe, args, &ns_file).map_err(ns_err)?;
        write_atomic(&pid_file, pid.to_string().as_bytes())
    }

    /// Rewrites `/etc/hosts` once the pod IP is known.
    pub fn update_hosts(&self, cfg: &PodSandboxConfig) -> Result<(), SandboxError> {
        let hosts = crate::spec::hosts_file(cfg.pod_ip, &cfg.hostname, &cfg.host_aliases);
        write_atomic(&self.files(false).hosts, hosts.as_bytes())
    }

    fn hold_namespaces(
        &self,
        uid: &str,
        kinds: &[NsKind],
        hostname: &str,
    ) -> Result<(), SandboxError> {
        let targets: Vec<(NsKind, PathBuf)> =
            kinds.iter().map(|k| (*k, self.ns_path(k.name()))).collect();
        for (_, t) in &targets {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(t)
                .map_err(io_err("create", t))?;
        }
        let hostname = hostname.to_string();
        let uid_owned = uid.to_string();
        // A fresh thread: unshare() of net/ipc/uts applies to this thread
        // only, and the thread ends right after, so no other thread of the
        // agent ever runs in the new namespaces.
        let handle = std::thread::spawn(move || -> Result<(), SandboxError> {
            let mut flags = UnshareFlags::empty();
            for (k, _) in &targets {
                flags |= k.flag();
            }
            // SAFETY: the flags are only NEWNET/NEWIPC/NEWUTS, which do not
            // unshare the file descriptor table (the hazard `unshare_unsafe`
            // warns about).
            unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(|e| {
                SandboxError::Namespace {
                    kind: "net/ipc/uts",
                    uid: uid_owned.clone(),
                    source: e.into(),
                }
            })?;
            if targets.iter().any(|(k, _)| *k == NsKind::Net) {
                // Containers of a pod talk over localhost before (and
                // without) any pod network: loopback is the sandbox's.
                loopback_up().map_err(|source| SandboxError::Namespace {
                    kind: "net (loopback up)",
                    uid: uid_owned.clone(),
                    source,
                })?;
            }
            if targets.iter().any(|(k, _)| *k == NsKind::Uts) {
                rustix::system::sethostname(hostname.as_bytes()).map_err(|e| {
                    SandboxError::Namespace {
                        kind: "uts",
                        uid: uid_owned.clone(),
                        source: e.into(),
                    }
                })?;
            }
            for (k, target) in &targets {
                let src = format!("/proc/thread-self/ns/{}", k.name());
                rustix::mount::mount_bind(src.as_str(), target).map_err(|e| {
                    SandboxError::Namespace {
                        kind: k.name(),
                        uid: uid_owned.clone(),
                        source: e.into(),
                    }
                })?;
            }
            Ok(())
        });
        match handle.join() {
            Ok(r) => r,
            Err(_) => Err(SandboxError::Namespace {
                kind: "net/ipc/uts",
                uid: uid.to_string(),
                source: std::io::Error::other("namespace thread panicked"),
            }),
        }
    }

    fn mount_shm(&self, size: u64) -> Result<(), SandboxError> {
        let shm = self.shm();
        fs::create_dir_all(&shm).map_err(io_err("create", &shm))?;
        if is_mount_point(&shm) {
            return Ok(());
        }
        let size = if size == 0 { 64 << 20 } else { size };
        let data = std::ffi::CString::new(format!("mode=1777,size={size}"))
            .map_err(|e| io_err("mount tmpfs on", &shm)(std::io::Error::other(e)))?;
        rustix::mount::mount(
            "shm",
            &shm,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            data.as_c_str(),
        )
        .map_err(|e| io_err("mount tmpfs on", &shm)(e.into()))
    }

    /// Unmounts namespaces and shm and removes the sandbox dir. Everything
    /// already gone is fine.
    pub fn remove(&self) -> Result<(), SandboxError> {
        let pid_file = self.dir.join("ns").join("pid-holder");
        if let Ok(text) = fs::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            let ns_file = self.ns_path("pid");
            crate::pidns::remove_holder(pid, &ns_file)
                .map_err(|e| io_err("remove pid namespace holder", &ns_file)(e))?;
        }
        for kind in ["net", "ipc", "uts", "pid"] {
            let p = self.ns_path(kind);
            unmount_if_mounted(&p)?;
        }
        unmount_if_mounted(&self.shm())?;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.dir)(e)),
        }
    }

    pub fn read_record(&self) -> Result<Option<SandboxRecord>, SandboxError> {
        let p = self.record_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| SandboxError::Record { path: p, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }
}

/// Uids of every sandbox dir under `<run_dir>/pods`.
pub fn list_sandboxes(run_dir: &Path) -> Result<Vec<String>, SandboxError> {
    let dir = run_dir.join("pods");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("read", &dir))?;
        if let Some(name) = e.file_name().to_str()
            && validate_uid(name).is_ok()
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NsKind {
    Net,
    Ipc,
    Uts,
}

impl NsKind {
    fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }
    fn flag(self) -> UnshareFlags {
        match self {
            NsKind::Net => UnshareFlags::NEWNET,
            NsKind::Ipc => UnshareFlags::NEWIPC,
            NsKind::Uts => UnshareFlags::NEWUTS,
        }
    }
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req`
    // into `req.ifr_ifru`; `req` outlives the call and the fd is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the flags member is the one SIOCGIFFLAGS just filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True if `p` is an nsfs bind mount (its file is on the nsfs filesystem).
fn is_ns_mount(p: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    rustix::fs::statfs(p)
        // f_type's integer type differs between architectures.
        .map(|s| {
            #[allow(clippy::useless_conversion)]
            let t = i64::from(s.f_type);
            t == NSFS_MAGIC
        })
        .unwrap_or(false)
}

/// True if `p` is a mount point (differs in device from its parent).
fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (fs::metadata(p), p.parent()) else {
        return false;
    };
    fs::metadata(parent)
        .map(|pm| pm.dev() != m.dev())
        .unwrap_or(false)
}

fn unmount_if_mounted(p: &Path) -> Result<(), SandboxError> {
    // Detach: a container still holding the namespace must not make the
    // removal fail; the kernel frees it with the last user.
    loop {
        match rustix::mount::unmount(p, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => continue, // stacked mounts from a retried create
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_err("unmount", p)(e.into())),
        }
    }
}

/// Writes a file atomically: temp file, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_hostnames_are_checked() {
        assert!(validate_uid("0f1e2d3c-aaaa-bbbb-cccc-1234567890ab").is_ok());
        for bad in ["", "../x", "a/b", ".x", "-x", &"a".repeat(65)] {
            assert!(validate_uid(bad).is_err(), "{bad:?}");
        }
        assert!(validate_hostname("web-0").is_ok());
        assert!(validate_hostname("a.b-c").is_ok());
        for bad in ["", "-a", "a-", "a..b", "a_b", &"a".repeat(65)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listing_ignores_foreign_entries() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_sandboxes(dir.path()).unwrap().is_empty());
        fs::create_dir_all(dir.path().join("pods/abc")).unwrap();
        fs::create_dir_all(dir.path().join("pods/.tmp")).unwrap();
        assert_eq!(list_sandboxes(dir.path()).unwrap(), vec!["abc".to_string()]);
    }
}
