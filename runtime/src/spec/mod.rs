//! OCI bundle generation: turns a pod's [`PodSandboxConfig`] and a
//! container's [`ContainerConfig`] (plus the image's config and the mounted
//! rootfs) into an OCI runtime [`Spec`] the way containerd's CRI plugin does.
//!
//! Guarantees:
//! - Hardened by default: Docker's 14 default capabilities, Docker's default
//!   seccomp profile (RuntimeDefault), `noNewPrivileges`, masked and
//!   read-only `/proc` paths, a deny-all device cgroup with runc's defaults.
//!   `privileged` lifts all of these as containerd does.
//! - The rootfs is untrusted: `/etc/passwd` and `/etc/group` are opened with
//!   `openat2(RESOLVE_IN_ROOT)`, so symlinks cannot lead outside it.
//! - Every bad input (unknown capability or user, relative mount
//!   destination, `..` in a path, missing command, `runAsNonRoot` with uid 0,
//!   `net.*` sysctls with host networking, non-namespaced sysctls,
//!   unreadable seccomp profile) is a typed [`SpecError`] naming the
//!   container or file, never a panic.
//! - Resource limits and `oom_score_adj` are inputs (computed by `cgroups`);
//!   this module only adds device rules to them.
//! - No rlimits are set (containerd CRI drops its default): containers
//!   inherit the OCI runtime's limits.
//!
//! Files: `process` (args, env, cwd, caps, noNewPrivileges), `user`
//! (passwd/group on the rootfs), `mounts`, `security` (capabilities, masked
//! paths, devices), `seccomp`, `namespaces` (and sysctls), `etc_files`
//! (hosts, resolv.conf contents), `bundle` (config.json).
//!
//! Limits: no AppArmor/SELinux labels, no user namespaces, no hooks. The
//! host devices given to privileged containers are read from `/dev`
//! ([`host_devices`] takes the root for tests).

mod bundle;
mod etc_files;
mod mounts;
mod namespaces;
mod process;
mod seccomp;
mod security;
mod user;

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxResources, RootBuilder, Spec};

use crate::types::{ContainerConfig, PodSandboxConfig};

pub use bundle::write_bundle;
pub use etc_files::{hosts_file, resolv_conf};
pub use mounts::validate_destination;
pub use process::{DEFAULT_PATH, exec_process, merge_env, resolve_args};
pub use seccomp::{runtime_default_seccomp, seccomp_for_capabilities};
pub use security::{
    all_capabilities, capability_number, current_capabilities, default_capabilities,
    default_device_rules, host_devices, parse_capability,
};
pub use user::{ResolvedUser, resolve_user};

/// How one namespace of a container is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMode {
    /// A fresh namespace for this container.
    New,
    /// Join the namespace held at this path (the sandbox's bind mount).
    Join(PathBuf),
    /// Share the host's namespace (the namespace is omitted from the spec).
    Host,
}

/// The pod-level namespaces a container uses. The mount namespace is
/// always new; the cgroup namespace is new on cgroup v2 hosts and omitted
/// on v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub network: NamespaceMode,
    pub ipc: NamespaceMode,
    pub uts: NamespaceMode,
    pub pid: NamespaceMode,
}

/// Per-pod files bind-mounted into every container of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
    /// The pod's shm tmpfs, bind-mounted at `/dev/shm`; `None` (host IPC)
    /// binds the host's `/dev/shm`.
    pub shm: Option<PathBuf>,
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    pub sandbox: &'a PodSandboxConfig,
    pub container: &'a ContainerConfig,
    pub image_config: &'a ImageConfiguration,
    /// The mounted overlay (absolute); its content is untrusted.
    pub rootfs: &'a Path,
    pub namespaces: &'a SandboxNamespaces,
    pub files: &'a SandboxFiles,
    pub cgroups_path: &'a str,
    pub resources: LinuxResources,
    pub oom_score_adj: i32,
    /// Adds a cgroup namespace (the v2 norm); v1 hosts get none.
    pub cgroup_v2: bool,
}

