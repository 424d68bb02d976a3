//! Benchmark (ignored by default; root): herd-cni ADD/DEL against the
//! reference `bridge` + `host-local` plugins, each run as a process in a
//! node netns, 100 pods each, median and p99. Namespace creation is not
//! timed. Run with:
//!
//! `cargo test --release -p herd-cni --test plugin_bench -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod plugin_common;

use std::path::Path;
use std::time::{Duration, Instant};

use plugin_common::{TestNs, pod_env, root_or_skip, run_exe, unique};
use serde_json::{Value, json};

const RUNS: usize = 100;

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = v[(v.len() * 99 / 100).min(v.len() - 1)];
    (ms(v[v.len() / 2]), ms(p99))
}

/// ADD then DEL for `RUNS` pods; `del_after_ns_delete` deletes the pod
/// netns first (the fast teardown path) and DELs without CNI_NETNS.
fn cycle(
    exe: &Path,
    node: &TestNs,
    conf: &Value,
    tag: &str,
    del_after_ns_delete: bool,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    let stdin = conf.to_string();
    for i in 0..RUNS {
        let mut pod = Some(TestNs::new("hbp"));
        let netns = pod.as_ref().unwrap().path_str();
        let id = format!("{tag}{i}");
        let t = Instant::now();
        run_exe(
            exe,
            &pod_env("ADD", &id, &netns, "eth0"),
            &stdin,
            Some(&node.path),
        )
        .ok();
        adds.push(t.elapsed());
        let del_ns = if del_after_ns_delete {
            pod = None;
            ""
        } else {
            netns.as_str()
        };
        let t = Instant::now();
        run_exe(
            exe,
            &pod_env("DEL", &id, del_ns, "eth0"),
            &stdin,
            Some(&node.path),
        )
        .ok();
        dels.push(t.elapsed());
        drop(pod);
    }
    (adds, dels)
}

#[test]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
fn herd_cni_vs_reference_bridge_host_local() {
    if !root_or_skip("herd_cni_vs_reference_bridge_host_local") {
        return;
    }
    let node = TestNs::new("hbn");
    let dir = tempfile::tempdir().unwrap();
    let herd = Path::new(env!("CARGO_BIN_EXE_herd-cni"));
    let herd_conf = json!({"cniVersion": "1.0.0", "name": "benchnet", "type": "herd-cni",
        "bridge": unique("hbb"), "subnet": "10.66.8.0/24", "dataDir": dir.path()});
    let ref_conf = json!({"cniVersion": "1.0.0", "name": "refnet", "type": "bridge",
        "bridge": unique("hbr"), "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.66.9.0/24",
                 "dataDir": dir.path().join("host-local")}});
    let bridge = Path::new("/usr/lib/cni/bridge");
    // Warm-up: the bridges exist before timing starts.
    cycle(herd, &node, &herd_conf, "w", false);
    cycle(bridge, &node, &ref_conf, "w", false);
    let rows = [
        (
            "herd-cni (DEL with live netns)",
            cycle(herd, &node, &herd_conf, "h", false),
        ),
        (
            "herd-cni (netns deleted, then DEL)",
            cycle(herd, &node, &herd_conf, "f", true),
        ),
        (
            "bridge+host-local (DEL with live netns)",
            cycle(bridge, &node, &ref_conf, "r", false),
        ),
        (
            "bridge+host-local (netns deleted, then DEL)",
            cycle(bridge, &node, &ref_conf, "g", true),
        ),
    ];
    // Baseline: spawning the plugin in the node netns and doing nothing.
    let version: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            run_exe(herd, &[("CNI_COMMAND", "VERSION")], "{}", Some(&node.path)).ok();
            t.elapsed()
        })
        .collect();
    let (vm, vp) = stats(version);
    println!("\nherd-cni VERSION (process spawn baseline): median {vm:.2} ms, p99 {vp:.2} ms");
    println!("{RUNS} runs each, ms                  | ADD median | ADD p99 | DEL median | DEL p99");
    for (name, (adds, dels)) in rows {
        let (am, ap) = stats(adds);
        let (dm, dp) = stats(dels);
        println!("{name:<44} | {am:>10.2} | {ap:>7.2} | {dm:>10.2} | {dp:>7.2}");
    }
}
