//! The cgroup v2 (unified) manager.
//!
//! Pod limits are written directly: `cpu.weight` with the kubelet's linear
//! map ([`cpu_weight_from_shares`]; libcgroups' v2 `apply` uses runc ≥
//! 1.3.2's quadratic one), `cpu.max`, `memory.max`, `pids.max`, each reset
//! to `max` when unlimited (libcgroups' reset of memory also writes
//! `memory.swap.max`, absent without swap accounting, and its writes do not
//! truncate, which fixtures cannot take).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CgroupError;
use super::files::{self, BEST_EFFORT, BURSTABLE, QosClassKey};
use super::resources::{PodCgroupResources, cpu_weight_from_shares};
use super::stats::{self, CgroupStats};
use crate::types::QosClass;

const CONTROLLERS: &str = "cgroup.controllers";
const SUBTREE_CONTROL: &str = "cgroup.subtree_control";
/// Controllers herd enables down its tree, in this order when present.
const WANTED: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];
/// Controllers without which the manager refuses to work.
const REQUIRED: [&str; 2] = ["cpu", "memory"];

/// Manager of `root/<base>` on a cgroup2 mount at `root`.
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    base: String,
    /// Controllers of `WANTED` that `root` offers.
    controllers: Vec<&'static str>,
    remove_timeout: Duration,
}

impl V2Manager {
    /// Checks that `root` offers the cpu and memory controllers.
    pub fn new(root: &Path, base: &str) -> Result<Self, CgroupError> {
        files::check_name("cgroup base", base)?;
        let file = root.join(CONTROLLERS);
        let text = files::read(&file)?;
        let offered: BTreeSet<&str> = text.split_ascii_whitespace().collect();
        for c in REQUIRED {
            if !offered.contains(c) {
                return Err(CgroupError::MissingController {
                    path: root.to_path_buf(),
                    controller: c,
                });
            }
        }
        Ok(V2Manager {
            root: root.to_path_buf(),
            base: base.to_string(),
            controllers: WANTED.into_iter().filter(|c| offered.contains(c)).collect(),
            remove_timeout: Duration::from_secs(10),
        })
    }

