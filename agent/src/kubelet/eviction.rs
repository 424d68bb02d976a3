//! Node-pressure eviction on `memory.available`, as the kubelet computes
//! the signal (`pkg/kubelet/eviction`) and ranks pods (`rankMemoryPressure`).
//!
//! Guarantees:
//! - [`memory_available`] = MemTotal − working set, working set = root
//!   usage − inactive file cache (v1: the memory hierarchy's
//!   `memory.usage_in_bytes` and `total_inactive_file`; v2: MemTotal −
//!   MemFree from meminfo and the root's `inactive_file`), never below 0;
//!   when the cgroup files are missing it falls back to MemAvailable.
//!   Roots are parameters (fixtures work).
//! - [`EvictionManager::check`] picks at most one pod per call, and only
//!   while available memory is under the threshold; the MemoryPressure
//!   condition stays set for the transition period after the last time the
//!   threshold was crossed (the kubelet's
//!   `--eviction-pressure-transition-period`), so it does not flap.
//! - [`rank`] orders pods: usage above requests first, then lower
//!   priority, then more usage above requests; BestEffort pods (request 0)
//!   therefore go before Burstable pods over their requests, and pods
//!   within their requests (Guaranteed) last.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_runtime::cgroups::CgroupManager;
use herd_runtime::cgroups::stats::flat_keyed;
use herd_runtime::types::QosClass;

/// What failed while reading the memory signal or parsing a threshold.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("invalid eviction threshold {value:?}: {reason}")]
    Threshold { value: String, reason: String },
}

/// One pod the eviction manager may pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub uid: String,
    pub qos: QosClass,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Working set of the pod cgroup.
    pub memory_usage: u64,
    /// Sum of the containers' memory requests.
    pub memory_request: u64,
}

impl Candidate {
    fn exceeds_request(&self) -> bool {
        self.memory_usage > self.memory_request
    }

    fn above_request(&self) -> i128 {
        i128::from(self.memory_usage) - i128::from(self.memory_request)
    }
}

/// Orders candidates as the kubelet does for memory pressure: usage above
/// requests first, then lower priority, then more usage above requests.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        b.exceeds_request()
            .cmp(&a.exceeds_request())
            .then(a.priority.cmp(&b.priority))
            .then(b.above_request().cmp(&a.above_request()))
    });
}

/// An eviction threshold: a quantity (`100Mi`) or a share of capacity
/// (`5%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Bytes(u64),
    /// Percent of capacity, 0–100.
    Percent(f64),
}

impl Threshold {
    /// The threshold in bytes for a node of `capacity` bytes.
    pub fn bytes(&self, capacity: u64) -> u64 {
        match *self {
            Threshold::Bytes(b) => b,
            Threshold::Percent(p) => ((capacity as f64) * p / 100.0) as u64,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Bytes(b) => write!(f, "{b}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Parses `100Mi`, `1G`, `5%`, `2.5%`, also in the kubelet's flag form
/// `memory.available<100Mi`.
pub fn parse_threshold(s: &str) -> Result<Threshold, EvictionError> {
    let err = |reason: String| EvictionError::Threshold {
        value: s.to_string(),
        reason,
    };
    let v = s.trim();
    let v = match v.split_once('<') {
        Some((signal, rest)) if signal.trim() == "memory.available" => rest.trim(),
        Some((signal, _)) => return Err(err(format!("unsupported signal {:?}", signal.trim()))),
        None => v,
    };
    if v.is_empty() {
        return Err(err("empty value".to_string()));
    }
    if let Some(p) = v.strip_suffix('%') {
        let pct: f64 = p
            .trim()
            .parse()
            .map_err(|_| err(format!("{p:?} is not a number")))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(err("percentage must be between 0% and 100%".to_string()));
        }
        return Ok(Threshold::Percent(pct));
    }
    crate::api::quantity::bytes(v)
        .map(Threshold::Bytes)
        .map_err(|e| err(e.to_string()))
}

/// Where the root cgroup's memory usage is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemorySource {
    /// cgroup v1: the memory hierarchy's root (`/sys/fs/cgroup/memory`).
    V1 { memory_root: PathBuf },
    /// cgroup v2: the unified root (`/sys/fs/cgroup`).
    V2 { cgroup_root: PathBuf },
    /// No cgroup: MemAvailable from meminfo.
    MeminfoOnly,
}

impl MemorySource {
    /// The source matching a cgroup manager's layout and roots.
    pub fn of(cgroup: &CgroupManager) -> MemorySource {
        match cgroup {
            CgroupManager::V1(m) => m
                .hierarchies()
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == "memory"))
                .map(|h| MemorySource::V1 {
                    memory_root: h.path.clone(),
                })
                .unwrap_or(MemorySource::MeminfoOnly),
            CgroupManager::V2(m) => MemorySource::V2 {
                cgroup_root: m.root().to_path_buf(),
            },
        }
    }
}

