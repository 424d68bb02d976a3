//! Cgroup managers, QoS tiers and the mapping of requests and limits.
//!
//! # Tree
//! Like the kubelet's (cgroupfs driver): `<base>/` (normally `herd`) holds
//! Guaranteed pods directly, `<base>/burstable/` (share = summed requests
//! of Burstable pods, [`CgroupManager::update_burstable_tier`]) and
//! `<base>/besteffort/` (cpu.shares 2 / cpu.weight 1) the others, each pod
//! in `pod<uid>/`.
//! Container cgroups below the pod are created by the OCI runtime from
//! `linux.cgroupsPath` ([`CgroupManager::container_cgroups_path`]) and
//! `linux.resources` ([`container_linux_resources`]); herd creates the tree
//! and the pod cgroups, puts pod-level limits on them
//! ([`pod_cgroup_resources`]), reads stats, and tears pods down (killing
//! what is left, then removing every directory, in every hierarchy).
//!
//! # Guarantees
//! - Every root is a parameter; nothing reads `/proc/self/mountinfo`, so
//!   managers work on temp-dir fixtures and in nested setups.
//! - `ensure_hierarchy`, `create_pod` and `remove_pod` are idempotent;
//!   `remove_pod` of a missing pod is `Ok`, and waits (bounded, 10 s by
//!   default) for `EBUSY` to clear.
//! - Names (pod uid, container id, base) are checked: one path component of
//!   `[A-Za-z0-9_.-]`; a bad one is a [`CgroupError::InvalidName`].
//! - [`CgroupManager::list_pods`] finds pod cgroups left by a crash, for the
//!   start-up reconcile.
//!
//! # Why libcgroups, and where not
//! youki's libcgroups 0.7 (features v1 + v2, no systemd/D-Bus) uses the same
//! oci-spec 0.10 as herd, splits v1/v2/systemd into features, its v2
//! `Manager` takes the root as a parameter, and it parses stats of both
//! versions. In practice herd uses little of it: its pids stats parser.
//! The rest does not fit and the file operations (simple) are written
//! directly, in [`v1`], [`v2`] and [`stats`]: its v1 manager discovers
//! mounts from `/proc/self/mountinfo` and cannot take a root, and its v1
//! controllers are private; its v2 `Manager::apply` maps cpu shares to
//! weight with runc ≥ 1.3.2's quadratic formula where the kubelet (and runc
//! 1.1, the runtime here) use the linear one, resets memory through
//! `memory.swap.max` (absent without swap accounting) and writes without
//! truncating (fine on cgroupfs, wrong on temp-dir fixtures); its v2
//! `stats()` fails unless every controller (io, hugetlb, swap…) is enabled
//! in the cgroup.
//!
//! # Layouts
//! [`detect_layout`] tells unified, hybrid and legacy apart by filesystem
//! magic. Hybrid and legacy use [`V1Manager`] (in hybrid mode the
//! controller-less `unified/` is one more hierarchy to create pod
//! directories in, because runc creates container cgroups there too).

mod error;
mod files;
pub mod layout;
pub mod qos;
pub mod resources;
pub mod stats;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::CgroupError;
pub use layout::{CgroupLayout, detect_layout};
pub use qos::{oom_score_adj, qos_class};
pub use resources::{
    PodCgroupResources, container_linux_resources, cpu_quota, cpu_shares, cpu_weight_from_shares,
    pod_cgroup_resources,
};
pub use stats::{CgroupStats, parse_oom_kill_count};
pub use v1::V1Manager;
pub use v2::V2Manager;

use crate::types::{ContainerResources, PodSandboxConfig, QosClass};

/// The host's cgroup manager: an enum, so callers need no trait objects.
#[derive(Debug, Clone)]
pub enum CgroupManager {
    V1(V1Manager),
    V2(V2Manager),
}

impl CgroupManager {
    /// A manager of `root/<base>` for `layout` (hybrid uses v1).
    pub fn new(root: &Path, layout: CgroupLayout, base: &str) -> Result<Self, CgroupError> {
        Ok(match layout {
            CgroupLayout::Unified => CgroupManager::V2(V2Manager::new(root, base)?),
            CgroupLayout::Hybrid | CgroupLayout::Legacy => {
                CgroupManager::V1(V1Manager::new(root, base, layout)?)
            }
        })
    }

    /// [`detect_layout`] then [`CgroupManager::new`].
    pub fn detect(root: &Path, base: &str) -> Result<Self, CgroupError> {
        Self::new(root, detect_layout(root)?, base)
    }

    pub fn layout(&self) -> CgroupLayout {
        match self {
            CgroupManager::V1(m) => m.layout(),
            CgroupManager::V2(_) => CgroupLayout::Unified,
        }
    }

    /// How long `remove_pod`/`remove_tree` wait for processes and `EBUSY`.
    pub fn set_remove_timeout(&mut self, timeout: Duration) {
        match self {
            CgroupManager::V1(m) => m.set_remove_timeout(timeout),
            CgroupManager::V2(m) => m.set_remove_timeout(timeout),
        }
    }

    fn base(&self) -> &str {
        match self {
            CgroupManager::V1(m) => m.base(),
            CgroupManager::V2(m) => m.base(),
        }
    }

    /// Creates `<base>/`, `burstable/`, `besteffort/` (minimum cpu share);
    /// on v2 enables cpu, memory, pids (and io, cpuset when offered) in
    /// `cgroup.subtree_control` of the root and of each level.
    pub fn ensure_hierarchy(&self) -> Result<(), CgroupError> {
        match self {
            CgroupManager::V1(m) => m.ensure_hierarchy(),
            CgroupManager::V2(m) => m.ensure_hierarchy(),
        }
    }

