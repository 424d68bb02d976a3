//! End to end, as root: real `herd agent` clusters, each node in its own
//! network namespace on a test bridge (`herd_integration::agent::cluster`),
//! real runc and the busybox test image. Issue 6's acceptance:
//! - a Deployment spreads over 3 nodes, scales up and down, and a rolling
//!   update to a new image keeps replicas - maxUnavailable pods ready
//!   throughout; a pod reaches a pod on another node by IP and a Service
//!   ClusterIP answers from a pod on every node; a node with a wrong token
//!   is refused and forged gossip is dropped and counted;
//! - on 5 nodes: SIGKILL the leader (new leader within 2 s, every
//!   acknowledged write kept, new writes accepted), then SIGKILL a worker
//!   (its pods Running elsewhere within 10 s).
//!
//! Partition and whole-cluster restart are in `e2e_cluster_faults.rs`.
//! `herd apply` and `PUT /scale` without a resourceVersion can meet a 409
//! Conflict (the server makes the version it read a precondition, and the
//! controllers write the Deployment meanwhile); they are retried for up to
//! 10 s and each retry is printed as a `NOTE`.
//! Clusters are started one at a time (a lock), to keep the 2-core machine
//! able to meet the timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herd_integration::agent::IMAGE;
use herd_integration::agent::cluster::{Cluster, ClusterOpts, GOSSIP_PORT, is_ready, is_running};
use serde_json::{Value, json};

static SERIAL: Mutex<()> = Mutex::new(());

const V2: &str = "herd.test/busybox:v2";

fn cluster(test: &str, n: usize, opts: ClusterOpts) -> Option<Cluster> {
    if !herd_integration::root_or_skip(test, "runc, cgroups, mounts, network namespaces") {
        return None;
    }
    Some(Cluster::start(env!("CARGO_BIN_EXE_herd"), test, n, opts).unwrap())
}

/// A Deployment `name` (label app=name) of busybox httpd pods serving their
/// hostname (the pod name) on 8080, with a readiness probe and a CPU request
/// (so that least-allocated scoring spreads them), plus a Service `name`
/// (port 80 -> 8080).
fn web(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 1, maxSurge: 1}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - {{name: http, containerPort: 8080}}
        resources:
          requests: {{cpu: 100m, memory: 16Mi}}
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{port: 80, targetPort: http}}
"#
    )
}

/// `herd apply` through node `i`; a Conflict is retried (for up to 10 s)
/// and reported.
fn apply(c: &Cluster, i: usize, yaml: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conflicts = 0;
    loop {
        let out = c.node(i).apply(yaml).unwrap();
        if out.status != 0 && out.stderr.contains("Conflict") && Instant::now() < deadline {
            conflicts += 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(out.status, 0, "apply on node {i}: {out:?}");
        if conflicts > 0 {
            println!("NOTE: apply through node {i}: {conflicts} conflicts first");
        }
        return;
    }
}

fn wait_pods(
    c: &Cluster,
    from: usize,
    app: &str,
    want: (usize, bool),
    not_on: &[usize],
    t: Duration,
) -> Vec<Value> {
    c.wait_app(from, app, want, not_on, t).unwrap()
}

fn nodes_used(c: &Cluster, pods: &[Value]) -> BTreeSet<usize> {
    c.placement(pods).into_iter().flatten().collect()
}

/// PUT `/scale` without a resourceVersion; a 409 is retried (for up to
/// 10 s) and reported.
fn scale(c: &Cluster, i: usize, name: &str, replicas: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conflicts = 0;
    loop {
        let (status, body) = c
            .node(i)
            .http(
                "PUT",
                &format!("/apis/apps/v1/namespaces/default/deployments/{name}/scale"),
                Some(&json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"replicas": replicas}})),
            )
            .unwrap();
        if status == 409 && Instant::now() < deadline {
            conflicts += 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(status, 200, "scale {name} to {replicas}: {body}");
        if conflicts > 0 {
            println!(
                "NOTE: scale {name} to {replicas} through node {i}: {conflicts} conflicts (409) first"
            );
        }
        return;
    }
}

fn pod_name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap().to_string()
}