/// The fields of `/proc/meminfo` the signal needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
}

fn read(path: &Path) -> Result<Option<String>, EvictionError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EvictionError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads `<proc_root>/meminfo` (values in kB).
pub fn read_meminfo(proc_root: &Path) -> Result<MemInfo, EvictionError> {
    let path = proc_root.join("meminfo");
    let text = read(&path)?.ok_or_else(|| EvictionError::Read {
        path: path.clone(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| {
                let (k, rest) = l.split_once(':')?;
                if k.trim() != key {
                    return None;
                }
                rest.split_ascii_whitespace().next()?.parse::<u64>().ok()
            })
            .map(|kb| kb.saturating_mul(1024))
            .ok_or_else(|| EvictionError::Parse {
                path: path.clone(),
                reason: format!("no {key} line"),
            })
    };
    Ok(MemInfo {
        total: field("MemTotal")?,
        free: field("MemFree")?,
        available: field("MemAvailable")?,
    })
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, EvictionError> {
    text.trim().parse().map_err(|_| EvictionError::Parse {
        path: path.to_path_buf(),
        reason: format!("{:?} is not a number", text.trim()),
    })
}

fn stat_key(path: &Path, key: &str) -> Result<Option<u64>, EvictionError> {
    let Some(text) = read(path)? else {
        return Ok(None);
    };
    flat_keyed(&text, key)
        .map(Some)
        .ok_or_else(|| EvictionError::Parse {
            path: path.to_path_buf(),
            reason: format!("no {key:?} line"),
        })
}

/// The node's working set in bytes, or `None` when the cgroup files are
/// missing.
pub fn root_working_set(
    info: &MemInfo,
    source: &MemorySource,
) -> Result<Option<u64>, EvictionError> {
    match source {
        MemorySource::V1 { memory_root } => {
            let usage_path = memory_root.join("memory.usage_in_bytes");
            let Some(usage) = read(&usage_path)? else {
                return Ok(None);
            };
            let usage = parse_u64(&usage_path, &usage)?;
            let Some(inactive) = stat_key(&memory_root.join("memory.stat"), "total_inactive_file")?
            else {
                return Ok(None);
            };
            Ok(Some(usage.saturating_sub(inactive)))
        }
        MemorySource::V2 { cgroup_root } => {
            let usage = info.total.saturating_sub(info.free);
            let Some(inactive) = stat_key(&cgroup_root.join("memory.stat"), "inactive_file")?
            else {
                return Ok(None);
            };
            Ok(Some(usage.saturating_sub(inactive)))
        }
        MemorySource::MeminfoOnly => Ok(None),
    }
}

/// `memory.available` in bytes from explicit roots.
pub fn memory_available_from(
    proc_root: &Path,
    source: &MemorySource,
) -> Result<u64, EvictionError> {
    let info = read_meminfo(proc_root)?;
    Ok(match root_working_set(&info, source)? {
        Some(ws) => info.total.saturating_sub(ws),
        None => info.available,
    })
}

/// `memory.available` in bytes, the kubelet's eviction signal.
pub fn memory_available(proc_root: &Path, cgroup: &CgroupManager) -> Result<u64, EvictionError> {
    memory_available_from(proc_root, &MemorySource::of(cgroup))
}

/// The kubelet's default `--eviction-pressure-transition-period`.
pub const DEFAULT_TRANSITION_PERIOD: Duration = Duration::from_secs(300);

/// Decides, once per housekeeping pass, whether to evict and whom.
#[derive(Debug, Clone)]
pub struct EvictionManager {
    threshold: Threshold,
    transition_period: Duration,
    last_under: Option<Instant>,
}

impl EvictionManager {
    pub fn new(threshold: Threshold, transition_period: Duration) -> EvictionManager {
        EvictionManager {
            threshold,
            transition_period,
            last_under: None,
        }
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// [`EvictionManager::check_at`] now.
    pub fn check(
        &mut self,
        available: u64,
        capacity: u64,
        candidates: Vec<Candidate>,
    ) -> Option<Candidate> {
        self.check_at(Instant::now(), available, capacity, candidates)
    }

    /// Records the observation; under the threshold, the first pod in
    /// [`rank`] order (none when there are no candidates).
    pub fn check_at(
        &mut self,
        now: Instant,
        available: u64,
        capacity: u64,
        mut candidates: Vec<Candidate>,
    ) -> Option<Candidate> {
        if available >= self.threshold.bytes(capacity) {
            return None;
        }
        self.last_under = Some(now);
        rank(&mut candidates);
        candidates.into_iter().next()
    }

    /// The node's MemoryPressure condition at `now`: true from a crossing
    /// until the transition period has passed without one.
    pub fn memory_pressure_at(&self, now: Instant) -> bool {
        self.last_under
            .is_some_and(|t| now.saturating_duration_since(t) < self.transition_period)
    }

    pub fn memory_pressure(&self) -> bool {
        self.memory_pressure_at(Instant::now())
    }

    /// Whether a new pod of `qos` may start at `now` (under memory pressure
    /// the kubelet rejects BestEffort pods).
    pub fn admits_at(&self, now: Instant, qos: QosClass) -> bool {
        qos != QosClass::BestEffort || !self.memory_pressure_at(now)
    }
}

/// The pod status message of an evicted pod (reason `Evicted`).
pub fn eviction_message(threshold_bytes: u64, available: u64, victim: &Candidate) -> String {
    format!(
        "The node was low on resource: memory. Threshold quantity: {threshold_bytes}, available: {available}. Pod was using {}, request is {}.",
        victim.memory_usage, victim.memory_request
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, qos: QosClass, priority: i32, usage: u64, request: u64) -> Candidate {
        Candidate {
            uid: uid.to_string(),
            qos,
            priority,
            memory_usage: usage,
            memory_request: request,
        }
    }

    const MI: u64 = 1024 * 1024;

    #[test]
    fn thresholds_parse() {
        assert_eq!(
            parse_threshold("100Mi").unwrap(),
            Threshold::Bytes(100 * MI)
        );
        assert_eq!(
            parse_threshold("memory.available<1Gi").unwrap(),
            Threshold::Bytes(1024 * MI)
        );
        assert_eq!(parse_threshold("5%").unwrap(), Threshold::Percent(5.0));
        assert_eq!(parse_threshold("5%").unwrap().bytes(1000), 50);
        assert_eq!(parse_threshold(" 2.5% ").unwrap().bytes(1000), 25);
        assert_eq!(parse_threshold("100Mi").unwrap().bytes(1), 100 * MI);
        for bad in ["", "abc", "-1Mi", "101%", "x%", "nodefs.available<10%", "%"] {
            let e = parse_threshold(bad).unwrap_err();
            assert!(matches!(e, EvictionError::Threshold { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("invalid eviction threshold"), "{e}");
        }
    }

    #[test]
    fn rank_best_effort_then_burstable_then_guaranteed() {
        let mut pods = vec![
            pod("guaranteed", QosClass::Guaranteed, 0, 100 * MI, 200 * MI),
            pod("burstable-under", QosClass::Burstable, 0, 10 * MI, 50 * MI),
            pod("burstable-over", QosClass::Burstable, 0, 300 * MI, 100 * MI),
            pod("besteffort-small", QosClass::BestEffort, 0, 5 * MI, 0),
            pod("besteffort-big", QosClass::BestEffort, 0, 400 * MI, 0),
        ];
        rank(&mut pods);
        let order: Vec<&str> = pods.iter().map(|c| c.uid.as_str()).collect();
        // Over requests first (by usage above request), then within requests.
        assert_eq!(
            order,
            [
                "besteffort-big",
                "burstable-over",
                "besteffort-small",
                "burstable-under",
                "guaranteed"
            ]
        );
    }

    #[test]
    fn rank_priority_before_usage() {
        let mut pods = vec![
            pod("high", QosClass::BestEffort, 1000, 500 * MI, 0),
            pod("low", QosClass::BestEffort, -5, MI, 0),
            pod("mid", QosClass::Burstable, 0, 200 * MI, 100 * MI),
        ];
        rank(&mut pods);
        let order: Vec<&str> = pods.iter().map(|c| c.uid.as_str()).collect();
        assert_eq!(order, ["low", "mid", "high"]);
    }

    #[test]
    fn manager_evicts_one_under_pressure_and_holds_condition() {
        let mut m = EvictionManager::new(Threshold::Bytes(100 * MI), Duration::from_secs(30));
        let t0 = Instant::now();
        let pods = || {
            vec![
                pod("g", QosClass::Guaranteed, 0, 10 * MI, 10 * MI),
                pod("be", QosClass::BestEffort, 0, 10 * MI, 0),
            ]
        };
        assert_eq!(m.check_at(t0, 200 * MI, 1024 * MI, pods()), None);
        assert!(!m.memory_pressure_at(t0));
        assert!(m.admits_at(t0, QosClass::BestEffort));
        let victim = m.check_at(t0, 50 * MI, 1024 * MI, pods()).unwrap();
        assert_eq!(victim.uid, "be");
        assert!(m.memory_pressure_at(t0));
        assert!(!m.admits_at(t0, QosClass::BestEffort));
        assert!(m.admits_at(t0, QosClass::Burstable));
        assert_eq!(m.check_at(t0, 50 * MI, 1024 * MI, Vec::new()), None);
        // Recovered: no eviction, but the condition holds for the period.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(m.check_at(t1, 500 * MI, 1024 * MI, pods()), None);
        assert!(m.memory_pressure_at(t1));
        assert!(!m.memory_pressure_at(t0 + Duration::from_secs(31)));
        let msg = eviction_message(100 * MI, 50 * MI, &victim);
        assert!(
            msg.starts_with("The node was low on resource: memory."),
            "{msg}"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const MEMINFO: &str = "MemTotal:       1000 kB\nMemFree:         300 kB\nMemAvailable:    600 kB\nBuffers: 1 kB\n";

    #[test]
    fn v1_signal_from_fixture() {
        let proc_dir = tempfile::tempdir().unwrap();
        let mem = tempfile::tempdir().unwrap();
        write(proc_dir.path(), "meminfo", MEMINFO);
        write(mem.path(), "memory.usage_in_bytes", "614400\n");
        write(
            mem.path(),
            "memory.stat",
            "cache 1\ninactive_file 1\ntotal_inactive_file 204800\n",
        );
        let src = MemorySource::V1 {
            memory_root: mem.path().to_path_buf(),
        };
        // 1000 KiB - (600 KiB - 200 KiB) = 600 KiB
        assert_eq!(
            memory_available_from(proc_dir.path(), &src).unwrap(),
            600 * 1024
        );
        // Missing cgroup files: MemAvailable.
        std::fs::remove_file(mem.path().join("memory.usage_in_bytes")).unwrap();
        assert_eq!(
            memory_available_from(proc_dir.path(), &src).unwrap(),
            600 * 1024
        );
        write(mem.path(), "memory.usage_in_bytes", "lots");
        let e = memory_available_from(proc_dir.path(), &src).unwrap_err();
        assert!(matches!(e, EvictionError::Parse { .. }), "{e}");
    }

    #[test]
    fn v2_signal_from_fixture() {
        let proc_dir = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        write(proc_dir.path(), "meminfo", MEMINFO);
        write(cg.path(), "memory.stat", "anon 1\ninactive_file 102400\n");
        let src = MemorySource::V2 {
            cgroup_root: cg.path().to_path_buf(),
        };
        // usage = 1000-300 = 700 KiB, ws = 600 KiB, available = 400 KiB
        assert_eq!(
            memory_available_from(proc_dir.path(), &src).unwrap(),
            400 * 1024
        );
        assert_eq!(
            memory_available_from(proc_dir.path(), &MemorySource::MeminfoOnly).unwrap(),
            600 * 1024
        );
    }

    #[test]
    fn bad_meminfo_is_typed() {
        let proc_dir = tempfile::tempdir().unwrap();
        let e = read_meminfo(proc_dir.path()).unwrap_err();
        assert!(matches!(e, EvictionError::Read { .. }), "{e}");
        write(proc_dir.path(), "meminfo", "MemTotal: 5 kB\n");
        let e = read_meminfo(proc_dir.path()).unwrap_err();
        assert!(e.to_string().contains("no MemFree line"), "{e}");
    }

    #[test]
    fn real_signal_on_this_host() {
        let root = Path::new("/sys/fs/cgroup");
        let Ok(cg) = CgroupManager::detect(root, "herd-probes-eviction-test") else {
            eprintln!(
                "skip real_signal_on_this_host: no cgroup fs at {}",
                root.display()
            );
            return;
        };
        let info = read_meminfo(Path::new("/proc")).unwrap();
        let avail = memory_available(Path::new("/proc"), &cg).unwrap();
        assert!(
            avail > 0 && avail <= info.total,
            "{avail} of {}",
            info.total
        );
        assert_ne!(MemorySource::of(&cg), MemorySource::MeminfoOnly);
    }
}
