//! The v2 manager on temp-dir fixtures that mimic a cgroup2 tree: the
//! kernel's files are pre-created where the kernel would create them (a
//! plain `mkdir` on a temp dir makes no control files).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use herd_runtime::cgroups::{
    CgroupError, CgroupLayout, CgroupManager, CgroupStats, PodCgroupResources,
};
use herd_runtime::types::{ContainerResources, QosClass};

const OFFERED: &str = "cpuset cpu io memory hugetlb pids rdma misc";

/// A cgroup directory as the kernel would make it.
fn fake_cgroup(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let files = [
        ("cgroup.controllers", "cpuset cpu io memory pids\n"),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", ""),
        ("cgroup.kill", ""),
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
        ("memory.max", "max\n"),
        ("memory.current", "0\n"),
        ("memory.stat", "anon 0\nfile 0\ninactive_file 0\n"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        ),
        ("pids.max", "max\n"),
        ("pids.current", "0\n"),
    ];
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    /// A cgroup2 root offering `offered`, with `herd/`, its tiers and the
    /// given pod directories pre-made.
    fn new(offered: &str, pods: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cgroup");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("cgroup.controllers"), format!("{offered}\n")).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        for d in ["herd", "herd/burstable", "herd/besteffort"]
            .iter()
            .chain(pods)
        {
            fake_cgroup(&root.join(d));
        }
        Fixture { _dir: dir, root }
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel))
            .unwrap()
            .trim()
            .to_string()
    }

    fn manager(&self) -> CgroupManager {
        CgroupManager::new(&self.root, CgroupLayout::Unified, "herd").unwrap()
    }
}

fn limits() -> PodCgroupResources {
    PodCgroupResources {
        cpu_shares: 1024,
        cpu_quota: Some(50_000),
        cpu_period: 100_000,
        memory_limit: Some(64 << 20),
        pids_limit: Some(100),
    }
}

