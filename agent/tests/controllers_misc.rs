//! Endpoints, EndpointSlices, garbage collection, namespace deletion and
//! node lifecycle against a real `LocalStore` (redb files in a temp dir).
//! Reconciles are called directly with an explicit `now`; one test runs
//! them under the runner with real watch events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::controllers::Controller;
use herd_agent::controllers::endpoints::EndpointsController;
use herd_agent::controllers::endpointslices::{
    EndpointSliceController, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
use herd_agent::controllers::gc::{FOREGROUND, GarbageCollector, ORPHAN, time_value};
use herd_agent::controllers::namespace::NamespaceController;
use herd_agent::controllers::nodelifecycle::{NodeLifecycleController, TAINT_UNREACHABLE};
use herd_agent::store::local::LocalStore;
use herd_agent::store::{Datastore, EventType, Key, StoreError, WatchEvent, resource_version};
use jiff::Timestamp;
use serde_json::{Value, json};

/// A temp dir on tmpfs when there is one (redb fsyncs every write).
fn tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempdir();
    let s = LocalStore::open(
        &dir.path().join("store.redb"),
        &dir.path().join("secrets.redb"),
    )
    .unwrap();
    (dir, s)
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn pod_key(ns: &str, name: &str) -> Key {
    Key::namespaced(Resource::Pods, ns, name)
}

fn pod(ns: &str, name: &str, ip: &str, ready: bool, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

fn put(s: &LocalStore, key: &Key, obj: Value) -> Value {
    match s.get(key) {
        Ok(cur) => s.update(key, obj, resource_version(&cur)).unwrap(),
        Err(StoreError::NotFound { .. }) => s.create(key, obj).unwrap(),
        Err(e) => panic!("{e}"),
    }
}

fn gone(s: &LocalStore, key: &Key) -> bool {
    matches!(s.get(key), Err(StoreError::NotFound { .. }))
}

fn service(ns: &str, name: &str, selector: Option<Value>) -> (Key, Value) {
    let mut svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-svc-{name}"), "labels": {"tier": "x"}},
        "spec": {"ports": [{"name": "web", "port": 80, "targetPort": "http"}]}});
    if let Some(sel) = selector {
        svc["spec"]["selector"] = sel;
    }
    (Key::namespaced(Resource::Services, ns, name), svc)
}

fn ips(ep: &Value, field: &str) -> Vec<String> {
    ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn endpoints_follow_readiness_and_ips_without_churn() {
    let (_d, s) = store();
    let c = EndpointsController::new();
    let (sk, svc) = service("default", "web", Some(json!({"app": "web"})));
    s.create(&sk, svc).unwrap();
    s.create(
        &pod_key("default", "a"),
        pod("default", "a", "10.1.0.1", true, Some("n1")),
    )
    .unwrap();
    s.create(
        &pod_key("default", "b"),
        pod("default", "b", "10.1.0.2", false, Some("n1")),
    )
    .unwrap();
    c.reconcile(&s, &sk, t(0)).unwrap();
    let ek = Key::namespaced(Resource::Endpoints, "default", "web");
    let ep = s.get(&ek).unwrap();
    assert_eq!(ips(&ep, "addresses"), ["10.1.0.1"]);
    assert_eq!(ips(&ep, "notReadyAddresses"), ["10.1.0.2"]);
    assert_eq!(
        ep["subsets"][0]["ports"],
        json!([{"name": "web", "port": 8080, "protocol": "TCP"}]),
        "named targetPort"
    );
    assert_eq!(ep["subsets"][0]["addresses"][0]["targetRef"]["name"], "a");
    assert_eq!(ep["subsets"][0]["addresses"][0]["nodeName"], "n1");
    assert_eq!(ep["metadata"]["labels"]["tier"], "x");

    // Nothing changed: no write.
    let rv = s.revision().unwrap();
    c.reconcile(&s, &sk, t(1)).unwrap();
    assert_eq!(
        s.revision().unwrap(),
        rv,
        "unchanged endpoints were rewritten"
    );

    // b turns ready, a changes IP.
    put(
        &s,
        &pod_key("default", "b"),
        pod("default", "b", "10.1.0.2", true, Some("n1")),
    );
    put(
        &s,
        &pod_key("default", "a"),
        pod("default", "a", "10.1.0.9", true, Some("n1")),
    );
    c.reconcile(&s, &sk, t(2)).unwrap();
    let ep = s.get(&ek).unwrap();
    assert_eq!(ips(&ep, "addresses"), ["10.1.0.2", "10.1.0.9"]);
    assert!(ips(&ep, "notReadyAddresses").is_empty());

    // A relabelled pod still wakes the service that listed it.
    let mut relabelled = pod("default", "a", "10.1.0.9", true, Some("n1"));
    relabelled["metadata"]["labels"] = json!({"app": "other"});
    let obj = put(&s, &pod_key("default", "a"), relabelled);
    let ev = WatchEvent {
        kind: EventType::Modified,
        key: pod_key("default", "a"),
        object: obj,
        resource_version: s.revision().unwrap(),
    };
    assert_eq!(c.keys_for(&s, &ev), vec![sk.clone()]);
    c.reconcile(&s, &sk, t(3)).unwrap();
    assert_eq!(ips(&s.get(&ek).unwrap(), "addresses"), ["10.1.0.2"]);

    // Selector-less services are left alone; deleted services lose theirs.
    let (mk, manual) = service("default", "manual", None);
    s.create(&mk, manual).unwrap();
    let mek = Key::namespaced(Resource::Endpoints, "default", "manual");
    s.create(
        &mek,
        json!({"metadata": {"name": "manual", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}]}]}),
    )
    .unwrap();
    let rv = s.revision().unwrap();
    c.reconcile(&s, &mk, t(4)).unwrap();
    assert_eq!(s.revision().unwrap(), rv);
    s.delete(&sk, None).unwrap();
    c.reconcile(&s, &sk, t(5)).unwrap();
    assert!(gone(&s, &ek));
    assert!(!gone(&s, &mek));
}

