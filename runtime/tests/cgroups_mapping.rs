//! Table tests of the Kubernetes mappings, with values from Kubernetes' own
//! tests (qos_test.go, helpers_linux_test.go, policy_test.go,
//! cgroup_v2_manager tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use herd_runtime::cgroups::layout::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, layout_from_magics};
use herd_runtime::cgroups::{
    CgroupError, CgroupLayout, PodCgroupResources, container_linux_resources, cpu_quota,
    cpu_shares, cpu_weight_from_shares, oom_score_adj, parse_oom_kill_count, pod_cgroup_resources,
    qos_class,
};
use herd_runtime::types::{
    ContainerResources, DnsConfig, NamespaceOptions, PodSandboxConfig, QosClass,
};

const MI: u64 = 1024 * 1024;

fn c(
    cpu_req: Option<u64>,
    cpu_lim: Option<u64>,
    mem_req: Option<u64>,
    mem_lim: Option<u64>,
) -> ContainerResources {
    ContainerResources {
        cpu_request_millis: cpu_req,
        cpu_limit_millis: cpu_lim,
        memory_request_bytes: mem_req,
        memory_limit_bytes: mem_lim,
    }
}

fn guaranteed(cpu: u64, mem: u64) -> ContainerResources {
    c(Some(cpu), Some(cpu), Some(mem), Some(mem))
}

fn best_effort() -> ContainerResources {
    ContainerResources::default()
}

#[test]
fn qos_class_matches_kubernetes() {
    use QosClass::*;
    let cases: Vec<(&str, Vec<ContainerResources>, QosClass)> = vec![
        (
            "best-effort-best-effort",
            vec![best_effort(), best_effort()],
            BestEffort,
        ),
        ("best-effort", vec![best_effort()], BestEffort),
        ("no containers", vec![], BestEffort),
        (
            "best-effort-burstable",
            vec![best_effort(), c(Some(1), None, Some(100), None)],
            Burstable,
        ),
        (
            "best-effort-guaranteed",
            vec![best_effort(), guaranteed(10, 10 * MI)],
            Burstable,
        ),
        (
            "burstable-cpu-guaranteed-memory",
            vec![c(Some(10), None, Some(100 * MI), Some(100 * MI))],
            Burstable,
        ),
        (
            "burstable-no-limits",
            vec![c(Some(100), None, Some(100 * MI), None)],
            Burstable,
        ),
        (
            "burstable-guaranteed",
            vec![
                c(Some(1), Some(100), Some(100 * MI), Some(200 * MI)),
                guaranteed(100, 100 * MI),
            ],
            Burstable,
        ),
        (
            "burstable-unbounded-but-requests-match-limits",
            vec![
                guaranteed(100, 100 * MI),
                c(Some(100), None, Some(100 * MI), None),
            ],
            Burstable,
        ),
        (
            "burstable-1",
            vec![c(Some(10), Some(10), Some(10 * MI), Some(20 * MI))],
            Burstable,
        ),
        (
            "burstable-2",
            vec![c(Some(0), Some(10), Some(10 * MI), Some(10 * MI))],
            Burstable,
        ),
        ("guaranteed", vec![guaranteed(100, 100 * MI)], Guaranteed),
        (
            "guaranteed-guaranteed",
            vec![guaranteed(100, 100 * MI), guaranteed(100, 100 * MI)],
            Guaranteed,
        ),
        (
            "guaranteed-limits-only (requests default to limits)",
            vec![c(None, Some(100), None, Some(100 * MI))],
            Guaranteed,
        ),
        (
            "cpu limit only",
            vec![c(None, Some(100), None, None)],
            Burstable,
        ),
        (
            "zero request and zero limit are unset",
            vec![c(Some(0), Some(0), Some(0), Some(0))],
            BestEffort,
        ),
        (
            "memory-only guaranteed-looking",
            vec![c(None, None, Some(MI), Some(MI))],
            Burstable,
        ),
    ];
    for (name, containers, want) in cases {
        assert_eq!(qos_class(&containers), want, "{name}");
    }
}

#[test]
fn cpu_shares_match_kubelet() {
    // (request, limit, shares): MilliCPUToShares.
    let cases = [
        (None, None, 2),
        (Some(0), None, 2),
        (Some(1), None, 2),
        (Some(2), None, 2),
        (Some(3), None, 3),
        (Some(10), None, 10),
        (Some(100), None, 102),
        (Some(500), None, 512),
        (Some(1000), None, 1024),
        (Some(1500), None, 1536),
        (Some(300_000), None, 262_144),
        (None, Some(250), 256),
        (Some(100), Some(250), 102),
    ];
    for (req, lim, want) in cases {
        assert_eq!(cpu_shares(req, lim), want, "request {req:?} limit {lim:?}");
    }
}

