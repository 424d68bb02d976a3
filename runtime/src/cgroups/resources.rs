//! Requests and limits mapped to cgroup values the way the kubelet maps
//! them (pkg/kubelet/cm/helpers_linux.go and cgroup_v2_manager_linux.go).

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::qos::{effective_requests, qos_class};
use crate::types::{ContainerResources, PodSandboxConfig, QosClass};

/// Smallest cpu.shares value (kubelet `MinShares`).
pub const MIN_SHARES: u64 = 2;
/// Largest cpu.shares value (kubelet `MaxShares`).
pub const MAX_SHARES: u64 = 262_144;
/// cpu.shares of one full CPU.
pub const SHARES_PER_CPU: u64 = 1024;
/// The CFS period herd uses, in µs (kubelet's default 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota, in µs (kubelet `MinQuotaPeriod`).
pub const MIN_QUOTA_US: i64 = 1000;

/// kubelet `MilliCPUToShares`; the request defaults to the limit, and
/// nothing at all (or zero) gives the minimum, 2.
pub fn cpu_shares(request_millis: Option<u64>, limit_millis: Option<u64>) -> u64 {
    let milli = request_millis.or(limit_millis).unwrap_or(0);
    if milli == 0 {
        return MIN_SHARES;
    }
    let shares = u128::from(milli) * u128::from(SHARES_PER_CPU) / 1000;
    let shares = u64::try_from(shares).unwrap_or(MAX_SHARES);
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet `CpuSharesToCpuWeight`: `1 + ((shares - 2) * 9999) / 262142`
/// (1024 shares → weight 39; 2 → 1; 262144 → 10000). Out-of-range shares
/// are clamped first. runc 1.1 uses the same linear map for containers.
pub fn cpu_weight_from_shares(shares: u64) -> u64 {
    let s = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((s - MIN_SHARES) * 9999) / (MAX_SHARES - MIN_SHARES)
}

/// kubelet `MilliCPUToQuota`: 0 for no limit (0 millis), otherwise
/// `limit * period / 1000` raised to 1000 µs.
pub fn cpu_quota(limit_millis: u64, period_us: u64) -> i64 {
    if limit_millis == 0 {
        return 0;
    }
    let quota = u128::from(limit_millis) * u128::from(period_us) / 1000;
    i64::try_from(quota).unwrap_or(i64::MAX).max(MIN_QUOTA_US)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `linux.resources` of a container's OCI spec: cpu shares (request,
/// defaulting to the limit), CFS quota and a 100 ms period when a cpu limit
/// is set, and the memory limit with `swap` equal to it (v1 semantics:
/// memory+swap, so no swap; runc turns it into `memory.swap.max = 0` on v2
/// and skips it when swap accounting is absent there).
///
/// On a v1 host without swap accounting (`memory.memsw.*` absent) runc
/// fails on `swap`: use [`CgroupManager::container_linux_resources`] there,
/// which leaves it out.
///
/// [`CgroupManager::container_linux_resources`]: super::CgroupManager::container_linux_resources
pub fn container_linux_resources(r: &ContainerResources) -> LinuxResources {
    linux_resources(r, true)
}

pub(crate) fn linux_resources(r: &ContainerResources, swap: bool) -> LinuxResources {
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(cpu_shares(r.cpu_request_millis, r.cpu_limit_millis)));
    if let Some(limit) = r.cpu_limit_millis.filter(|&l| l > 0) {
        cpu.set_quota(Some(cpu_quota(limit, CPU_PERIOD_US)));
        cpu.set_period(Some(CPU_PERIOD_US));
    }
    let mut resources = LinuxResources::default();
    resources.set_cpu(Some(cpu));
    if let Some(limit) = r.memory_limit_bytes.filter(|&l| l > 0) {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(to_i64(limit)));
        if swap {
            memory.set_swap(Some(to_i64(limit)));
        }
        resources.set_memory(Some(memory));
    }
    resources
}

/// Limits of a pod cgroup (kubelet `ResourceConfigForPod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCgroupResources {
    /// v1 `cpu.shares`; on v2 written as [`cpu_weight_from_shares`].
    pub cpu_shares: u64,
    /// CFS quota in µs; `None` is unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in µs.
    pub cpu_period: u64,
    /// Bytes; `None` is unlimited.
    pub memory_limit: Option<i64>,
    /// `None` is unlimited.
    pub pids_limit: Option<i64>,
}

impl PodCgroupResources {
    /// No limit beyond the minimum shares (a BestEffort pod).
    pub fn unlimited() -> Self {
        PodCgroupResources {
            cpu_shares: MIN_SHARES,
            cpu_quota: None,
            cpu_period: CPU_PERIOD_US,
            memory_limit: None,
            pids_limit: None,
        }
    }
}

/// The pod cgroup's limits: shares from the summed cpu requests; a CFS quota
/// (summed cpu limits) only when every container has a cpu limit; a memory
/// limit (summed) only when every container has a memory limit; BestEffort
/// pods get the minimum shares and nothing else; the pids limit comes from
/// `cfg.pids_limit` whatever the class.
///
/// Init containers are not told apart in [`PodSandboxConfig`], so they are
/// summed like the others (the kubelet takes the larger of the regular sum
/// and the largest init container).
pub fn pod_cgroup_resources(cfg: &PodSandboxConfig) -> PodCgroupResources {
    let mut out = PodCgroupResources::unlimited();
    out.pids_limit = cfg.pids_limit.filter(|&p| p > 0);
    let all: Vec<ContainerResources> = cfg
        .containers
        .iter()
        .chain(&cfg.init_containers)
        .copied()
        .collect();
    if qos_class(&all) == QosClass::BestEffort {
        return out;
    }
    // Containers run together (their values add up); init containers run
    // one at a time before them (the largest counts). The pod gets the
    // larger of the two, as Kubernetes computes a pod's effective values.
    let sum = |f: &dyn Fn(&ContainerResources) -> Option<u64>| -> Option<u64> {
        cfg.containers
            .iter()
            .try_fold(0u64, |acc, c| f(c).map(|v| acc.saturating_add(v)))
    };
    let max_init = |f: &dyn Fn(&ContainerResources) -> Option<u64>| -> Option<u64> {
        cfg.init_containers
            .iter()
            .try_fold(0u64, |acc, c| f(c).map(|v| acc.max(v)))
    };
    let effective = |f: &dyn Fn(&ContainerResources) -> Option<u64>| -> Option<u64> {
        Some(sum(f)?.max(max_init(f)?))
    };
    let cpu_request = effective(&|c| Some(effective_requests(c).0.unwrap_or(0))).unwrap_or(0);
    let cpu_limit = effective(&|c| c.cpu_limit_millis.filter(|&l| l > 0));
    let memory_limit = effective(&|c| c.memory_limit_bytes.filter(|&l| l > 0));
    out.cpu_shares = cpu_shares(Some(cpu_request), None);
    out.cpu_quota = cpu_limit
        .filter(|&l| l > 0)
        .map(|l| cpu_quota(l, CPU_PERIOD_US));
    out.memory_limit = memory_limit.filter(|&l| l > 0).map(to_i64);
    out
}
