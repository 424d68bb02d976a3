//! Scheduler throughput (`cargo bench -p herd-agent --bench scheduler`).
//!
//! Simulated cluster: N nodes (default 1,000) of varied capacity (4-32 CPUs,
//! 16-128 GiB), labelled with hostname, one of 10 zones and a disk type;
//! 5% carry a NoSchedule taint and 5% a PreferNoSchedule one. P pods
//! (default 10,000): 45% plain, 15% nodeSelector, 15% hostname
//! anti-affinity groups of 5, 20% zone topology spread groups of 50
//! (maxSkew 1, DoNotSchedule), 5% tolerating the taint.
//!
//! (1) the pure algorithm: `Cache` + `schedule_batch` in batches of 256,
//! next to a baseline over the same cache and pods: next-fit (the first
//! node, from where the last pod went, that passes the stateless filters
//! and has the CPU/memory left; no scoring, no pod-to-pod constraints, so
//! it ignores anti-affinity and spread: a speed ceiling for one pass over
//! the filters, not an equal scheduler);
//! (2) end-to-end through the loop (`scheduler::run::run`) over a
//! `LocalStore`: pods are created first (untimed), then the time from the
//! loop's start until every pod is bound in the store, with the store on
//! the temp dir's disk (each binding is a redb commit with fsync) and on
//! tmpfs (`/dev/shm`, fsync is nearly free); the plain cost of one store
//! update on each is measured apart, so the fsync share is visible.
//!
//! Options: `--nodes N --pods P --e2e-pods E --disk-pods D --big 0|1`
//! (E defaults to P; D, the pods of the on-disk run, to 2,000 since every
//! pod costs two fsynced commits there, its creation and its binding;
//! `--big 1` adds an algorithm run at 5,000 nodes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::scheduler::run::{RunConfig, run};
use herd_agent::scheduler::{Config, PodInfo, Scheduler, filters};
use herd_agent::store::local::LocalStore;
use herd_agent::store::{Datastore, Key};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node_json(i: usize) -> Value {
    let name = format!("node-{i:05}");
    let cpu = [4, 8, 16, 32][i % 4];
    let mem = [16, 32, 64, 128][(i / 4) % 4];
    let taints = match i % 20 {
        0 => json!([{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]),
        1 => json!([{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}]),
        _ => json!([]),
    };
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 10),
            "disk": if i.is_multiple_of(3) { "ssd" } else { "hdd" }}},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": cpu.to_string(), "memory": format!("{mem}Gi"), "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod_json(i: usize) -> Value {
    let name = format!("pod-{i:05}");
    let cpu = ["50m", "100m", "250m", "500m"][i % 4];
    let mem = ["64Mi", "128Mi", "256Mi", "512Mi"][(i / 4) % 4];
    let mut labels = json!({"app": format!("plain-{}", i % 50)});
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu, "memory": mem}}}]});
    match i % 20 {
        // 15%: nodeSelector.
        0..=2 => spec["nodeSelector"] = json!({"disk": "ssd"}),
        // 15%: hostname anti-affinity, groups of 5 replicas.
        3..=5 => {
            // The running index among anti-affinity pods, 5 per group.
            let group = format!("anti-{}", (i / 20 * 3 + i % 20 - 3) / 5);
            labels = json!({"app": group});
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": group}},
                 "topologyKey": "kubernetes.io/hostname"}]}});
        }
        // 20%: zone spread, groups of ~50.
        6..=9 => {
            let group = format!("spread-{}", i / 250);
            labels = json!({"app": group});
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": group}}}]);
        }
        // 5%: tolerate the dedicated taint.
        10 => {
            spec["tolerations"] =
                json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]);
        }
        _ => {}
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec})
}

struct Row {
    what: String,
    pods: usize,
    secs: f64,
    note: String,
}

fn algorithm(nodes: usize, pods: usize) -> Row {
    let node_objs: Vec<Node> = (0..nodes)
        .map(|i| serde_json::from_value(node_json(i)).unwrap())
        .collect();
    let pod_objs: Vec<Pod> = (0..pods)
        .map(|i| serde_json::from_value(pod_json(i)).unwrap())
        .collect();
    let mut s = Scheduler::new(Config::default());
    for n in &node_objs {
        s.cache_mut().upsert_node(n).unwrap();
    }
    let start = Instant::now();
    let mut failed = 0;
    for chunk in pod_objs.chunks(256) {
        failed += s
            .schedule_batch(chunk)
            .iter()
            .filter(|(_, r)| r.is_err())
            .count();
    }
    let secs = start.elapsed().as_secs_f64();
    Row {
        what: format!("algorithm, {nodes} nodes"),
        pods,
        secs,
        note: format!("{failed} unschedulable"),
    }
}

