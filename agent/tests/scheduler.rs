//! The scheduling loop against a real `LocalStore` (redb files in a temp
//! dir): binds respect resources, selectors, taints, anti-affinity and
//! topology spread; an unschedulable pod gets PodScheduled=False and is
//! bound once a node that fits appears; the loop stops on its signal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::scheduler::queue::Timing;
use herd_agent::scheduler::run::{RunConfig, run};
use herd_agent::store::local::LocalStore;
use herd_agent::store::{Datastore, Key};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Harness {
    store: Arc<LocalStore>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), herd_agent::scheduler::SchedulerError>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            LocalStore::open(
                &dir.path().join("store.redb"),
                &dir.path().join("secrets.redb"),
            )
            .unwrap(),
        );
        let (stop, rx) = watch::channel(false);
        let config = RunConfig {
            timing: Timing {
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                unschedulable_flush: Duration::from_secs(60),
            },
            ..RunConfig::default()
        };
        let dynstore: Arc<dyn Datastore> = store.clone();
        let task = tokio::spawn(run(dynstore, config, rx));
        Harness {
            store,
            stop,
            task: Some(task),
            _dir: dir,
        }
    }

    fn node(&self, name: &str, cpu: &str, labels: Value, taints: Value) {
        let mut l = labels.as_object().cloned().unwrap_or_default();
        l.insert("kubernetes.io/hostname".into(), json!(name));
        self.store
            .create(
                &Key::cluster(Resource::Nodes, name),
                json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": name, "labels": l},
                   "spec": {"taints": taints},
                   "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                              "conditions": [{"type": "Ready", "status": "True"}]}}),
            )
            .unwrap();
    }

    fn pod(&self, name: &str, cpu: &str, labels: Value, extra: Value) {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        self.store
            .create(
                &Key::namespaced(Resource::Pods, "default", name),
                json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "default", "labels": labels},
                   "spec": spec}),
            )
            .unwrap();
    }

    fn get(&self, name: &str) -> Value {
        self.store
            .get(&Key::namespaced(Resource::Pods, "default", name))
            .unwrap()
    }

    /// Polls until the pod is bound; returns its node.
    async fn bound(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.get(name);
            if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                return n.to_string();
            }
            assert!(Instant::now() < deadline, "pod {name} never bound: {p}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn label_of(&self, node: &str, key: &str) -> String {
        let n = self
            .store
            .get(&Key::cluster(Resource::Nodes, node))
            .unwrap();
        n["metadata"]["labels"][key].as_str().unwrap().to_string()
    }

    async fn stop(mut self) {
        self.stop.send(true).unwrap();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("scheduler did not stop")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_respect_resources_selectors_and_taints() {
    let h = Harness::start();
    h.node("big", "2", json!({"disk": "ssd"}), json!([]));
    h.node(
        "gpu",
        "8",
        json!({"disk": "ssd"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    h.node("small", "1", json!({"disk": "hdd"}), json!([]));
    h.pod("heavy", "1500m", json!({}), json!({}));
    assert_eq!(h.bound("heavy").await, "big");
    h.pod(
        "ssd",
        "100m",
        json!({}),
        json!({"nodeSelector": {"disk": "ssd"}}),
    );
    assert_eq!(h.bound("ssd").await, "big");
    h.pod(
        "trainer",
        "4",
        json!({}),
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                "effect": "NoSchedule"}]}),
    );
    assert_eq!(h.bound("trainer").await, "gpu");
    h.pod(
        "hdd",
        "100m",
        json!({}),
        json!({"nodeSelector": {"disk": "hdd"}}),
    );
    assert_eq!(h.bound("hdd").await, "small");
    // Bound pods carry PodScheduled=True.
    let p = h.get("heavy");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(p["status"]["conditions"][0]["status"], "True");
    // Another scheduler's pods are left alone.
    h.pod(
        "foreign",
        "1m",
        json!({}),
        json!({"schedulerName": "someone-else"}),
    );
    h.pod("marker", "1m", json!({}), json!({}));
    h.bound("marker").await;
    assert!(h.get("foreign").pointer("/spec/nodeName").is_none());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_affinity_and_topology_spread() {
    let h = Harness::start();
    let zone = "topology.kubernetes.io/zone";
    for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        h.node(n, "4", json!({zone: z}), json!([]));
    }
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..4 {
        h.pod(
            &format!("web-{i}"),
            "100m",
            json!({"app": "web"}),
            anti.clone(),
        );
    }
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(h.bound(&format!("web-{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["a1", "a2", "b1", "b2"], "one replica per node");

    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": zone,
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "db"}}}],
        "nodeSelector": {zone: "a"}});
    // All db pods are restricted to zone a by nodeSelector, but spread
    // counts only eligible nodes (nodeAffinityPolicy Honor): they bind.
    for i in 0..2 {
        h.pod(
            &format!("db-{i}"),
            "100m",
            json!({"app": "db"}),
            spread.clone(),
        );
        assert_eq!(h.label_of(&h.bound(&format!("db-{i}")).await, zone), "a");
    }
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": zone,
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "cache"}}}]});
    for i in 0..6 {
        h.pod(
            &format!("cache-{i}"),
            "100m",
            json!({"app": "cache"}),
            spread.clone(),
        );
    }
    let mut per_zone = BTreeMap::new();
    for i in 0..6 {
        let n = h.bound(&format!("cache-{i}")).await;
        *per_zone.entry(h.label_of(&n, zone)).or_insert(0) += 1;
    }
    assert_eq!(per_zone.into_values().collect::<Vec<_>>(), [3, 3]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_gets_condition_and_binds_when_a_node_appears() {
    let h = Harness::start();
    h.node("tiny", "500m", json!({}), json!([]));
    h.pod("large", "2", json!({}), json!({}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let cond = loop {
        let p = h.get("large");
        if let Some(c) = p.pointer("/status/conditions/0") {
            break c.clone();
        }
        assert!(Instant::now() < deadline, "no condition: {p}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(cond["type"], "PodScheduled");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(
        cond["message"],
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    assert!(h.get("large").pointer("/spec/nodeName").is_none());
    h.node("huge", "16", json!({}), json!([]));
    assert_eq!(h.bound("large").await, "huge");
    let p = h.get("large");
    assert_eq!(p["status"]["conditions"][0]["status"], "True");
    assert_eq!(p["status"]["conditions"].as_array().unwrap().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_resources_unpark_pods_and_stop_is_clean() {
    let h = Harness::start();
    h.node("only", "1", json!({}), json!([]));
    h.pod("first", "800m", json!({}), json!({}));
    assert_eq!(h.bound("first").await, "only");
    h.pod("second", "800m", json!({}), json!({}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h
        .get("second")
        .pointer("/status/conditions/0/reason")
        .is_none()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.store
        .delete(&Key::namespaced(Resource::Pods, "default", "first"), None)
        .unwrap();
    assert_eq!(h.bound("second").await, "only");
    h.stop().await;
}