#[test]
fn ensure_hierarchy_enables_controllers_at_every_level() {
    let fx = Fixture::new(OFFERED, &[]);
    let m = fx.manager();
    assert_eq!(m.layout(), CgroupLayout::Unified);
    m.ensure_hierarchy().unwrap();
    // hugetlb, rdma, misc are not wanted; the rest are enabled in one write.
    for level in ["cgroup.subtree_control", "herd/cgroup.subtree_control"] {
        assert_eq!(fx.read(level), "+cpuset +cpu +io +memory +pids", "{level}");
    }
    for tier in ["burstable", "besteffort"] {
        assert_eq!(
            fx.read(&format!("herd/{tier}/cgroup.subtree_control")),
            "+cpuset +cpu +io +memory +pids"
        );
    }
    assert_eq!(fx.read("herd/besteffort/cpu.weight"), "1");
    assert_eq!(
        fx.read("herd/burstable/cpu.weight"),
        "100",
        "burstable keeps the default"
    );

    // Already enabled: nothing is written again (the content stays as the
    // kernel shows it).
    fs::write(
        fx.root.join("herd/cgroup.subtree_control"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    m.ensure_hierarchy().unwrap();
    assert_eq!(
        fx.read("herd/cgroup.subtree_control"),
        "cpuset cpu io memory pids"
    );
}

#[test]
fn ensure_hierarchy_enables_only_what_the_root_offers() {
    let fx = Fixture::new("cpu memory", &[]);
    fx.manager().ensure_hierarchy().unwrap();
    assert_eq!(fx.read("herd/cgroup.subtree_control"), "+cpu +memory");
}

#[test]
fn ensure_hierarchy_creates_missing_directories() {
    // No herd/ at all: the directory is made; a temp dir then lacks the
    // kernel's files, which shows up as a read error naming the path.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    let m = CgroupManager::new(root, CgroupLayout::Unified, "herd").unwrap();
    let err = m.ensure_hierarchy().unwrap_err();
    assert!(root.join("herd").is_dir());
    match err {
        CgroupError::Read { path, .. } => {
            assert_eq!(path, root.join("herd/cgroup.subtree_control"))
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn required_controllers_are_checked() {
    let fx = Fixture::new("cpu io", &[]);
    let err = CgroupManager::new(&fx.root, CgroupLayout::Unified, "herd").unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "memory",
                ..
            }
        ),
        "{err}"
    );

    // No pids controller: fine until a pids limit is asked for.
    let fx = Fixture::new("cpu memory", &["herd/burstable/podp1"]);
    let m = fx.manager();
    let err = m
        .create_pod("p1", QosClass::Burstable, &limits())
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    let no_pids = PodCgroupResources {
        pids_limit: None,
        ..limits()
    };
    m.create_pod("p1", QosClass::Burstable, &no_pids).unwrap();

    let err =
        CgroupManager::new(&fx.root.join("missing"), CgroupLayout::Unified, "herd").unwrap_err();
    assert!(matches!(err, CgroupError::Read { .. }), "{err}");
}

#[test]
fn pod_paths_follow_the_qos_tiers() {
    let fx = Fixture::new(OFFERED, &[]);
    let m = fx.manager();
    assert_eq!(m.pod_cgroup("abc", QosClass::Guaranteed), "/herd/podabc");
    assert_eq!(
        m.pod_cgroup("abc", QosClass::Burstable),
        "/herd/burstable/podabc"
    );
    assert_eq!(
        m.pod_cgroup("abc", QosClass::BestEffort),
        "/herd/besteffort/podabc"
    );
    assert_eq!(
        m.container_cgroups_path("abc", QosClass::Burstable, "c1"),
        "/herd/burstable/podabc/c1"
    );
}

#[test]
fn create_pod_writes_the_limits() {
    let fx = Fixture::new(OFFERED, &["herd/burstable/pod1234-ab"]);
    let m = fx.manager();
    m.create_pod("1234-ab", QosClass::Burstable, &limits())
        .unwrap();
    let pod = "herd/burstable/pod1234-ab";
    assert_eq!(fx.read(&format!("{pod}/cpu.weight")), "39");
    assert_eq!(fx.read(&format!("{pod}/cpu.max")), "50000 100000");
    assert_eq!(
        fx.read(&format!("{pod}/memory.max")),
        (64u64 << 20).to_string()
    );
    assert_eq!(fx.read(&format!("{pod}/pids.max")), "100");
    assert_eq!(
        fx.read(&format!("{pod}/cgroup.subtree_control")),
        "+cpuset +cpu +io +memory +pids"
    );

    // Again with no limits: idempotent, every limit reset to "max".
    m.create_pod(
        "1234-ab",
        QosClass::Burstable,
        &PodCgroupResources::unlimited(),
    )
    .unwrap();
    assert_eq!(fx.read(&format!("{pod}/cpu.weight")), "1");
    assert_eq!(fx.read(&format!("{pod}/cpu.max")), "max 100000");
    assert_eq!(fx.read(&format!("{pod}/memory.max")), "max");
    assert_eq!(fx.read(&format!("{pod}/pids.max")), "max");
}

#[test]
fn create_pod_guaranteed_sits_under_the_base() {
    let fx = Fixture::new(OFFERED, &["herd/podg1"]);
    let m = fx.manager();
    let r = PodCgroupResources {
        cpu_shares: 2048,
        cpu_quota: Some(200_000),
        ..limits()
    };
    m.create_pod("g1", QosClass::Guaranteed, &r).unwrap();
    assert_eq!(fx.read("herd/podg1/cpu.weight"), "79");
    assert_eq!(fx.read("herd/podg1/cpu.max"), "200000 100000");
}

#[test]
fn create_pod_reports_a_missing_control_file_with_its_path() {
    let fx = Fixture::new(OFFERED, &["herd/besteffort/podx"]);
    fs::remove_file(fx.root.join("herd/besteffort/podx/cpu.max")).unwrap();
    let err = fx
        .manager()
        .create_pod("x", QosClass::BestEffort, &limits())
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::Write { path, .. } if path.ends_with("podx/cpu.max")),
        "{err}"
    );
    assert!(err.to_string().contains("podx"), "{err}");
}

