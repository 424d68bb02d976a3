//! Node-pressure eviction end to end, as root: three pods (BestEffort,
//! Burstable within its request, Guaranteed) run on an agent whose
//! `--proc-root` is a copy of /proc where the test controls `meminfo`;
//! MemTotal then drops to 1 MiB so memory.available is under the 100Mi
//! threshold for real, and the pods are evicted in the kubelet's order:
//! BestEffort first, then Burstable, Guaranteed last.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use herd_integration::agent::{Agent, AgentOpts, pod, sh_container};
use serde_json::{Value, json};

/// A /proc look-alike: symlinks to every non-pid entry of /proc except
/// `meminfo`, which is a real file the test rewrites.
fn fake_proc(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let s = name.to_string_lossy();
        if s == "meminfo" || s.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.join(&name)).unwrap();
    }
    std::fs::write(dir.join("meminfo"), std::fs::read("/proc/meminfo").unwrap()).unwrap();
}

/// /proc/meminfo with MemTotal, MemFree and MemAvailable set to 1 MiB.
fn pressured_meminfo() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .map(|l| match l.split(':').next() {
            Some(k @ ("MemTotal" | "MemFree" | "MemAvailable")) => format!("{k}: 1024 kB"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn with_resources(requests: Value, limits: Value) -> Value {
    let mut c = sh_container("c", "sleep 3600");
    c["resources"] = json!({"requests": requests, "limits": limits});
    c
}

#[test]
fn pressure_evicts_best_effort_then_burstable_then_guaranteed() {
    if !herd_integration::root_or_skip("eviction", "runc, cgroups, mounts, network namespaces") {
        return;
    }
    let proc_dir = tempfile::Builder::new()
        .prefix("herd-e2e-proc-")
        .tempdir()
        .unwrap();
    let fake = proc_dir.path().join("proc");
    fake_proc(&fake);
    let opts = AgentOpts::default()
        .arg("--proc-root", &fake.to_string_lossy())
        .arg("--eviction-memory-available", "100Mi")
        .arg("--eviction-interval", "500ms");
    let a = Agent::start(env!("CARGO_BIN_EXE_herd"), "eviction", opts).unwrap();
    let spec = |c: Value| json!({"terminationGracePeriodSeconds": 0, "containers": [c]});
    a.create(&pod("besteffort", spec(sh_container("c", "sleep 3600"))))
        .unwrap();
    a.create(&pod(
        "burstable",
        spec(with_resources(json!({"memory": "16Mi"}), json!({}))),
    ))
    .unwrap();
    let g = json!({"memory": "64Mi", "cpu": "100m"});
    a.create(&pod("guaranteed", spec(with_resources(g.clone(), g))))
        .unwrap();
    for (name, qos) in [
        ("besteffort", "BestEffort"),
        ("burstable", "Burstable"),
        ("guaranteed", "Guaranteed"),
    ] {
        let p = a
            .wait_pod(name, Duration::from_secs(30), |p| {
                p["status"]["phase"] == "Running"
            })
            .unwrap();
        assert_eq!(p["status"]["qosClass"], qos, "{name}");
    }

    std::fs::write(fake.join("meminfo"), pressured_meminfo()).unwrap();
    // name → poll round it was first seen evicted (one pod per 500 ms check).
    let mut evicted: BTreeMap<String, u32> = BTreeMap::new();
    let mut round = 0u32;
    let mut phases = vec![];
    let deadline = Instant::now() + Duration::from_secs(15);
    while evicted.len() < 2 {
        round += 1;
        if Instant::now() > deadline {
            let status = |n: &str| a.get_pod(n).unwrap().map(|p| p["status"].clone());
            panic!(
                "evicted so far: {:?}\nbesteffort: {:?}\nburstable: {:?}",
                evicted.keys().collect::<Vec<_>>(),
                status("besteffort"),
                status("burstable"),
            );
        }
        for name in ["besteffort", "burstable", "guaranteed"] {
            if evicted.contains_key(name) {
                continue;
            }
            let Some(p) = a.get_pod(name).unwrap() else {
                panic!("{name} deleted instead of evicted");
            };
            if p["status"]["reason"] == "Evicted" {
                evicted.insert(name.to_string(), round);
                phases.push((name, p["status"]["phase"].clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        evicted.contains_key("besteffort") && evicted.contains_key("burstable"),
        "first two evicted: {:?}",
        evicted.keys().collect::<Vec<_>>()
    );
    assert!(
        evicted["besteffort"] < evicted["burstable"],
        "burstable evicted before or with besteffort: {evicted:?}"
    );
    for (name, phase) in &phases {
        assert_eq!(*phase, "Failed", "evicted pod {name} not Failed");
    }
    // Guaranteed goes last.
    let p = a
        .wait_pod("guaranteed", Duration::from_secs(10), |p| {
            p["status"]["reason"] == "Evicted"
        })
        .unwrap();
    assert_eq!(p["status"]["phase"], "Failed");
    std::fs::write(
        fake.join("meminfo"),
        std::fs::read("/proc/meminfo").unwrap(),
    )
    .unwrap();
}