fn slices(s: &LocalStore, svc: &str) -> Vec<Value> {
    let (all, _) = s.list(Resource::EndpointSlices, Some("default")).unwrap();
    all.into_iter()
        .filter(|x| x["metadata"]["labels"][SERVICE_NAME_LABEL] == svc)
        .collect()
}

#[test]
fn slices_split_above_100_and_shrink_in_place() {
    let (_d, s) = store();
    let c = EndpointSliceController::default();
    let (sk, svc) = service("default", "big", Some(json!({"app": "web"})));
    s.create(&sk, svc).unwrap();
    for i in 0..201 {
        let name = format!("p{i:03}");
        let ip = format!("10.2.{}.{}", i / 200, i % 200 + 1);
        s.create(
            &pod_key("default", &name),
            pod("default", &name, &ip, i % 7 != 0, Some("n1")),
        )
        .unwrap();
    }
    c.reconcile(&s, &sk, t(0)).unwrap();
    let sl = slices(&s, "big");
    let mut sizes: Vec<usize> = sl
        .iter()
        .map(|x| x["endpoints"].as_array().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, [1, 100, 100]);
    for x in &sl {
        assert_eq!(x["addressType"], "IPv4");
        assert_eq!(x["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(x["metadata"]["ownerReferences"][0]["uid"], "uid-svc-big");
        assert_eq!(
            x["ports"],
            json!([{"name": "web", "port": 8080, "protocol": "TCP"}])
        );
    }
    let e0 = sl
        .iter()
        .flat_map(|x| x["endpoints"].as_array().unwrap())
        .find(|e| e["targetRef"]["name"] == "p000")
        .unwrap();
    assert_eq!(
        e0["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );
    assert_eq!(e0["nodeName"], "n1");

    let rv = s.revision().unwrap();
    c.reconcile(&s, &sk, t(1)).unwrap();
    assert_eq!(s.revision().unwrap(), rv, "unchanged slices were rewritten");

    // One pod terminating: only its slice is written.
    let mut p5 = s.get(&pod_key("default", "p005")).unwrap();
    p5["metadata"]["deletionTimestamp"] = time_value(t(2));
    put(&s, &pod_key("default", "p005"), p5);
    let rv = s.revision().unwrap();
    c.reconcile(&s, &sk, t(2)).unwrap();
    assert_eq!(s.revision().unwrap(), rv + 1, "exactly one slice written");
    let e5 = slices(&s, "big")
        .iter()
        .flat_map(|x| x["endpoints"].as_array().unwrap().clone())
        .find(|e| e["targetRef"]["name"] == "p005")
        .unwrap();
    assert_eq!(
        e5["conditions"],
        json!({"ready": false, "serving": true, "terminating": true})
    );

    // No pod selected any more.
    let (_, mut svc) = service("default", "big", Some(json!({"app": "none"})));
    svc["metadata"]["uid"] = json!("uid-svc-big");
    put(&s, &sk, svc);
    c.reconcile(&s, &sk, t(3)).unwrap();
    let sl = slices(&s, "big");
    assert_eq!(sl.len(), 1, "one placeholder");
    assert_eq!(sl[0]["endpoints"], json!([]));
    s.delete(&sk, None).unwrap();
    c.reconcile(&s, &sk, t(4)).unwrap();
    assert!(slices(&s, "big").is_empty());
}

fn owned(ns: &str, kind_res: Resource, name: &str, owners: Value) -> (Key, Value) {
    let key = Key::namespaced(kind_res, ns, name);
    let obj = json!({"apiVersion": kind_res.api_version(), "kind": kind_res.kind(),
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "ownerReferences": owners}});
    (key, obj)
}

fn owner_ref(name: &str, uid: &str, block: bool) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": block})
}

fn deleted_event(key: &Key, object: Value) -> WatchEvent {
    let resource_version = resource_version(&object).unwrap_or(0);
    WatchEvent {
        kind: EventType::Deleted,
        key: key.clone(),
        object,
        resource_version,
    }
}

#[test]
fn gc_background_deletes_orphans_by_uid() {
    let (_d, s) = store();
    let gc = GarbageCollector::new();
    let (rk, rs) = owned("default", Resource::ReplicaSets, "rs", json!([]));
    s.create(&rk, rs).unwrap();
    let (ak, a) = owned(
        "default",
        Resource::Pods,
        "a",
        json!([owner_ref("rs", "uid-rs", true)]),
    );
    s.create(&ak, a).unwrap();
    let (bk, mut b) = owned(
        "default",
        Resource::Pods,
        "b",
        json!([owner_ref("rs", "uid-rs", true)]),
    );
    b["spec"] = json!({"nodeName": "n1"});
    s.create(&bk, b).unwrap();
    let (ck, c) = owned(
        "default",
        Resource::ConfigMaps,
        "c",
        json!([
            owner_ref("rs", "uid-rs", false),
            owner_ref("other", "uid-other", false)
        ]),
    );
    s.create(&ck, c).unwrap();
    let (ok, o) = owned("default", Resource::ReplicaSets, "other", json!([]));
    s.create(&ok, o).unwrap();
    let keys = gc.all_keys(&s).unwrap();
    assert_eq!(keys.len(), 3);
    for k in &keys {
        gc.reconcile(&s, k, t(0)).unwrap();
    }
    assert!(!gone(&s, &ak), "owner alive");

    // Owner deleted and recreated with another uid: still orphans.
    let last = s.delete(&rk, None).unwrap();
    let (_, mut again) = owned("default", Resource::ReplicaSets, "rs", json!([]));
    again["metadata"]["uid"] = json!("uid-rs-2");
    s.create(&rk, again).unwrap();
    let mut keys = gc.keys_for(&s, &deleted_event(&rk, last));
    keys.sort();
    assert_eq!(keys, [ak.clone(), bk.clone(), ck.clone()]);
    for k in &keys {
        gc.reconcile(&s, k, t(0)).unwrap();
    }
    assert!(gone(&s, &ak));
    let b = s.get(&bk).unwrap();
    assert!(
        b["metadata"]["deletionTimestamp"].is_string(),
        "bound pod deleted gracefully"
    );
    let c = s.get(&ck).unwrap();
    assert_eq!(
        c["metadata"]["ownerReferences"],
        json!([owner_ref("other", "uid-other", false)]),
        "dangling ref dropped"
    );
}

#[test]
fn gc_foreground_waits_for_blocking_dependents() {
    let (_d, s) = store();
    let gc = GarbageCollector::new();
    let (rk, mut rs) = owned("default", Resource::ReplicaSets, "rs", json!([]));
    rs["metadata"]["deletionTimestamp"] = time_value(t(0));
    rs["metadata"]["finalizers"] = json!([FOREGROUND]);
    let (ak, mut a) = owned(
        "default",
        Resource::Pods,
        "a",
        json!([owner_ref("rs", "uid-rs", true)]),
    );
    a["spec"] = json!({"nodeName": "n1"});
    let (ck, c) = owned(
        "default",
        Resource::ConfigMaps,
        "c",
        json!([owner_ref("rs", "uid-rs", false)]),
    );
    s.create(&ak, a).unwrap();
    s.create(&ck, c).unwrap();
    s.create(&rk, rs).unwrap();
    gc.all_keys(&s).unwrap();
    gc.reconcile(&s, &rk, t(1)).unwrap();
    assert!(gone(&s, &ck));
    assert!(s.get(&ak).unwrap()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        s.get(&rk).unwrap()["metadata"]["finalizers"],
        json!([FOREGROUND]),
        "blocked by the bound pod"
    );

    // The kubelet finishes the pod: the owner goes.
    let last = s.delete(&ak, None).unwrap();
    let keys = gc.keys_for(&s, &deleted_event(&ak, last));
    assert!(keys.contains(&rk));
    gc.reconcile(&s, &rk, t(2)).unwrap();
    assert!(gone(&s, &rk));
}

#[test]
fn gc_orphan_strips_owner_references() {
    let (_d, s) = store();
    let gc = GarbageCollector::new();
    let (rk, mut rs) = owned("default", Resource::ReplicaSets, "rs", json!([]));
    rs["metadata"]["deletionTimestamp"] = time_value(t(0));
    rs["metadata"]["finalizers"] = json!([ORPHAN, "example.com/keep"]);
    let (ak, a) = owned(
        "default",
        Resource::Pods,
        "a",
        json!([owner_ref("rs", "uid-rs", true)]),
    );
    s.create(&ak, a).unwrap();
    s.create(&rk, rs).unwrap();
    assert_eq!(gc.all_keys(&s).unwrap().len(), 2);
    gc.reconcile(&s, &rk, t(1)).unwrap();
    let a = s.get(&ak).unwrap();
    assert!(a["metadata"].get("ownerReferences").is_none());
    assert!(a["metadata"].get("deletionTimestamp").is_none());
    let r = s.get(&rk).unwrap();
    assert_eq!(
        r["metadata"]["finalizers"],
        json!(["example.com/keep"]),
        "other finalizers stay"
    );
    // Without the other finalizer the owner is deleted.
    let mut r2 = r.clone();
    r2["metadata"]["finalizers"] = json!([ORPHAN]);
    put(&s, &rk, r2);
    gc.reconcile(&s, &rk, t(2)).unwrap();
    assert!(gone(&s, &rk));
}

#[test]
fn namespace_deletion_empties_then_deletes() {
    let (_d, s) = store();
    let c = NamespaceController::new();
    let nk = Key::cluster(Resource::Namespaces, "gone");
    s.create(
        &nk,
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "gone", "uid": "uid-ns", "deletionTimestamp": time_value(t(0))},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    )
    .unwrap();
    s.create(
        &pod_key("gone", "free"),
        pod("gone", "free", "10.3.0.1", true, None),
    )
    .unwrap();
    s.create(
        &pod_key("gone", "bound"),
        pod("gone", "bound", "10.3.0.2", true, Some("n1")),
    )
    .unwrap();
    let cm = |ns: &str| json!({"metadata": {"name": "cm", "namespace": ns, "uid": format!("uid-cm-{ns}")}});
    s.create(
        &Key::namespaced(Resource::ConfigMaps, "gone", "cm"),
        cm("gone"),
    )
    .unwrap();
    s.create(
        &Key::namespaced(Resource::ConfigMaps, "keep", "cm"),
        cm("keep"),
    )
    .unwrap();
    let (sk, svc) = service("gone", "svc", None);
    s.create(&sk, svc).unwrap();
    assert_eq!(c.all_keys(&s).unwrap(), vec![nk.clone()]);
    let again = c.reconcile(&s, &nk, t(1)).unwrap();
    assert!(again.is_some());
    let ns = s.get(&nk).unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(gone(&s, &pod_key("gone", "free")));
    assert!(gone(&s, &sk));
    assert!(gone(
        &s,
        &Key::namespaced(Resource::ConfigMaps, "gone", "cm")
    ));
    assert!(!gone(
        &s,
        &Key::namespaced(Resource::ConfigMaps, "keep", "cm")
    ));
    assert!(s.get(&pod_key("gone", "bound")).unwrap()["metadata"]["deletionTimestamp"].is_string());

    let last = s.delete(&pod_key("gone", "bound"), None).unwrap();
    assert_eq!(
        c.keys_for(&s, &deleted_event(&pod_key("gone", "bound"), last)),
        vec![nk.clone()]
    );
    assert_eq!(c.reconcile(&s, &nk, t(2)).unwrap(), None);
    assert!(gone(&s, &nk));
}

fn node(ready: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "uid-n1"},
        "spec": {}, "status": {"conditions": [{"type": "Ready", "status": ready}]}})
}