#[test]
fn cpu_weight_matches_kubelet() {
    let cases = [
        (0, 1),
        (1, 1),
        (2, 1),
        (1024, 39),
        (262_144, 10_000),
        (500_000, 10_000),
        (2048, 79),
        (102, 4),
    ];
    for (shares, want) in cases {
        assert_eq!(cpu_weight_from_shares(shares), want, "shares {shares}");
    }
}

#[test]
fn cpu_quota_matches_kubelet() {
    // MilliCPUToQuota table from helpers_linux_test.go.
    let cases = [
        (0, 100_000, 0),
        (5, 100_000, 1000),
        (9, 100_000, 1000),
        (10, 100_000, 1000),
        (200, 100_000, 20_000),
        (500, 100_000, 50_000),
        (1000, 100_000, 100_000),
        (1500, 100_000, 150_000),
        (1500, 10_000, 15_000),
        (1500, 50_000, 75_000),
    ];
    for (milli, period, want) in cases {
        assert_eq!(cpu_quota(milli, period), want, "{milli}m over {period}us");
    }
}

#[test]
fn oom_score_adj_matches_kubelet() {
    let cap = 4000 * MI;
    assert_eq!(oom_score_adj(QosClass::Guaranteed, Some(cap), cap), -997);
    assert_eq!(oom_score_adj(QosClass::BestEffort, None, cap), 1000);
    // Burstable, request half the node: 500.
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(cap / 2), cap), 500);
    // Nearly all of the node: raised to 3, never below a Guaranteed pod.
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(cap - 1), cap), 3);
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(cap), cap), 3);
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(cap * 3), cap), 3);
    // No memory request: 1000 lowered to 999.
    assert_eq!(oom_score_adj(QosClass::Burstable, None, cap), 999);
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(1), cap), 999);
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(10 * MI), cap), 998);
    // Unknown capacity: no panic.
    assert_eq!(oom_score_adj(QosClass::Burstable, Some(MI), 0), 999);
}

fn pod(containers: Vec<ContainerResources>, pids: Option<i64>) -> PodSandboxConfig {
    PodSandboxConfig {
        init_containers: vec![],
        uid: "u1".into(),
        name: "p".into(),
        namespace: "default".into(),
        hostname: "p".into(),
        namespaces: NamespaceOptions::default(),
        containers,
        pids_limit: pids,
        shm_size_bytes: 64 * MI,
        dns: DnsConfig::default(),
        host_aliases: vec![],
        sysctls: Default::default(),
        pod_ip: None,
    }
}

#[test]
fn pod_cgroup_resources_match_kubelet() {
    // Guaranteed: sums of everything.
    let r = pod_cgroup_resources(&pod(
        vec![guaranteed(100, 100 * MI), guaranteed(200, 50 * MI)],
        Some(1024),
    ));
    assert_eq!(
        r,
        PodCgroupResources {
            cpu_shares: 307,
            cpu_quota: Some(30_000),
            cpu_period: 100_000,
            memory_limit: Some(150 * MI as i64),
            pids_limit: Some(1024),
        }
    );
    // Burstable, every container with both limits.
    let r = pod_cgroup_resources(&pod(
        vec![
            c(Some(100), Some(200), Some(MI), Some(2 * MI)),
            c(None, Some(100), None, Some(MI)),
        ],
        None,
    ));
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.memory_limit, r.pids_limit),
        (204, Some(30_000), Some(3 * MI as i64), None)
    );
    // Burstable, one container without limits: shares only.
    let r = pod_cgroup_resources(&pod(
        vec![
            c(Some(100), Some(200), Some(MI), Some(2 * MI)),
            c(Some(50), None, Some(MI), None),
        ],
        None,
    ));
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.memory_limit),
        (153, None, None)
    );
    // Burstable, cpu limits everywhere, memory limit missing on one.
    let r = pod_cgroup_resources(&pod(
        vec![
            c(None, Some(500), None, Some(MI)),
            c(None, Some(500), Some(MI), None),
        ],
        None,
    ));
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.memory_limit),
        (1024, Some(100_000), None)
    );
    // BestEffort: minimum shares, but the pids limit still applies.
    let r = pod_cgroup_resources(&pod(vec![best_effort()], Some(50)));
    assert_eq!(
        r,
        PodCgroupResources {
            pids_limit: Some(50),
            ..PodCgroupResources::unlimited()
        }
    );
    assert_eq!(r.cpu_shares, 2);
    // Tiny limit: quota floor of 1 ms.
    let r = pod_cgroup_resources(&pod(vec![guaranteed(1, MI)], None));
    assert_eq!((r.cpu_shares, r.cpu_quota), (2, Some(1000)));
    // A non-positive pids limit means unlimited.
    assert_eq!(pod_cgroup_resources(&pod(vec![], Some(0))).pids_limit, None);
}

