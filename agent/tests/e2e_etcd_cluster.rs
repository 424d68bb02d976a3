//! End to end, as root: 3 real `herd agent`s (each in its own network
//! namespace) whose datastore is a 3-member Debian etcd running in the
//! test bridge's namespace (`ClusterOpts::etcd`). Issue 9's acceptance:
//! - the cluster forms on etcd, a Deployment becomes available and its
//!   pods are keys under the cluster's prefix in etcd;
//! - SIGKILL the herd scheduler leader: another node leads within 2 s
//!   (the election lease's TTL is 1 s here, `--leader-lease-ttl 1s`), and
//!   a Deployment created afterwards gets its pods Running;
//! - SIGKILL the etcd leader while ConfigMaps are created through a node's
//!   API: herd keeps serving (creates succeed again within seconds) and no
//!   acknowledged create is lost.
//!
//! Measured times are printed. Clusters start one at a time (a lock).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herd_integration::agent::cluster::{Cluster, ClusterOpts};
use herd_integration::agent::sleeper_deployment;
use herd_integration::etcd::{EtcdOpts, etcd_or_skip};
use serde_json::json;

static SERIAL: Mutex<()> = Mutex::new(());

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn cluster(test: &str) -> Option<Cluster> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces")
        || !etcd_or_skip(test)
    {
        return None;
    }
    let opts = ClusterOpts {
        etcd: Some(EtcdOpts::default()),
        args: vec!["--leader-lease-ttl".into(), "1s".into()],
        ..Default::default()
    };
    let t = Instant::now();
    let c = Cluster::start(env!("CARGO_BIN_EXE_herd"), test, 3, opts).unwrap();
    println!("{test}: cluster on etcd up in {:?}", t.elapsed());
    Some(c)
}

/// `herd apply` through node `i`; a Conflict is retried (10 s).
fn apply(c: &Cluster, i: usize, yaml: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.node(i).apply(yaml).unwrap();
        if out.status != 0 && out.stderr.contains("Conflict") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(out.status, 0, "apply on node {i}: {out:?}");
        return;
    }
}

/// Keys under the cluster's prefix in etcd, read with etcdctl.
fn etcd_keys(c: &Cluster, under: &str) -> BTreeSet<String> {
    let prefix = format!("{}/{under}", c.datastore_prefix().unwrap());
    c.etcd()
        .unwrap()
        .etcdctl(&["get", "--prefix", &prefix, "--keys-only"])
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn cluster_on_etcd_serves_and_survives_a_scheduler_leader_kill() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut c) = cluster("etcdsched") else {
        return;
    };
    assert_eq!(c.status(0).unwrap()["datastore"], "etcd");
    apply(&c, 0, &sleeper_deployment("sleep", 3));
    let pods = c
        .wait_app(0, "sleep", (3, false), &[], Duration::from_secs(120))
        .unwrap();
    c.wait_for(
        1,
        "/apis/apps/v1/namespaces/default/deployments/sleep",
        Duration::from_secs(30),
        |d| d["status"]["availableReplicas"] == 3,
    )
    .unwrap();
    // The objects are really in etcd.
    let keys = etcd_keys(&c, "pods/default/");
    for p in &pods {
        let want = format!(
            "{}/pods/default/{}",
            c.datastore_prefix().unwrap(),
            p["metadata"]["name"].as_str().unwrap()
        );
        assert!(keys.contains(&want), "{want} not in etcd: {keys:?}");
    }
    assert!(
        etcd_keys(&c, "deployments/default/")
            .iter()
            .any(|k| k.ends_with("/deployments/default/sleep")),
    );

    // SIGKILL the scheduler leader; a survivor leads within 2 s.
    let leader = c.leader().unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.kill9(leader).unwrap();
    let killed = Instant::now();
    let new_leader = loop {
        let found = survivors.iter().copied().find(|&i| {
            c.status(i)
                .is_ok_and(|s| s["isLeader"] == true && s["leader"] == c.node(i).node_name.as_str())
        });
        if let Some(l) = found {
            break l;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no new leader 30 s after the kill\n{}",
            c.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let failover = killed.elapsed();
    println!("herd leader failover on etcd: node {leader} -> node {new_leader} in {failover:?}");
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );
    // Work scheduled by the new leader runs (not on the dead node).
    let t = Instant::now();
    apply(&c, new_leader, &sleeper_deployment("after", 2));
    c.wait_app(
        new_leader,
        "after",
        (2, false),
        &[leader],
        Duration::from_secs(90),
    )
    .unwrap();
    println!(
        "new Deployment Running {:?} after the failover",
        t.elapsed()
    );
}