    /// "/<base>/pod<uid>" (Guaranteed), "/<base>/burstable/pod<uid>",
    /// "/<base>/besteffort/pod<uid>". The uid is checked by `create_pod`.
    pub fn pod_cgroup(&self, uid: &str, qos: QosClass) -> String {
        files::pod_path(self.base(), uid, qos)
    }

    /// What goes in the container's `linux.cgroupsPath`.
    pub fn container_cgroups_path(&self, uid: &str, qos: QosClass, container_id: &str) -> String {
        format!("{}/{container_id}", self.pod_cgroup(uid, qos))
    }

    /// Creates the pod cgroup (and the tree above it when missing) and
    /// writes its limits; running it again rewrites them.
    pub fn create_pod(
        &self,
        uid: &str,
        qos: QosClass,
        r: &PodCgroupResources,
    ) -> Result<(), CgroupError> {
        match self {
            CgroupManager::V1(m) => m.create_pod(uid, qos, r),
            CgroupManager::V2(m) => m.create_pod(uid, qos, r),
        }
    }

    /// Kills whatever still runs in the pod cgroup (containers included) and
    /// removes its directories bottom-up. A missing pod is `Ok`.
    pub fn remove_pod(&self, uid: &str, qos: QosClass) -> Result<(), CgroupError> {
        match self {
            CgroupManager::V1(m) => m.remove_pod(uid, qos),
            CgroupManager::V2(m) => m.remove_pod(uid, qos),
        }
    }

    /// Pod cgroups present under the tree, sorted by class then uid.
    pub fn list_pods(&self) -> Result<Vec<(String, QosClass)>, CgroupError> {
        match self {
            CgroupManager::V1(m) => m.list_pods(),
            CgroupManager::V2(m) => m.list_pods(),
        }
    }

    /// Usage of a pod or container cgroup ("/herd/burstable/pod…/c1").
    pub fn stats(&self, cgroup: &str) -> Result<CgroupStats, CgroupError> {
        match self {
            CgroupManager::V1(m) => m.stats(cgroup),
            CgroupManager::V2(m) => m.stats(cgroup),
        }
    }

    /// OOM kills in `cgroup` and below: v2 `memory.events` (hierarchical),
    /// v1 the sum of `memory.oom_control` over the subtree.
    pub fn oom_kill_count(&self, cgroup: &str) -> Result<u64, CgroupError> {
        match self {
            CgroupManager::V1(m) => m.oom_kill_count(cgroup),
            CgroupManager::V2(m) => m.oom_kill_count(cgroup),
        }
    }

    /// The file whose counter says how many OOM kills happened in `cgroup`
    /// (v2: memory.events "oom_kill", v1: memory.oom_control "oom_kill");
    /// the per-pod monitor reads it without linking the manager. On v1 the
    /// counter is the cgroup's own (the victim's cgroup), so point it at a
    /// container's cgroup there. `cgroup` is not checked here.
    pub fn oom_counter_file(&self, cgroup: &str) -> PathBuf {
        match self {
            CgroupManager::V1(m) => m.oom_counter_file(cgroup),
            CgroupManager::V2(m) => m.oom_counter_file(cgroup),
        }
    }

    /// Whether the host accounts swap (v1 `memory.memsw.*`, v2
    /// `memory.swap.max`).
    pub fn swap_accounting(&self) -> bool {
        match self {
            CgroupManager::V1(m) => m.swap_accounting(),
            CgroupManager::V2(m) => m.swap_accounting(),
        }
    }

    /// [`container_linux_resources`] for this host: the swap limit (which
    /// forbids swap) only where the host accounts swap, since runc on v1
    /// fails writing `memory.memsw.limit_in_bytes` when it is absent.
    pub fn container_linux_resources(
        &self,
        r: &ContainerResources,
    ) -> oci_spec::runtime::LinuxResources {
        resources::linux_resources(r, self.swap_accounting())
    }

    /// Sets the burstable tier's cpu share as the kubelet's QoS manager
    /// does: the summed cpu requests of the node's Burstable pods (minimum
    /// 2), so Burstable pods together weigh what they asked for against
    /// Guaranteed pods. Call it when pods come and go; returns the shares
    /// written.
    pub fn update_burstable_tier(&self, pods: &[PodSandboxConfig]) -> Result<u64, CgroupError> {
        let millis = pods
            .iter()
            .filter(|p| qos_class(&p.containers) == QosClass::Burstable)
            .flat_map(|p| p.containers.iter())
            .map(|c| c.cpu_request_millis.or(c.cpu_limit_millis).unwrap_or(0))
            .fold(0u64, u64::saturating_add);
        let shares = cpu_shares(Some(millis), None);
        match self {
            CgroupManager::V1(m) => m.set_burstable_cpu_shares(shares)?,
            CgroupManager::V2(m) => m.set_burstable_cpu_shares(shares)?,
        }
        Ok(shares)
    }

    /// Removes `<base>/` and its tiers in every hierarchy; refuses with
    /// [`CgroupError::NotEmpty`] while pod cgroups remain.
    pub fn remove_tree(&self) -> Result<(), CgroupError> {
        match self {
            CgroupManager::V1(m) => m.remove_tree(),
            CgroupManager::V2(m) => m.remove_tree(),
        }
    }
}
