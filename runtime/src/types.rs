//! The runtime's model of a pod and its containers.
//!
//! These are CRI-shaped (like containerd's `PodSandboxConfig` and
//! `ContainerConfig`), not Kubernetes API objects: the kubelet part of the
//! agent translates a Pod into them, so this crate never depends on the API
//! types. They do no IO.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Kubernetes' QoS class of a pod, computed from its containers' requests
/// and limits (see `cgroups::qos_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The name Kubernetes reports in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Requests and limits of one container, already parsed from Kubernetes
/// quantities. `None` means "not set", which differs from zero for QoS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResources {
    pub cpu_request_millis: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub memory_request_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

/// How a pod's namespaces are provided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceOptions {
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// All containers of the pod share one PID namespace.
    pub share_process_namespace: bool,
}

/// DNS settings written to the pod's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// One line of the pod's `/etc/hosts` beyond the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAlias {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

/// Everything the runtime needs to create a pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxConfig {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Defaults to the pod name; must be a valid hostname.
    pub hostname: String,
    pub namespaces: NamespaceOptions,
    /// Requests/limits of the pod's (regular and sidecar) containers; the
    /// QoS class and the pod cgroup's limits are derived from them and
    /// from `init_containers`.
    pub containers: Vec<ContainerResources>,
    /// Requests/limits of the init containers, which run one at a time: the
    /// pod's effective request or limit is the larger of the containers'
    /// sum and the largest init container's (Kubernetes' rule).
    #[serde(default)]
    pub init_containers: Vec<ContainerResources>,
    /// Maximum number of processes in the pod cgroup (`None`: unlimited).
    pub pids_limit: Option<i64>,
    /// Size of the pod's `/dev/shm` (bytes).
    pub shm_size_bytes: u64,
    pub dns: DnsConfig,
    pub host_aliases: Vec<HostAlias>,
    /// Namespaced sysctls (`net.*`, `kernel.shm*`, …) applied to every
    /// container of the pod.
    pub sysctls: BTreeMap<String, String>,
    /// The pod's IP once networking is wired, for `/etc/hosts`.
    pub pod_ip: Option<IpAddr>,
}

/// A seccomp profile choice, as in `securityContext.seccompProfile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// The runtime's default profile (the default for herd, as for
    /// `--seccomp-default` kubelets).
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A JSON profile in OCI `linux.seccomp` form, read from this path.
    Localhost(PathBuf),
}

/// A container's `securityContext`, flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: bool,
    pub supplemental_groups: Vec<u32>,
    pub privileged: bool,
    pub read_only_root_filesystem: bool,
    /// `None` means the Kubernetes default (true unless privileged or
    /// CAP_SYS_ADMIN is added).
    pub allow_privilege_escalation: Option<bool>,
    /// Capability names with or without the `CAP_` prefix, any case.
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub seccomp: SeccompProfile,
}

/// Bind-mount propagation, as in `volumeMounts[].mountPropagation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPropagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

/// A bind mount into the container (volumes are prepared by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
    pub propagation: MountPropagation,
}

pub use herd_monitor::logs::LogLimits;

/// Everything the runtime needs to create one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub name: String,
    /// Restart count; the log file is `<attempt>.log`.
    pub attempt: u32,
    /// Image reference as the image store resolves it.
    pub image: String,
    /// Kubernetes `command` (replaces the image's Entrypoint when set).
    pub command: Vec<String>,
    /// Kubernetes `args` (replaces the image's Cmd when set).
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    /// Already-resolved environment, in order; merged over the image's.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub resources: ContainerResources,
    pub security: SecurityContext,
    pub tty: bool,
    pub stdin: bool,
    pub log: LogLimits,
}
