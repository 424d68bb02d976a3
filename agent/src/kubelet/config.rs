//! The kubelet's configuration: what `herd agent` flags become.

use std::path::PathBuf;
use std::time::Duration;

use super::backoff::BackoffConfig;
use super::convert::SandboxOptions;

/// Everything the pod workers need to know about the node.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// Volumes of pods (`<root>/pods`).
    pub pods_dir: PathBuf,
    /// Static pod manifests.
    pub manifests_dir: Option<PathBuf>,
    pub static_scan_interval: Duration,
    pub backoff: BackoffConfig,
    /// How often a pod worker re-reads its containers' states when nothing
    /// else woke it (the kubelet's PLEG relist period).
    pub relist_interval: Duration,
    pub sandbox: SandboxOptions,
    /// Node capacity, for downward API defaults and eviction.
    pub node_memory_bytes: u64,
    pub node_cpu_millis: u64,
    /// Eviction: threshold string (`100Mi`, `5%`), check period, where
    /// `meminfo` is read.
    pub eviction_memory_available: String,
    pub eviction_interval: Duration,
    pub proc_root: PathBuf,
}