#[test]
fn container_resources_for_the_oci_spec() {
    let r = container_linux_resources(&c(Some(250), Some(500), Some(64 * MI), Some(128 * MI)));
    let cpu = r.cpu().clone().expect("cpu");
    assert_eq!(cpu.shares(), Some(256));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(100_000));
    let mem = r.memory().expect("memory");
    assert_eq!(mem.limit(), Some(128 * MI as i64));
    assert_eq!(mem.swap(), Some(128 * MI as i64), "swap = limit: no swap");

    let r = container_linux_resources(&best_effort());
    let cpu = r.cpu().clone().expect("cpu");
    assert_eq!(
        (cpu.shares(), cpu.quota(), cpu.period()),
        (Some(2), None, None)
    );
    assert!(r.memory().is_none());

    // Limits only: requests default to them.
    let r = container_linux_resources(&c(None, Some(1000), None, Some(MI)));
    assert_eq!(r.cpu().clone().expect("cpu").shares(), Some(1024));
}

#[test]
fn layout_from_filesystem_magics() {
    let root = Path::new("/sys/fs/cgroup");
    assert_eq!(
        layout_from_magics(root, CGROUP2_SUPER_MAGIC, None).unwrap(),
        CgroupLayout::Unified
    );
    assert_eq!(
        layout_from_magics(root, TMPFS_MAGIC, Some(CGROUP2_SUPER_MAGIC)).unwrap(),
        CgroupLayout::Hybrid
    );
    assert_eq!(
        layout_from_magics(root, TMPFS_MAGIC, None).unwrap(),
        CgroupLayout::Legacy
    );
    assert_eq!(
        layout_from_magics(root, TMPFS_MAGIC, Some(TMPFS_MAGIC)).unwrap(),
        CgroupLayout::Legacy
    );
    let err = layout_from_magics(root, 0xEF53, None).unwrap_err();
    assert!(
        matches!(err, CgroupError::NotCgroupFs { magic: 0xEF53, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/sys/fs/cgroup"), "{err}");
}

#[test]
fn detect_layout_refuses_a_plain_directory() {
    let dir = tempfile::tempdir().unwrap();
    match herd_runtime::cgroups::detect_layout(dir.path()) {
        // /tmp may itself be a tmpfs: then it looks like a legacy root.
        Ok(layout) => assert_eq!(layout, CgroupLayout::Legacy),
        Err(e) => assert!(matches!(e, CgroupError::NotCgroupFs { .. }), "{e}"),
    }
    let missing = dir.path().join("nope");
    let err = herd_runtime::cgroups::detect_layout(&missing).unwrap_err();
    assert!(matches!(err, CgroupError::Statfs { .. }), "{err}");
}

#[test]
fn oom_kill_counter_parsing() {
    let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
    assert_eq!(parse_oom_kill_count(v2), 2);
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
    assert_eq!(parse_oom_kill_count(v1), 7);
    assert_eq!(parse_oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    assert_eq!(parse_oom_kill_count(""), 0);
    assert_eq!(parse_oom_kill_count("oom_kill garbage\n"), 0);
}

#[test]
fn init_containers_count_by_the_largest_not_the_sum() {
    // Two 100m/100Mi containers run together (200m / 200Mi); an init
    // container of 500m/150Mi runs alone before them: the pod gets
    // max(200m, 500m) of CPU and max(200Mi, 150Mi) of memory.
    let mut cfg = pod(
        vec![guaranteed(100, 100 * MI), guaranteed(100, 100 * MI)],
        None,
    );
    cfg.init_containers = vec![guaranteed(500, 150 * MI)];
    let r = pod_cgroup_resources(&cfg);
    assert_eq!(r.cpu_shares, 512);
    assert_eq!(r.cpu_quota, Some(50_000));
    assert_eq!(r.memory_limit, Some((200 * MI) as i64));
    // An init container without limits lifts the pod's limits.
    cfg.init_containers = vec![ContainerResources {
        cpu_request_millis: Some(10),
        ..Default::default()
    }];
    let r = pod_cgroup_resources(&cfg);
    assert_eq!(r.cpu_quota, None);
    assert_eq!(r.memory_limit, None);
    assert_eq!(r.cpu_shares, 204);
}
