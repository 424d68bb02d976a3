//! The cgroup v1 manager (legacy and hybrid hosts).
//!
//! Written directly on the files: libcgroups' v1 manager finds its
//! hierarchies in `/proc/self/mountinfo` and cannot take a root. Here the
//! hierarchies are the directories under `root` (symlinks such as
//! `cpu -> cpu,cpuacct` skipped, co-mounted controllers read from the
//! comma-separated name), so any root works, a temp dir included.
//!
//! runc, given `linux.cgroupsPath`, creates the container's cgroup in every
//! hierarchy it finds — on this kind of host also `systemd/` (name=systemd)
//! and, in hybrid mode, `unified/` — and removes only the container's own
//! directory on delete. So pod directories are created and removed in every
//! hierarchy under `root`, and limits are written in the cpu, memory and
//! pids ones. cpuset directories on the way get `cpuset.cpus`/`cpuset.mems`
//! copied from the parent when empty (as runc does), or no task could join.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CgroupError;
use super::files::{self, BEST_EFFORT, BURSTABLE, QosClassKey};
use super::layout::CgroupLayout;
use super::resources::PodCgroupResources;
use super::stats::{self, CgroupStats};
use crate::types::QosClass;

/// One mounted v1 hierarchy (or, in hybrid mode, the controller-less v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Directory name under the root ("cpu,cpuacct", "memory", "unified").
    pub name: String,
    pub path: PathBuf,
    /// Controllers from the name ("cpu", "cpuacct").
    pub controllers: Vec<String>,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Manager of `<hierarchy>/<base>` in every hierarchy under `root`.
#[derive(Debug, Clone)]
pub struct V1Manager {
    root: PathBuf,
    base: String,
    layout: CgroupLayout,
    hierarchies: Vec<Hierarchy>,
    cpu: PathBuf,
    cpuacct: PathBuf,
    memory: PathBuf,
    pids: Option<PathBuf>,
    remove_timeout: Duration,
}

fn find(h: &[Hierarchy], root: &Path, c: &'static str) -> Result<PathBuf, CgroupError> {
    h.iter()
        .find(|x| x.has(c))
        .map(|x| x.path.clone())
        .ok_or_else(|| CgroupError::NoHierarchy {
            root: root.to_path_buf(),
            controller: c,
        })
}

impl V1Manager {
    /// Lists the hierarchies under `root`; cpu, cpuacct and memory are
    /// required.
    pub fn new(root: &Path, base: &str, layout: CgroupLayout) -> Result<Self, CgroupError> {
        files::check_name("cgroup base", base)?;
        let hierarchies = discover(root)?;
        Ok(V1Manager {
            cpu: find(&hierarchies, root, "cpu")?,
            cpuacct: find(&hierarchies, root, "cpuacct")?,
            memory: find(&hierarchies, root, "memory")?,
            pids: hierarchies
                .iter()
                .find(|x| x.has("pids"))
                .map(|x| x.path.clone()),
            root: root.to_path_buf(),
            base: base.to_string(),
            layout,
            hierarchies,
            remove_timeout: Duration::from_secs(10),
        })
    }

    pub fn set_remove_timeout(&mut self, timeout: Duration) {
        self.remove_timeout = timeout;
    }

    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    fn at(hierarchy: &Path, cgroup: &str) -> PathBuf {
        hierarchy.join(cgroup.trim_start_matches('/'))
    }

