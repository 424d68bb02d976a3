//! Cluster benchmarks on a real 3-node netns cluster (root;
//! `scripts/bench-cluster.sh`):
//! - leader failover: SIGKILL the leader, time until a survivor reports a
//!   new leader (higher term) and accepts a write through it; the killed
//!   node is restarted (untimed) before the next trial;
//! - node loss to replacement Running: a Deployment of 3 replicas, SIGKILL
//!   a non-leader agent running at least one of its pods, time until 3
//!   pods are Running again, none on that node; it is restarted (untimed);
//! - agent RSS (VmRSS) of every node, idle and with the Deployment.
//!
//! `--trials N` (default 10). Times come from polling the API every 10 ms
//! (failover) or 50 ms (replacement), which bounds their resolution.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_integration::agent::cluster::{Cluster, ClusterOpts, is_running};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(c: &Cluster) -> Vec<u64> {
    (0..c.len())
        .map(|i| {
            let pid = c.node(i).pid().unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap()
        })
        .collect()
}

fn stats(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    (s[s.len() / 2], s[s.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn configmap(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": name}})
}

/// SIGKILLs the leader; time until a survivor leads with a higher term and
/// a write through it is acknowledged.
fn failover_trial(c: &mut Cluster, trial: usize) -> Duration {
    let leader = c.leader().unwrap();
    let term = c.status(leader).unwrap()["term"].as_u64().unwrap();
    c.kill9(leader).unwrap();
    let t0 = Instant::now();
    let survivors: Vec<usize> = (0..c.len()).filter(|&i| i != leader).collect();
    loop {
        let new = survivors.iter().copied().find(|&i| {
            c.status(i).is_ok_and(|s| {
                s["isLeader"] == true && s["term"].as_u64().is_some_and(|t| t > term)
            })
        });
        if let Some(n) = new
            && c.node(n)
                .create(&configmap(&format!("failover-{trial}")))
                .is_ok()
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no failover in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    c.restart(leader).unwrap();
    c.wait_healthy(Duration::from_secs(60)).unwrap();
    took
}

/// SIGKILLs a non-leader agent running a pod of `bench`; time until 3 pods
/// Running, none on it.
fn replacement_trial(c: &mut Cluster) -> Duration {
    let leader = c.leader().unwrap();
    let mut pods = c
        .wait_app(leader, "bench", (3, false), &[], Duration::from_secs(60))
        .unwrap();
    // Pods drift to the nodes that stay up; when only the leader runs them,
    // delete one there (untimed) so that the scheduler places it elsewhere.
    while !c
        .placement(&pods)
        .iter()
        .any(|p| p.is_some_and(|i| i != leader))
    {
        let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
        c.node(leader).delete_pod(&name, Some(0)).unwrap();
        c.node(leader)
            .wait_gone(&name, Duration::from_secs(30))
            .unwrap();
        pods = c
            .wait_app(leader, "bench", (3, false), &[], Duration::from_secs(60))
            .unwrap();
    }
    let placed = c.placement(&pods);
    let victim = (0..c.len())
        .filter(|&i| i != leader)
        .max_by_key(|&i| placed.iter().filter(|p| **p == Some(i)).count())
        .unwrap();
    assert!(
        placed.contains(&Some(victim)),
        "no non-leader node runs a pod"
    );
    c.kill9(victim).unwrap();
    let t0 = Instant::now();
    loop {
        let pods = c.app_pods(leader, "bench").unwrap_or_default();
        let ok = pods.len() == 3
            && pods.iter().all(is_running)
            && !c.placement(&pods).contains(&Some(victim));
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no replacement in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    c.restart(victim).unwrap();
    c.wait_healthy(Duration::from_secs(60)).unwrap();
    took
}

fn main() {
    if !herd_integration::root_or_skip("bench cluster", "netns, runc, cgroups") {
        return;
    }
    let trials = arg("--trials", 10).max(1);
    let mut c = Cluster::start(
        env!("CARGO_BIN_EXE_herd"),
        "bench",
        3,
        ClusterOpts::default(),
    )
    .unwrap();
    let idle = rss_kib(&c);

    let failovers: Vec<Duration> = (0..trials).map(|t| failover_trial(&mut c, t)).collect();

    let out = c
        .node(0)
        .apply(&herd_integration::agent::sleeper_deployment("bench", 3))
        .unwrap();
    assert_eq!(out.status, 0, "apply: {out:?}");
    c.wait_app(0, "bench", (3, false), &[], Duration::from_secs(120))
        .unwrap();
    let busy = rss_kib(&c);
    let replacements: Vec<Duration> = (0..trials).map(|_| replacement_trial(&mut c)).collect();

    let (fm, fx) = stats(&failovers);
    let (rm, rx) = stats(&replacements);
    println!("\nherd cluster, 3 agents in network namespaces, {trials} trials");
    println!(
        "{:<48} {:>10} {:>10} {:>10}",
        "measure", "median", "max", "goal"
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10}",
        "leader failover (kill -> write acked)",
        ms(fm),
        ms(fx),
        "< 2 s"
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10}",
        "node loss -> 3 pods Running elsewhere",
        ms(rm),
        ms(rx),
        "< 10 s"
    );
    println!(
        "failover trials: {:?}",
        failovers.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    println!(
        "replacement trials: {:?}",
        replacements.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    println!(
        "\n{:<10} {:>14} {:>26}",
        "agent", "RSS idle", "RSS with 3-pod Deployment"
    );
    for i in 0..c.len() {
        println!(
            "{:<10} {:>10} MiB {:>22} MiB",
            format!("node {i}"),
            idle[i] / 1024,
            busy[i] / 1024
        );
    }
}