/// The baseline (see the module docs): next-fit over the same cache.
fn next_fit(nodes: usize, pods: usize) -> Row {
    let node_objs: Vec<Node> = (0..nodes)
        .map(|i| serde_json::from_value(node_json(i)).unwrap())
        .collect();
    let names: Vec<String> = node_objs
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    let pod_objs: Vec<Pod> = (0..pods)
        .map(|i| serde_json::from_value(pod_json(i)).unwrap())
        .collect();
    let mut s = Scheduler::new(Config::default());
    for n in &node_objs {
        s.cache_mut().upsert_node(n).unwrap();
    }
    let cache = s.cache_mut();
    let start = Instant::now();
    let (mut failed, mut next) = (0, 0);
    for pod in &pod_objs {
        let info = PodInfo::parse(pod).unwrap();
        let want = &info.requests.exact;
        let fits = (0..names.len())
            .map(|k| (next + k) % names.len())
            .find(|&i| {
                let node = cache.node(&names[i]).unwrap();
                let used = cache.requested(&names[i]).unwrap();
                filters::node_unschedulable(&info, node).is_none()
                    && filters::node_name(&info, node).is_none()
                    && filters::taint_toleration(&info, node).is_none()
                    && filters::node_affinity(&info, node).is_none()
                    && want.milli_cpu <= node.allocatable.milli_cpu.saturating_sub(used.milli_cpu)
                    && want.memory <= node.allocatable.memory.saturating_sub(used.memory)
            });
        match fits {
            Some(i) => {
                cache.assume(info, &names[i]);
                next = i;
            }
            None => failed += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Row {
        what: format!("BASELINE next-fit, {nodes} nodes"),
        pods,
        secs,
        note: format!("{failed} unschedulable; filters + cpu/mem only, no scores"),
    }
}

fn open(dir: &Path) -> Arc<LocalStore> {
    Arc::new(LocalStore::open(&dir.join("store.redb"), &dir.join("secrets.redb")).unwrap())
}

/// Mean time of one store update (one redb commit).
fn write_cost(dir: &Path) -> Duration {
    let store = open(dir);
    let key = Key::namespaced(Resource::ConfigMaps, "default", "probe");
    store
        .create(
            &key,
            json!({"metadata": {"name": "probe"}, "data": {"n": "0"}}),
        )
        .unwrap();
    let n = 200;
    let start = Instant::now();
    for i in 0..n {
        store
            .update(
                &key,
                json!({"metadata": {"name": "probe"}, "data": {"n": i.to_string()}}),
                None,
            )
            .unwrap();
    }
    start.elapsed() / n
}

type Names = std::collections::HashSet<String>;

/// Pods bound and pods marked unschedulable, from a list.
fn count(store: &dyn Datastore) -> (Names, Names) {
    let (pods, _) = store.list(Resource::Pods, None).unwrap();
    let mut bound = Names::new();
    let mut parked = Names::new();
    for p in pods {
        let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
        if p.pointer("/spec/nodeName").is_some() {
            bound.insert(name);
        } else if p.pointer("/status/conditions/0/reason").is_some() {
            parked.insert(name);
        }
    }
    (bound, parked)
}

fn end_to_end(dir: &Path, label: &str, nodes: usize, pods: usize) -> Row {
    let store = open(dir);
    for i in 0..nodes {
        let v = node_json(i);
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        store
            .create(&Key::cluster(Resource::Nodes, &name), v)
            .unwrap();
    }
    for i in 0..pods {
        let v = pod_json(i);
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        store
            .create(&Key::namespaced(Resource::Pods, "default", &name), v)
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (secs, bound, parked) = rt.block_on(async {
        let mut watch = store.watch(Resource::Pods, None, None).unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let dynstore: Arc<dyn Datastore> = store.clone();
        let start = Instant::now();
        let task = tokio::spawn(run(dynstore, RunConfig::default(), rx));
        let mut done = std::collections::HashSet::new();
        let mut parked = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while done.len() + parked.len() < pods && Instant::now() < deadline {
            let ev = match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
                Ok(Ok(Some(ev))) => ev,
                Ok(Err(_)) => {
                    // This watcher fell behind: count from a list, watch on.
                    (done, parked) = count(&*store);
                    watch = store.watch(Resource::Pods, None, None).unwrap();
                    continue;
                }
                _ => break,
            };
            let name = ev.key.name.clone();
            if ev.object.pointer("/spec/nodeName").is_some() {
                parked.remove(&name);
                done.insert(name);
            } else if ev.object.pointer("/status/conditions/0/reason").is_some() {
                parked.insert(name);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
        (secs, done.len(), parked.len())
    });
    Row {
        what: format!("loop + LocalStore ({label}), {nodes} nodes"),
        pods: bound + parked,
        secs,
        note: format!("{bound} bound, {parked} unschedulable"),
    }
}

fn main() {
    let nodes = arg("--nodes", 1000);
    let pods = arg("--pods", 10_000);
    let e2e = arg("--e2e-pods", pods);
    let disk_pods = arg("--disk-pods", 2000);
    let mut rows = vec![algorithm(nodes, pods), next_fit(nodes, pods)];
    if nodes != 5000 && arg("--big", 1) == 1 {
        rows.push(algorithm(5000, pods));
    }
    let disk = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let disk_write = write_cost(disk.path());
    let shm_write = shm.as_ref().map(|d| write_cost(d.path()));
    if let Some(d) = shm.as_ref() {
        rows.push(end_to_end(d.path(), "tmpfs", nodes, e2e));
    }
    let disk2 = tempfile::tempdir().unwrap();
    rows.push(end_to_end(disk2.path(), "disk", nodes, disk_pods));
    println!();
    println!(
        "{:<44} {:>8} {:>9} {:>10}  note",
        "scheduler", "pods", "seconds", "pods/s"
    );
    for r in &rows {
        println!(
            "{:<44} {:>8} {:>9.3} {:>10.0}  {}",
            r.what,
            r.pods,
            r.secs,
            r.pods as f64 / r.secs,
            r.note
        );
    }
    println!();
    println!(
        "one store update (redb commit): disk {:.3} ms, tmpfs {}",
        disk_write.as_secs_f64() * 1e3,
        shm_write
            .map(|d| format!("{:.3} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "n/a".into())
    );
    println!(
        "goal: > 1000 pods/s at 1000 nodes (kube-scheduler CI: ~700-800 pods/s at 5000 nodes)"
    );
}