#[test]
fn bad_names_are_refused() {
    let fx = Fixture::new(OFFERED, &[]);
    let m = fx.manager();
    for uid in ["", "..", ".", "a/b", "../../etc", "a b", "x\0y"] {
        let err = m
            .create_pod(uid, QosClass::Burstable, &limits())
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{uid:?}: {err}"
        );
        let err = m.remove_pod(uid, QosClass::Burstable).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{uid:?}: {err}"
        );
    }
    for path in ["/herd/../..", "/", "", "/herd//x", "/herd/a b"] {
        let err = m.stats(path).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{path:?}: {err}"
        );
    }
    let err = CgroupManager::new(&fx.root, CgroupLayout::Unified, "../herd").unwrap_err();
    assert!(matches!(err, CgroupError::InvalidName { .. }), "{err}");
}

#[test]
fn stats_are_parsed() {
    let fx = Fixture::new(
        OFFERED,
        &["herd/burstable/pods1", "herd/burstable/pods1/c1"],
    );
    let pod = fx.root.join("herd/burstable/pods1");
    fs::write(
        pod.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
    )
    .unwrap();
    fs::write(pod.join("memory.current"), "10485760\n").unwrap();
    fs::write(
        pod.join("memory.stat"),
        "anon 6291456\nfile 4194304\nactive_file 0\ninactive_file 4194304\n",
    )
    .unwrap();
    fs::write(
        pod.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n",
    )
    .unwrap();
    fs::write(pod.join("pids.current"), "3\n").unwrap();
    let m = fx.manager();
    let s = m.stats("/herd/burstable/pods1").unwrap();
    assert_eq!(
        s,
        CgroupStats {
            cpu_usage_ns: 1_500_000,
            memory_usage_bytes: 10_485_760,
            memory_working_set_bytes: 6_291_456,
            oom_kills: 2,
            pids: 3,
        }
    );
    assert_eq!(m.oom_kill_count("/herd/burstable/pods1").unwrap(), 2);
    assert_eq!(
        m.oom_counter_file("/herd/burstable/pods1"),
        pod.join("memory.events")
    );

    // Container level, and inactive_file above usage never underflows.
    let c1 = pod.join("c1");
    fs::write(c1.join("memory.current"), "100\n").unwrap();
    fs::write(c1.join("memory.stat"), "inactive_file 4096\n").unwrap();
    let s = m.stats("/herd/burstable/pods1/c1").unwrap();
    assert_eq!((s.memory_usage_bytes, s.memory_working_set_bytes), (100, 0));

    // Garbage is a parse error naming the file.
    fs::write(c1.join("memory.current"), "lots\n").unwrap();
    let err = m.stats("/herd/burstable/pods1/c1").unwrap_err();
    assert!(
        matches!(&err, CgroupError::Parse { path, .. } if path.ends_with("c1/memory.current")),
        "{err}"
    );
    // A missing cgroup is a read error.
    assert!(matches!(
        m.stats("/herd/nothere").unwrap_err(),
        CgroupError::Read { .. }
    ));
}