/// Retries `timeout 3 wget -q -O - URL` from `pod` until it answers (or
/// `t`). (Debian's busybox 1.35 wget segfaults with `-T`.)
fn fetch(c: &Cluster, pod: &str, url: &str, t: Duration) -> String {
    let deadline = Instant::now() + t;
    loop {
        let out = c
            .exec(0, pod, &["timeout", "3", "wget", "-q", "-O", "-", url])
            .unwrap();
        if out.status == 0 && !out.stdout.trim().is_empty() {
            return out.stdout.trim().to_string();
        }
        if Instant::now() > deadline {
            panic!(
                "{pod}: wget {url} failed for {t:?}: {out:?}\n{}",
                c.logs_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": name}})
}

fn configmap_names(c: &Cluster, i: usize) -> BTreeSet<String> {
    c.names(i, "/api/v1/namespaces/default/configmaps").unwrap()
}

/// Items 1, 2 and 7 on one 3-node cluster.
#[test]
fn deployment_spreads_scales_rolls_serves_and_intruders_are_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let v2 = tempfile::tempdir().unwrap();
    herd_integration::write_tags_layout(v2.path(), &[V2], &herd_integration::ImageOpts::new(V2))
        .unwrap();
    let opts = ClusterOpts {
        images: vec![v2.path().to_path_buf()],
        ..Default::default()
    };
    let Some(c) = cluster("spread", 3, opts) else {
        return;
    };

    // 1. Six replicas spread over the three nodes.
    apply(&c, 1, &web("web", 6, IMAGE));
    let pods = wait_pods(&c, 0, "web", (6, true), &[], Duration::from_secs(120));
    let used = nodes_used(&c, &pods);
    println!("6 replicas on nodes {:?}", c.placement(&pods));
    assert_eq!(
        used.len(),
        3,
        "6 replicas not on every node: {:?}",
        c.placement(&pods)
    );

    // 2. Pod to pod across nodes, by IP.
    let a = &pods[0];
    let na = c.index_of(a["spec"]["nodeName"].as_str().unwrap()).unwrap();
    let b = pods
        .iter()
        .find(|p| c.index_of(p["spec"]["nodeName"].as_str().unwrap()) != Some(na))
        .unwrap();
    let url = format!("http://{}:8080/", b["status"]["podIP"].as_str().unwrap());
    let got = fetch(&c, &pod_name(a), &url, Duration::from_secs(20));
    assert_eq!(got, pod_name(b), "pod {} -> {url}", pod_name(a));

    // 2. The Service's ClusterIP answers from a pod on every node.
    let svc = c
        .wait_for(
            0,
            "/api/v1/namespaces/default/services/web",
            Duration::from_secs(10),
            |s| s["spec"]["clusterIP"].is_string(),
        )
        .unwrap();
    let vip = format!("http://{}:80/", svc["spec"]["clusterIP"].as_str().unwrap());
    let names: BTreeSet<String> = pods.iter().map(pod_name).collect();
    for node in 0..3 {
        let p = pods
            .iter()
            .find(|p| c.index_of(p["spec"]["nodeName"].as_str().unwrap()) == Some(node))
            .unwrap();
        let got = fetch(&c, &pod_name(p), &vip, Duration::from_secs(20));
        assert!(
            names.contains(&got),
            "{vip} from node {node} answered {got:?}"
        );
    }

    // 1. Scale up to 9 and down to 3.
    scale(&c, 2, "web", 9);
    let pods = wait_pods(&c, 0, "web", (9, true), &[], Duration::from_secs(120));
    assert_eq!(nodes_used(&c, &pods).len(), 3, "{:?}", c.placement(&pods));
    scale(&c, 0, "web", 3);
    wait_pods(&c, 1, "web", (3, true), &[], Duration::from_secs(60));

    // 1. Rolling update to another image: sample every 100 ms; at least
    // replicas - maxUnavailable = 2 ready pods at every sample.
    apply(&c, 0, &web("web", 3, V2));
    let (mut min_ready, mut samples) = (usize::MAX, 0);
    let started = Instant::now();
    loop {
        let pods = c.app_pods(0, "web").unwrap();
        let ready = pods.iter().filter(|p| is_running(p) && is_ready(p)).count();
        min_ready = min_ready.min(ready);
        samples += 1;
        let done = pods.len() == 3
            && ready == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == V2);
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "rollout not done: {:?}\n{}",
            pods.iter()
                .map(|p| (
                    pod_name(p),
                    &p["spec"]["containers"][0]["image"],
                    is_ready(p)
                ))
                .collect::<Vec<_>>(),
            c.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "rollout to {V2}: {:?}, {samples} samples, minimum ready {min_ready}",
        started.elapsed()
    );
    assert!(
        min_ready >= 2,
        "only {min_ready} pods ready during the rollout"
    );
    c.wait_for(
        0,
        "/apis/apps/v1/namespaces/default/deployments/web",
        Duration::from_secs(30),
        |d| d["status"]["updatedReplicas"] == 3 && d["status"]["availableReplicas"] == 3,
    )
    .unwrap();

    // 7. A node with a wrong token is refused: the agent exits non-zero and
    // says why, and never becomes a member.
    let (hash, secret) = c.token().split_once("::").unwrap();
    let forged: String = secret
        .chars()
        .map(|ch| if ch == '0' { '1' } else { '0' })
        .collect();
    let mut intruder = c
        .start_outsider("intruder", &c.join_args(&format!("{hash}::{forged}")))
        .unwrap();
    let code = intruder.wait_exit(Duration::from_secs(60)).unwrap();
    let log = intruder.agent_log();
    assert!(
        matches!(code, Some(c) if c != 0),
        "intruder exit {code:?}:\n{log}"
    );
    assert!(
        log.to_lowercase().contains("token"),
        "no mention of the token:\n{log}"
    );
    println!(
        "wrong token refused, exit {code:?}: {}",
        herd_integration::agent::tail(&log, 1)
    );
    let members = c.status(0).unwrap()["members"].clone();
    assert!(
        !members.to_string().contains(&intruder.node_name),
        "intruder is a member: {members}"
    );
    drop(intruder);

    // 7. Forged gossip: random datagrams from the bridge netns are dropped
    // and counted; the cluster stays healthy and writable.
    let target = SocketAddr::from((c.addr(1), GOSSIP_PORT));
    let before = c.status(1).unwrap()["gossip"]["dropped"].as_u64().unwrap();
    // xorshift64: arbitrary bytes, reproducible.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut byte = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    let junk: Vec<Vec<u8>> = (0..100usize)
        .map(|k| (0..1 + (k * 37) % 1400).map(|_| byte()).collect())
        .collect();
    assert_eq!(c.send_udp_from_bridge(target, &junk).unwrap(), 100);
    let s = c
        .wait_for(1, "/debug/cluster", Duration::from_secs(10), |s| {
            s["gossip"]["dropped"]
                .as_u64()
                .is_some_and(|d| d >= before + 100)
        })
        .unwrap();
    println!(
        "gossip counters after 100 forged datagrams: {}",
        s["gossip"]
    );
    c.wait_healthy(Duration::from_secs(10)).unwrap();
    c.node(1).create(&configmap("after-forgery")).unwrap();
}

/// Items 3 and 4 (and a 5-replica spread) on 5 nodes.
#[test]
fn leader_and_worker_sigkill_on_five_nodes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut c) = cluster("failover", 5, ClusterOpts::default()) else {
        return;
    };
    apply(&c, 0, &web("spread", 5, IMAGE));
    let pods = wait_pods(&c, 0, "spread", (5, true), &[], Duration::from_secs(120));
    assert_eq!(nodes_used(&c, &pods).len(), 5, "{:?}", c.placement(&pods));

    // 3. Writes acknowledged right before the leader dies.
    let leader = c.leader().unwrap();
    let follower = (leader + 1) % 5;
    for k in 0..50 {
        let via = if k % 2 == 0 { leader } else { follower };
        c.node(via)
            .create(&configmap(&format!("acked-{k}")))
            .unwrap();
    }
    let old_term = c.status(leader).unwrap()["term"].as_u64().unwrap();
    c.kill9(leader).unwrap();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..5).filter(|&i| i != leader).collect();
    let new_leader = loop {
        let found = survivors.iter().copied().find(|&i| {
            c.status(i).is_ok_and(|s| {
                s["isLeader"] == true && s["term"].as_u64().is_some_and(|t| t > old_term)
            })
        });
        if let Some(l) = found {
            break l;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no new leader 30 s after the kill\n{}",
            c.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let failover = killed.elapsed();
    println!("leader failover: node {leader} -> node {new_leader} in {failover:?}");
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );
    for &i in &survivors {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let names = configmap_names(&c, i);
            let missing: Vec<_> = (0..50)
                .map(|k| format!("acked-{k}"))
                .filter(|n| !names.contains(n))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} lost acknowledged writes {missing:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let writer = *survivors.iter().find(|&&i| i != new_leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = c.node(writer).create(&configmap("after-failover")) {
        assert!(
            Instant::now() < deadline,
            "write after failover refused: {e:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 4. The dead leader's pod is replaced first; then a worker (a learner
    // if one runs pods) is killed and its pods must run elsewhere in 10 s.
    let pods = wait_pods(
        &c,
        new_leader,
        "spread",
        (5, true),
        &[leader],
        Duration::from_secs(60),
    );
    let st = c.status(new_leader).unwrap();
    let on = |i: usize| c.placement(&pods).contains(&Some(i));
    let learner = |i: usize| {
        st["learners"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n == c.node(i).node_name.as_str()))
    };
    let candidates: Vec<usize> = survivors
        .iter()
        .copied()
        .filter(|&i| i != new_leader && on(i))
        .collect();
    let worker = candidates
        .iter()
        .copied()
        .find(|&i| learner(i))
        .or(candidates.first().copied())
        .expect("no non-leader node runs a pod");
    c.kill9(worker).unwrap();
    let killed = Instant::now();
    wait_pods(
        &c,
        new_leader,
        "spread",
        (5, false),
        &[leader, worker],
        Duration::from_secs(60),
    );
    let replaced = killed.elapsed();
    println!("worker node {worker} killed: its pods Running elsewhere after {replaced:?}");
    assert!(
        replaced < Duration::from_secs(10),
        "replacement took {replaced:?}"
    );
}