/// Errors of bundle generation; each names the container or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "container {container}: no command: neither command/args nor the image's Entrypoint/Cmd give one"
    )]
    NoCommand { container: String },
    #[error("container {container}: runAsNonRoot is set but the container would run as uid 0")]
    RunsAsRoot { container: String },
    #[error("container {container}: invalid user {user:?} in the image config")]
    BadUser { container: String, user: String },
    #[error("container {container}: user {user:?} not found in the rootfs's /etc/passwd")]
    UnknownUser { container: String, user: String },
    #[error("container {container}: group {group:?} not found in the rootfs's /etc/group")]
    UnknownGroup { container: String, group: String },
    #[error("reading {path} in rootfs {rootfs}")]
    RootfsFile {
        rootfs: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container}: unknown capability {name:?}")]
    UnknownCapability { container: String, name: String },
    #[error("container {container}: mount destination {destination:?}: {reason}")]
    BadMount {
        container: String,
        destination: String,
        reason: &'static str,
    },
    #[error("container {container}: working dir {dir:?} must be an absolute path without '..'")]
    BadWorkingDir { container: String, dir: String },
    #[error("rootfs {path} must be an absolute path")]
    RelativeRootfs { path: PathBuf },
    #[error("reading seccomp profile {path}")]
    SeccompRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing seccomp profile {path}")]
    SeccompParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("sysctl {name}: {reason}")]
    Sysctl { name: String, reason: &'static str },
    #[error("listing host devices under {path}")]
    HostDevices {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the {what} section of the spec")]
    Build {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("writing bundle file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serializing the spec for {path}")]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the host's device nodes are found for privileged containers.
const HOST_DEV: &str = "/dev";

/// Builds the OCI spec of one container of a pod (see the module docs for
/// what is guaranteed).
pub fn build_spec(inputs: &SpecInputs<'_>) -> Result<Spec, SpecError> {
    if !inputs.rootfs.is_absolute() {
        return Err(SpecError::RelativeRootfs {
            path: inputs.rootfs.to_path_buf(),
        });
    }
    let c = inputs.container;
    let sec = &c.security;

    let caps = security::capability_set(c)?;
    let process = process::build_process(inputs, &caps)?;

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_annotations(None);
    let root = RootBuilder::default()
        .path(inputs.rootfs)
        .readonly(sec.read_only_root_filesystem)
        .build()
        .map_err(|source| SpecError::Build {
            what: "root",
            source,
        })?;
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    spec.set_hostname(match inputs.namespaces.uts {
        NamespaceMode::Host => None,
        _ => Some(inputs.sandbox.hostname.clone()),
    });
    spec.set_mounts(Some(mounts::build_mounts(inputs)?));

    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_namespaces(Some(namespaces::build_namespaces(
        inputs.namespaces,
        inputs.cgroup_v2,
    )));
    linux.set_sysctl(namespaces::build_sysctls(
        inputs.sandbox,
        inputs.namespaces,
    )?);
    linux.set_cgroups_path(Some(PathBuf::from(inputs.cgroups_path)));
    linux.set_rootfs_propagation(mounts::rootfs_propagation(c));

    let mut resources = inputs.resources.clone();
    if sec.privileged {
        resources.set_devices(Some(vec![security::allow_all_devices()]));
        linux.set_devices(Some(host_devices(Path::new(HOST_DEV))?));
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        linux.set_seccomp(None);
    } else {
        resources.set_devices(Some(default_device_rules()));
        linux.set_devices(None);
        linux.set_masked_paths(Some(security::masked_paths()));
        linux.set_readonly_paths(Some(security::readonly_paths()));
        linux.set_seccomp(seccomp::select_profile(&sec.seccomp, &caps)?);
    }
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(spec)
}
