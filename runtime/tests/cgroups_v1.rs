//! The v1 manager's write paths on a temp-dir fixture shaped like this
//! host's hybrid layout (separate and co-mounted controllers, symlinks,
//! name=systemd, a controller-less `unified/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use herd_runtime::cgroups::{CgroupError, CgroupLayout, CgroupManager, PodCgroupResources};
use herd_runtime::types::QosClass;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn files(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

const CPU: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cpu.shares", "1024\n"),
    ("cpu.cfs_period_us", "100000\n"),
    ("cpu.cfs_quota_us", "-1\n"),
    ("cpuacct.usage", "0\n"),
];
const MEMORY: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("memory.limit_in_bytes", "9223372036854771712\n"),
    ("memory.usage_in_bytes", "0\n"),
    ("memory.stat", "cache 0\nrss 0\ntotal_inactive_file 0\n"),
    (
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    ),
];
const PIDS: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("pids.max", "max\n"),
    ("pids.current", "0\n"),
];
const CPUSET_EMPTY: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cpuset.cpus", "\n"),
    ("cpuset.mems", "\n"),
];

impl Fixture {
    /// `cpu,cpuacct` co-mounted (with symlinks), memory, pids, cpuset,
    /// systemd and unified; `pre` lists cgroups (relative to each
    /// hierarchy) whose control files are pre-made in cpu, memory, pids.
    fn new(pre: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cgroup");
        files(&root.join("cpu,cpuacct"), CPU);
        symlink("cpu,cpuacct", root.join("cpu")).unwrap();
        symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
        files(&root.join("memory"), MEMORY);
        files(&root.join("pids"), PIDS);
        files(
            &root.join("cpuset"),
            &[
                ("cgroup.procs", ""),
                ("cpuset.cpus", "0-3\n"),
                ("cpuset.mems", "0\n"),
            ],
        );
        files(&root.join("systemd"), &[("cgroup.procs", "")]);
        files(
            &root.join("unified"),
            &[("cgroup.procs", ""), ("cgroup.controllers", "")],
        );
        let fx = Fixture { _dir: dir, root };
        for cg in ["herd", "herd/burstable", "herd/besteffort"]
            .iter()
            .chain(pre)
        {
            fx.pre(cg);
        }
        // cpuset dirs as the kernel makes them: empty cpus/mems.
        files(&fx.root.join("cpuset/herd"), CPUSET_EMPTY);
        files(&fx.root.join("cpuset/herd/burstable"), CPUSET_EMPTY);
        fx
    }

    fn pre(&self, cg: &str) {
        files(&self.root.join("cpu,cpuacct").join(cg), CPU);
        files(&self.root.join("memory").join(cg), MEMORY);
        files(&self.root.join("pids").join(cg), PIDS);
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel))
            .unwrap()
            .trim()
            .to_string()
    }

    fn manager(&self) -> CgroupManager {
        CgroupManager::new(&self.root, CgroupLayout::Hybrid, "herd").unwrap()
    }
}

#[test]
fn hierarchies_are_found_under_the_root() {
    let fx = Fixture::new(&[]);
    let CgroupManager::V1(m) = fx.manager() else {
        panic!("hybrid must use v1")
    };
    let names: Vec<&str> = m.hierarchies().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "pids",
            "systemd",
            "unified"
        ]
    );
    assert_eq!(m.layout(), CgroupLayout::Hybrid);

    // Without a memory hierarchy the manager refuses to start.
    fs::remove_dir_all(fx.root.join("memory")).unwrap();
    let err = CgroupManager::new(&fx.root, CgroupLayout::Legacy, "herd").unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::NoHierarchy {
                controller: "memory",
                ..
            }
        ),
        "{err}"
    );
    let err = CgroupManager::new(&fx.root.join("nope"), CgroupLayout::Legacy, "herd").unwrap_err();
    assert!(matches!(err, CgroupError::List { .. }), "{err}");
}

#[test]
fn ensure_hierarchy_makes_the_tiers_everywhere() {
    let fx = Fixture::new(&[]);
    fx.manager().ensure_hierarchy().unwrap();
    for h in [
        "cpu,cpuacct",
        "cpuset",
        "memory",
        "pids",
        "systemd",
        "unified",
    ] {
        for tier in ["herd/burstable", "herd/besteffort"] {
            assert!(fx.root.join(h).join(tier).is_dir(), "{h}/{tier}");
        }
    }
    assert_eq!(fx.read("cpu,cpuacct/herd/besteffort/cpu.shares"), "2");
    assert_eq!(fx.read("cpu,cpuacct/herd/burstable/cpu.shares"), "1024");
}