#[test]
fn node_lifecycle_taints_evicts_and_untaints() {
    let (_d, s) = store();
    let c = NodeLifecycleController::new(Duration::from_secs(5));
    let nk = Key::cluster(Resource::Nodes, "n1");
    s.create(&nk, node("True")).unwrap();
    let plain = pod("default", "plain", "10.4.0.1", true, Some("n1"));
    let mut forever = pod("default", "forever", "10.4.0.2", true, Some("n1"));
    forever["spec"]["tolerations"] =
        json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]);
    let mut thirty = pod("default", "thirty", "10.4.0.3", true, Some("n1"));
    thirty["spec"]["tolerations"] =
        json!([{"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]);
    let mut ds = pod("default", "ds", "10.4.0.4", true, Some("n1"));
    ds["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true}]);
    let other = pod("default", "elsewhere", "10.4.0.5", true, Some("n2"));
    for p in [plain, forever, thirty, ds, other] {
        let k = pod_key("default", p["metadata"]["name"].as_str().unwrap());
        s.create(&k, p).unwrap();
    }
    assert_eq!(
        c.reconcile(&s, &nk, t(0)).unwrap(),
        None,
        "ready node: nothing to do"
    );

    put(&s, &nk, node("Unknown"));
    let next = c.reconcile(&s, &nk, t(10)).unwrap();
    assert_eq!(next, Some(Duration::from_secs(5)));
    let n = s.get(&nk).unwrap();
    let taints = n["spec"]["taints"].as_array().unwrap();
    assert_eq!(taints.len(), 2);
    assert!(taints.iter().all(|x| x["key"] == TAINT_UNREACHABLE));
    let ready = |name: &str| {
        s.get(&pod_key("default", name)).unwrap()["status"]["conditions"][0]["status"].clone()
    };
    assert_eq!(ready("plain"), "False", "marked not ready");
    assert_eq!(ready("elsewhere"), "True");

    // Before the grace: nothing evicted; at the grace: plain goes.
    let rv = s.revision().unwrap();
    assert_eq!(
        c.reconcile(&s, &nk, t(12)).unwrap(),
        Some(Duration::from_secs(3))
    );
    assert_eq!(s.revision().unwrap(), rv);
    let next = c.reconcile(&s, &nk, t(15)).unwrap();
    let terminating = |name: &str| {
        s.get(&pod_key("default", name))
            .map(|p| p["metadata"]["deletionTimestamp"].is_string())
    };
    assert!(terminating("plain").unwrap());
    assert!(
        !terminating("thirty").unwrap()
            && !terminating("forever").unwrap()
            && !terminating("ds").unwrap()
    );
    assert_eq!(
        next,
        Some(Duration::from_secs(25)),
        "thirty's deadline at t(40)"
    );

    // The unreachable kubelet cannot finish plain: removed after its grace.
    c.reconcile(&s, &nk, t(46)).unwrap();
    assert!(gone(&s, &pod_key("default", "plain")));
    assert!(terminating("thirty").unwrap());
    assert!(!terminating("forever").unwrap() && !terminating("ds").unwrap());

    put(&s, &nk, node("True"));
    c.reconcile(&s, &nk, t(50)).unwrap();
    assert!(s.get(&nk).unwrap()["spec"].get("taints").is_none());
    assert!(!terminating("forever").unwrap());
}

/// Polls `f` until it holds (10 s deadline).
async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_drives_endpoints_and_gc() {
    use herd_agent::controllers::runner::{RunnerConfig, run_with};
    let dir = tempdir();
    let s: Arc<LocalStore> = Arc::new(
        LocalStore::open(
            &dir.path().join("store.redb"),
            &dir.path().join("secrets.redb"),
        )
        .unwrap(),
    );
    let controllers: Vec<Arc<dyn Controller>> = vec![
        Arc::new(EndpointsController::new()),
        Arc::new(GarbageCollector::new()),
        Arc::new(NamespaceController::new()),
    ];
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = RunnerConfig {
        resync: Duration::from_secs(600),
        ..RunnerConfig::default()
    };
    let handle = run_with(s.clone(), controllers, stop, config);

    let (sk, svc) = service("default", "web", Some(json!({"app": "web"})));
    s.create(&sk, svc).unwrap();
    let (rk, rs) = owned("default", Resource::ReplicaSets, "rs", json!([]));
    s.create(&rk, rs).unwrap();
    let mut p = pod("default", "a", "10.5.0.1", true, None);
    p["metadata"]["ownerReferences"] = json!([owner_ref("rs", "uid-rs", true)]);
    s.create(&pod_key("default", "a"), p).unwrap();

    let ek = Key::namespaced(Resource::Endpoints, "default", "web");
    wait_for("endpoints", || {
        s.get(&ek)
            .is_ok_and(|e| ips(&e, "addresses") == ["10.5.0.1"])
    })
    .await;
    s.delete(&rk, None).unwrap();
    wait_for("gc of the pod", || gone(&s, &pod_key("default", "a"))).await;
    wait_for("endpoints emptied", || {
        s.get(&ek).is_ok_and(|e| ips(&e, "addresses").is_empty())
    })
    .await;
    stop_tx.send(true).unwrap();
    handle.await.unwrap();
}