#[test]
fn etcd_leader_killed_while_creating_through_herd() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut c) = cluster("etcdkill") else {
        return;
    };
    let etcd_leader = c.etcd().unwrap().leader().unwrap();
    let pid = c.etcd().unwrap().pid(etcd_leader).unwrap();
    let stop = AtomicBool::new(false);
    let acked_count = AtomicUsize::new(0);
    let (acked, retried, gap, killed_at) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let (mut acked, mut retried) = (BTreeSet::new(), 0usize);
            let mut successes: Vec<Instant> = vec![];
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("cm-{i:05}");
                let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"}, "data": {"k": "v"}});
                match c.node(1).http("POST", CONFIGMAPS, Some(&obj)) {
                    Ok((201, _)) => {
                        acked.insert(name);
                        successes.push(Instant::now());
                        acked_count.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    // A retry of a create whose first answer was lost.
                    Ok((409, body)) if body.contains("AlreadyExists") => i += 1,
                    Ok((status, _)) if status >= 500 => {
                        retried += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => {
                        retried += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok((status, body)) => panic!("create {name}: {status} {body}"),
                }
            }
            (acked, retried, successes)
        });
        let wait_acked = |n: usize, within: Duration| {
            let deadline = Instant::now() + within;
            while acked_count.load(Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} creates acknowledged, want {n}\n{}",
                    acked_count.load(Ordering::SeqCst),
                    c.logs_tail(20)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_acked(30, Duration::from_secs(30));
        // SIGKILL by exact pid (the fixture reaps it below).
        let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(p, rustix::process::Signal::KILL).unwrap();
        let killed_at = Instant::now();
        let before = acked_count.load(Ordering::SeqCst);
        wait_acked(before + 30, Duration::from_secs(30));
        stop.store(true, Ordering::SeqCst);
        let (acked, retried, successes) = writer.join().unwrap();
        // The longest stretch without a successful create after the kill.
        let mut last = killed_at;
        let mut gap = Duration::ZERO;
        for t in successes.iter().filter(|t| **t > killed_at) {
            gap = gap.max(t.duration_since(last));
            last = *t;
        }
        (acked, retried, gap, killed_at)
    });
    println!(
        "etcd leader e{etcd_leader} killed: {} creates acknowledged, {retried} retried; \
         longest gap after the kill {gap:?}",
        acked.len()
    );
    assert!(
        gap < Duration::from_secs(10),
        "herd stopped serving for {gap:?}"
    );
    let etcd = c.etcd_mut().unwrap();
    etcd.kill9(etcd_leader).unwrap();
    etcd.restart(etcd_leader).unwrap();
    println!(
        "etcd member e{etcd_leader} back {:?} after the kill",
        killed_at.elapsed()
    );
    let (status, body) = c
        .node(1)
        .http(
            "POST",
            CONFIGMAPS,
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "after-restart", "namespace": "default"}})),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    for i in 0..3 {
        let names = c.names(i, CONFIGMAPS).unwrap();
        let lost: Vec<&String> = acked.difference(&names).collect();
        assert!(lost.is_empty(), "node {i}: acknowledged but lost: {lost:?}");
        assert!(names.contains("after-restart"));
    }
    let keys = etcd_keys(&c, "configmaps/default/");
    assert!(keys.len() > acked.len(), "{} keys in etcd", keys.len());
}