    /// Creates `rel` (relative to each hierarchy) and its parents in every
    /// hierarchy.
    fn mkdir_all(&self, rel: &str) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            let mut dir = h.path.clone();
            for part in rel.trim_start_matches('/').split('/') {
                let parent = dir.clone();
                dir.push(part);
                files::mkdir(&dir)?;
                if h.has("cpuset") {
                    copy_cpuset(&parent, &dir)?;
                }
            }
        }
        Ok(())
    }

    /// `<base>/`, `burstable/`, `besteffort/` (cpu.shares 2) everywhere.
    pub fn ensure_hierarchy(&self) -> Result<(), CgroupError> {
        for tier in [BURSTABLE, BEST_EFFORT] {
            self.mkdir_all(&format!("{}/{tier}", self.base))?;
        }
        let be = format!("{}/{BEST_EFFORT}", self.base);
        files::write(&Self::at(&self.cpu, &be).join("cpu.shares"), "2")
    }

    pub fn create_pod(
        &self,
        uid: &str,
        qos: QosClass,
        r: &PodCgroupResources,
    ) -> Result<(), CgroupError> {
        files::check_name("pod uid", uid)?;
        let parent = match files::tier(qos) {
            Some(t) => format!("{}/{t}", self.base),
            None => self.base.clone(),
        };
        if !Self::at(&self.cpu, &parent).is_dir() {
            self.ensure_hierarchy()?;
        }
        let pod = files::pod_path(&self.base, uid, qos);
        self.mkdir_all(&pod)?;

        let cpu = Self::at(&self.cpu, &pod);
        files::write(&cpu.join("cpu.shares"), &r.cpu_shares.to_string())?;
        files::write(&cpu.join("cpu.cfs_period_us"), &r.cpu_period.to_string())?;
        let quota = r.cpu_quota.filter(|&q| q > 0).unwrap_or(-1);
        files::write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;

        let memory = r.memory_limit.filter(|&m| m > 0).unwrap_or(-1);
        let mem = Self::at(&self.memory, &pod);
        files::write(&mem.join("memory.limit_in_bytes"), &memory.to_string())?;

        match (&self.pids, r.pids_limit.filter(|&p| p > 0)) {
            (Some(pids), limit) => {
                let value = limit.map_or("max".to_string(), |l| l.to_string());
                files::write(&Self::at(pids, &pod).join("pids.max"), &value)
            }
            (None, Some(_)) => Err(CgroupError::NoHierarchy {
                root: self.root.clone(),
                controller: "pids",
            }),
            (None, None) => Ok(()),
        }
    }

    pub fn remove_pod(&self, uid: &str, qos: QosClass) -> Result<(), CgroupError> {
        files::check_name("pod uid", uid)?;
        let pod = files::pod_path(&self.base, uid, qos);
        let dirs: Vec<PathBuf> = self
            .hierarchies
            .iter()
            .map(|h| h.path.join(pod.trim_start_matches('/')))
            .collect();
        files::kill_and_remove(&dirs, self.remove_timeout)
    }

    /// Pods found in any hierarchy (a crash may leave some behind in only
    /// a few).
    pub fn list_pods(&self) -> Result<Vec<(String, QosClass)>, CgroupError> {
        let mut set = BTreeSet::new();
        for h in &self.hierarchies {
            files::list_pods_in(&h.path.join(&self.base), &mut set)?;
        }
        Ok(set.into_iter().map(|(QosClassKey(q), u)| (u, q)).collect())
    }

    pub fn stats(&self, cgroup: &str) -> Result<CgroupStats, CgroupError> {
        let rel = files::check_cgroup_path(cgroup)?;
        let cpu = files::read_u64(&Self::at(&self.cpuacct, rel).join("cpuacct.usage"))?;
        let mem = Self::at(&self.memory, rel);
        let usage = files::read_u64(&mem.join("memory.usage_in_bytes"))?;
        let mstat = files::read(&mem.join("memory.stat"))?;
        let inactive = stats::flat_keyed(&mstat, "total_inactive_file").unwrap_or(0);
        let pids = match &self.pids {
            Some(p) => stats::pids_current(&Self::at(p, rel))?,
            None => files::subtree_pids(&Self::at(&self.cpu, rel))?.len() as u64,
        };
        Ok(CgroupStats {
            cpu_usage_ns: cpu,
            memory_usage_bytes: usage,
            memory_working_set_bytes: stats::working_set(usage, inactive),
            oom_kills: self.oom_kill_count(cgroup)?,
            pids,
        })
    }

    /// v1 counts an OOM kill only in the victim's own memory cgroup, so the
    /// count of a pod is summed over its subtree (containers included).
    pub fn oom_kill_count(&self, cgroup: &str) -> Result<u64, CgroupError> {
        let rel = files::check_cgroup_path(cgroup)?;
        let mut total: u64 = 0;
        let mut stack = vec![Self::at(&self.memory, rel)];
        let mut first = true;
        while let Some(dir) = stack.pop() {
            let file = dir.join("memory.oom_control");
            let text = if first {
                first = false;
                files::read(&file)?
            } else {
                match files::read_opt(&file)? {
                    Some(t) => t,
                    None => continue,
                }
            };
            total = total.saturating_add(stats::parse_oom_kill_count(&text));
            let entries = fs::read_dir(&dir).map_err(|source| CgroupError::List {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
        }
        Ok(total)
    }

    /// `memory.oom_control` of `cgroup` itself (see [`Self::oom_kill_count`]:
    /// on v1 point the monitor at the container's cgroup).
    pub fn oom_counter_file(&self, cgroup: &str) -> PathBuf {
        Self::at(&self.memory, cgroup).join("memory.oom_control")
    }

    /// `memory.memsw.limit_in_bytes` exists (kernel booted with swap
    /// accounting).
    pub fn swap_accounting(&self) -> bool {
        self.memory.join("memory.memsw.limit_in_bytes").exists()
    }

    /// Writes `cpu.shares` of the burstable tier.
    pub fn set_burstable_cpu_shares(&self, shares: u64) -> Result<(), CgroupError> {
        let tier = format!("{}/{BURSTABLE}", self.base);
        files::write(
            &Self::at(&self.cpu, &tier).join("cpu.shares"),
            &shares.to_string(),
        )
    }

    pub fn remove_tree(&self) -> Result<(), CgroupError> {
        if !self.list_pods()?.is_empty() {
            return Err(CgroupError::NotEmpty {
                path: self.root.join(&self.base),
            });
        }
        let dirs: Vec<PathBuf> = self
            .hierarchies
            .iter()
            .map(|h| h.path.join(&self.base))
            .collect();
        files::kill_and_remove(&dirs, self.remove_timeout)
    }
}

/// Directories under `root`, sorted by name; symlinks skipped.
pub fn discover(root: &Path) -> Result<Vec<Hierarchy>, CgroupError> {
    let lerr = |source| CgroupError::List {
        path: root.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(root).map_err(lerr)? {
        let entry = entry.map_err(lerr)?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_dir {
            continue;
        }
        out.push(Hierarchy {
            controllers: name.split(',').map(str::to_string).collect(),
            path: entry.path(),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn copy_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let Some(current) = files::read_opt(&own)? else {
            continue;
        };
        if current.trim().is_empty() {
            let from = files::read(&parent.join(file))?;
            files::write(&own, from.trim())?;
        }
    }
    Ok(())
}