    /// How long `remove_pod` waits for processes to die and `rmdir` to work.
    pub fn set_remove_timeout(&mut self, timeout: Duration) {
        self.remove_timeout = timeout;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The controllers herd enables at every level of its tree.
    pub fn controllers(&self) -> &[&'static str] {
        &self.controllers
    }

    fn dir(&self, cgroup: &str) -> PathBuf {
        self.root.join(cgroup.trim_start_matches('/'))
    }

    fn base_dir(&self) -> PathBuf {
        self.root.join(&self.base)
    }

    /// Writes the controllers missing from `dir/cgroup.subtree_control` in
    /// one write.
    fn enable_controllers(&self, dir: &Path) -> Result<(), CgroupError> {
        let file = dir.join(SUBTREE_CONTROL);
        let current = files::read(&file)?;
        let enabled: BTreeSet<&str> = current
            .split_ascii_whitespace()
            .map(|c| c.trim_start_matches('+'))
            .collect();
        let missing: Vec<String> = self
            .controllers
            .iter()
            .filter(|c| !enabled.contains(*c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        files::write(&file, &missing.join(" "))
    }

    /// `root/<base>`, `burstable/`, `besteffort/` (cpu.weight 1), with the
    /// controllers enabled at the root and at each level.
    pub fn ensure_hierarchy(&self) -> Result<(), CgroupError> {
        self.enable_controllers(&self.root)?;
        let base = self.base_dir();
        files::mkdir(&base)?;
        self.enable_controllers(&base)?;
        for tier in [BURSTABLE, BEST_EFFORT] {
            let dir = base.join(tier);
            files::mkdir(&dir)?;
            self.enable_controllers(&dir)?;
        }
        files::write(&base.join(BEST_EFFORT).join("cpu.weight"), "1")
    }

    pub fn create_pod(
        &self,
        uid: &str,
        qos: QosClass,
        r: &PodCgroupResources,
    ) -> Result<(), CgroupError> {
        files::check_name("pod uid", uid)?;
        let parent = match files::tier(qos) {
            Some(t) => self.base_dir().join(t),
            None => self.base_dir(),
        };
        if !parent.is_dir() {
            self.ensure_hierarchy()?;
        }
        let dir = self.dir(&files::pod_path(&self.base, uid, qos));
        files::mkdir(&dir)?;
        // Containers below get the controllers too (runc would also do it).
        self.enable_controllers(&dir)?;
        self.apply(&dir, r)
    }

    fn apply(&self, dir: &Path, r: &PodCgroupResources) -> Result<(), CgroupError> {
        let weight = cpu_weight_from_shares(r.cpu_shares);
        files::write(&dir.join("cpu.weight"), &weight.to_string())?;
        let quota = r
            .cpu_quota
            .filter(|&q| q > 0)
            .map_or("max".to_string(), |q| q.to_string());
        files::write(&dir.join("cpu.max"), &format!("{quota} {}", r.cpu_period))?;
        let memory = r
            .memory_limit
            .filter(|&m| m > 0)
            .map_or("max".to_string(), |m| m.to_string());
        files::write(&dir.join("memory.max"), &memory)?;
        let pids_max = dir.join("pids.max");
        match r.pids_limit.filter(|&p| p > 0) {
            Some(limit) if self.controllers.contains(&"pids") => {
                files::write(&pids_max, &limit.to_string())
            }
            Some(_) => Err(CgroupError::MissingController {
                path: self.root.clone(),
                controller: "pids",
            }),
            None if pids_max.exists() => files::write(&pids_max, "max"),
            None => Ok(()),
        }
    }

    pub fn remove_pod(&self, uid: &str, qos: QosClass) -> Result<(), CgroupError> {
        files::check_name("pod uid", uid)?;
        let dir = self.dir(&files::pod_path(&self.base, uid, qos));
        files::kill_and_remove(&[dir], self.remove_timeout)
    }

    pub fn list_pods(&self) -> Result<Vec<(String, QosClass)>, CgroupError> {
        let mut set = BTreeSet::new();
        files::list_pods_in(&self.base_dir(), &mut set)?;
        Ok(set.into_iter().map(|(QosClassKey(q), u)| (u, q)).collect())
    }

    pub fn stats(&self, cgroup: &str) -> Result<CgroupStats, CgroupError> {
        let dir = self.dir(files::check_cgroup_path(cgroup)?);
        let usage_usec = stats::keyed_from_file(&dir.join("cpu.stat"), "usage_usec")?;
        let memory = files::read_u64(&dir.join("memory.current"))?;
        let mstat = dir.join("memory.stat");
        let inactive = stats::flat_keyed(&files::read(&mstat)?, "inactive_file").unwrap_or(0);
        let pids = if dir.join("pids.current").exists() {
            stats::pids_current(&dir)?
        } else {
            files::subtree_pids(&dir)?.len() as u64
        };
        Ok(CgroupStats {
            cpu_usage_ns: usage_usec.saturating_mul(1000),
            memory_usage_bytes: memory,
            memory_working_set_bytes: stats::working_set(memory, inactive),
            oom_kills: self.oom_kill_count(cgroup)?,
            pids,
        })
    }

    /// `memory.events` counts the cgroup and its descendants (unless the
    /// host mounts cgroup2 with `memory_localevents`).
    pub fn oom_kill_count(&self, cgroup: &str) -> Result<u64, CgroupError> {
        let rel = files::check_cgroup_path(cgroup)?;
        let text = files::read(&self.dir(rel).join("memory.events"))?;
        Ok(stats::parse_oom_kill_count(&text))
    }

    pub fn oom_counter_file(&self, cgroup: &str) -> PathBuf {
        self.dir(cgroup).join("memory.events")
    }

    /// `memory.swap.max` exists at the root's children (swap accounting).
    pub fn swap_accounting(&self) -> bool {
        self.base_dir().join("memory.swap.max").exists()
    }

    /// Writes `cpu.weight` of the burstable tier (from shares).
    pub fn set_burstable_cpu_shares(&self, shares: u64) -> Result<(), CgroupError> {
        let weight = cpu_weight_from_shares(shares);
        files::write(
            &self.base_dir().join(BURSTABLE).join("cpu.weight"),
            &weight.to_string(),
        )
    }

    pub fn remove_tree(&self) -> Result<(), CgroupError> {
        if !self.list_pods()?.is_empty() {
            return Err(CgroupError::NotEmpty {
                path: self.base_dir(),
            });
        }
        files::kill_and_remove(&[self.base_dir()], self.remove_timeout)
    }
}