#[test]
fn create_pod_writes_v1_files_in_every_hierarchy() {
    let fx = Fixture::new(&["herd/burstable/podp1"]);
    let m = fx.manager();
    let r = PodCgroupResources {
        cpu_shares: 512,
        cpu_quota: Some(50_000),
        cpu_period: 100_000,
        memory_limit: Some(64 << 20),
        pids_limit: Some(64),
    };
    m.create_pod("p1", QosClass::Burstable, &r).unwrap();
    let pod = "herd/burstable/podp1";
    assert_eq!(fx.read(&format!("cpu,cpuacct/{pod}/cpu.shares")), "512");
    assert_eq!(
        fx.read(&format!("cpu,cpuacct/{pod}/cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(
        fx.read(&format!("cpu,cpuacct/{pod}/cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        fx.read(&format!("memory/{pod}/memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(fx.read(&format!("pids/{pod}/pids.max")), "64");
    // runc will look for the parent in these too.
    for h in ["cpuset", "systemd", "unified"] {
        assert!(fx.root.join(h).join(pod).is_dir(), "{h}");
    }
    // cpuset levels that were empty got the parent's cpus and mems.
    assert_eq!(fx.read("cpuset/herd/cpuset.cpus"), "0-3");
    assert_eq!(fx.read("cpuset/herd/burstable/cpuset.mems"), "0");

    // Unlimited: every limit reset.
    m.create_pod("p1", QosClass::Burstable, &PodCgroupResources::unlimited())
        .unwrap();
    assert_eq!(fx.read(&format!("cpu,cpuacct/{pod}/cpu.shares")), "2");
    assert_eq!(
        fx.read(&format!("cpu,cpuacct/{pod}/cpu.cfs_quota_us")),
        "-1"
    );
    assert_eq!(
        fx.read(&format!("memory/{pod}/memory.limit_in_bytes")),
        "-1"
    );
    assert_eq!(fx.read(&format!("pids/{pod}/pids.max")), "max");
}

#[test]
fn stats_and_oom_kills_sum_the_subtree() {
    let fx = Fixture::new(&["herd/podg", "herd/podg/c1", "herd/podg/c2"]);
    let m = fx.manager();
    fs::write(
        fx.root.join("cpu,cpuacct/herd/podg/cpuacct.usage"),
        "123456789\n",
    )
    .unwrap();
    fs::write(
        fx.root.join("memory/herd/podg/memory.usage_in_bytes"),
        "8388608\n",
    )
    .unwrap();
    fs::write(
        fx.root.join("memory/herd/podg/memory.stat"),
        "cache 4096\ninactive_file 1\ntotal_inactive_file 2097152\n",
    )
    .unwrap();
    fs::write(fx.root.join("pids/herd/podg/pids.current"), "2\n").unwrap();
    let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
    fs::write(fx.root.join("memory/herd/podg/c1/memory.oom_control"), oom).unwrap();
    fs::write(fx.root.join("memory/herd/podg/c2/memory.oom_control"), oom).unwrap();
    let s = m.stats("/herd/podg").unwrap();
    assert_eq!(s.cpu_usage_ns, 123_456_789);
    assert_eq!(s.memory_usage_bytes, 8_388_608);
    assert_eq!(s.memory_working_set_bytes, 8_388_608 - 2_097_152);
    assert_eq!(s.pids, 2);
    assert_eq!(s.oom_kills, 2);
    assert_eq!(m.oom_kill_count("/herd/podg/c1").unwrap(), 1);
    assert_eq!(
        m.oom_counter_file("/herd/podg/c1"),
        fx.root.join("memory/herd/podg/c1/memory.oom_control")
    );
}

#[test]
fn list_and_remove_pods_across_hierarchies() {
    let fx = Fixture::new(&[
        "herd/podg",
        "herd/besteffort/pode",
        "herd/besteffort/pode/c1",
    ]);
    // A crash left one pod only in the systemd hierarchy.
    fs::create_dir_all(fx.root.join("systemd/herd/burstable/podleft")).unwrap();
    let m = fx.manager();
    assert_eq!(
        m.list_pods().unwrap(),
        vec![
            ("g".to_string(), QosClass::Guaranteed),
            ("left".to_string(), QosClass::Burstable),
            ("e".to_string(), QosClass::BestEffort),
        ]
    );
    for (uid, qos) in m.list_pods().unwrap() {
        m.remove_pod(&uid, qos).unwrap();
    }
    assert!(m.list_pods().unwrap().is_empty());
    for h in ["cpu,cpuacct", "memory", "pids", "systemd"] {
        assert!(
            !fx.root.join(h).join("herd/besteffort/pode").exists(),
            "{h}"
        );
    }
    m.remove_pod("e", QosClass::BestEffort).unwrap();
    m.remove_tree().unwrap();
    for h in [
        "cpu,cpuacct",
        "cpuset",
        "memory",
        "pids",
        "systemd",
        "unified",
    ] {
        assert!(!fx.root.join(h).join("herd").exists(), "{h}");
    }
    // The symlinks and the hierarchies themselves are untouched.
    assert!(fx.root.join("cpu").join("cpu.shares").exists());
}

#[test]
fn burstable_tier_shares_are_written() {
    let fx = Fixture::new(&[]);
    let CgroupManager::V1(m) = fx.manager() else {
        panic!("hybrid must use v1")
    };
    m.set_burstable_cpu_shares(3072).unwrap();
    assert_eq!(fx.read("cpu,cpuacct/herd/burstable/cpu.shares"), "3072");
}