#[test]
fn list_pods_finds_every_tier_and_ignores_noise() {
    let fx = Fixture::new(
        OFFERED,
        &[
            "herd/podg",
            "herd/burstable/podb1",
            "herd/burstable/podb0",
            "herd/besteffort/pode",
            "herd/burstable/notapod",
            "herd/burstable/podb1/c1",
        ],
    );
    fs::write(fx.root.join("herd/podfile"), "").unwrap();
    fs::create_dir(fx.root.join("herd/burstable/pod")).unwrap();
    let pods = fx.manager().list_pods().unwrap();
    assert_eq!(
        pods,
        vec![
            ("g".to_string(), QosClass::Guaranteed),
            ("b0".to_string(), QosClass::Burstable),
            ("b1".to_string(), QosClass::Burstable),
            ("e".to_string(), QosClass::BestEffort),
        ]
    );
    // An empty root lists nothing.
    let empty = tempfile::tempdir().unwrap();
    fs::write(empty.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
    let m = CgroupManager::new(empty.path(), CgroupLayout::Unified, "herd").unwrap();
    assert!(m.list_pods().unwrap().is_empty());
}

#[test]
fn remove_pod_removes_the_subtree_and_is_idempotent() {
    let fx = Fixture::new(
        OFFERED,
        &[
            "herd/burstable/podr",
            "herd/burstable/podr/c1",
            "herd/burstable/podr/c2",
            "herd/podother",
        ],
    );
    let m = fx.manager();
    m.remove_pod("r", QosClass::Burstable).unwrap();
    assert!(!fx.root.join("herd/burstable/podr").exists());
    assert!(
        fx.root.join("herd/podother").is_dir(),
        "other pods untouched"
    );
    m.remove_pod("r", QosClass::Burstable).unwrap();
    assert_eq!(
        m.list_pods().unwrap(),
        vec![("other".to_string(), QosClass::Guaranteed)]
    );

    // The tree goes only once it holds no pod.
    let err = m.remove_tree().unwrap_err();
    assert!(matches!(err, CgroupError::NotEmpty { .. }), "{err}");
    m.remove_pod("other", QosClass::Guaranteed).unwrap();
    m.remove_tree().unwrap();
    assert!(!fx.root.join("herd").exists());
    m.remove_tree().unwrap();
}

#[test]
fn remove_pod_gives_up_on_a_process_that_never_leaves() {
    // A pid that is not ours to kill stays listed in a fixture: the bounded
    // wait ends with Busy instead of hanging. Pid 1 is never killed: the
    // SIGKILL to init from a non-init pid namespace is ignored; to be safe
    // the fixture lists a pid that cannot exist (above pid_max).
    let fx = Fixture::new(OFFERED, &["herd/burstable/podz"]);
    fs::write(
        fx.root.join("herd/burstable/podz/cgroup.procs"),
        "4194305\n",
    )
    .unwrap();
    let mut m = fx.manager();
    m.set_remove_timeout(std::time::Duration::from_millis(50));
    let err = m.remove_pod("z", QosClass::Burstable).unwrap_err();
    assert!(matches!(err, CgroupError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("4194305"), "{err}");
}

#[test]
fn container_resources_drop_swap_without_swap_accounting() {
    let fx = Fixture::new(OFFERED, &[]);
    let m = fx.manager();
    let r = ContainerResources {
        memory_limit_bytes: Some(1 << 20),
        ..Default::default()
    };
    assert!(!m.swap_accounting());
    assert_eq!(
        m.container_linux_resources(&r)
            .memory()
            .expect("memory")
            .swap(),
        None
    );
    fs::write(fx.root.join("herd/memory.swap.max"), "max\n").unwrap();
    assert!(m.swap_accounting());
    assert_eq!(
        m.container_linux_resources(&r)
            .memory()
            .expect("memory")
            .swap(),
        Some(1 << 20)
    );
}

#[test]
fn burstable_tier_weighs_the_burstable_requests() {
    use herd_runtime::types::{DnsConfig, NamespaceOptions, PodSandboxConfig};
    let pod = |cpu_req: Option<u64>, cpu_lim: Option<u64>, mem: Option<u64>| PodSandboxConfig {
        init_containers: vec![],
        uid: "u".into(),
        name: "p".into(),
        namespace: "default".into(),
        hostname: "p".into(),
        namespaces: NamespaceOptions::default(),
        containers: vec![ContainerResources {
            cpu_request_millis: cpu_req,
            cpu_limit_millis: cpu_lim,
            memory_request_bytes: mem,
            memory_limit_bytes: mem,
        }],
        pids_limit: None,
        shm_size_bytes: 0,
        dns: DnsConfig::default(),
        host_aliases: vec![],
        sysctls: Default::default(),
        pod_ip: None,
    };
    let fx = Fixture::new(OFFERED, &[]);
    let m = fx.manager();
    let pods = [
        pod(Some(500), None, None),           // burstable 500m
        pod(None, Some(500), None),           // burstable, request = limit
        pod(Some(1000), Some(1000), Some(1)), // guaranteed: not counted
        pod(None, None, None),                // best effort
    ];
    assert_eq!(m.update_burstable_tier(&pods).unwrap(), 1024);
    assert_eq!(fx.read("herd/burstable/cpu.weight"), "39");
    assert_eq!(m.update_burstable_tier(&[]).unwrap(), 2);
    assert_eq!(fx.read("herd/burstable/cpu.weight"), "1");
}
