//! Logic tests of the filters, scores and cache on small fixtures.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::*;

fn node(name: &str, cpu: &str, mem: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .unwrap()
}

fn plain(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/hostname".into(), json!(name));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    node(name, "4", "8Gi", Value::Object(l), json!([]))
}

fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    let mut s = json!({"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": s,
    }))
    .unwrap()
}

fn sched(nodes: &[Node]) -> Scheduler {
    let mut s = Scheduler::new(Config::default());
    for n in nodes {
        s.cache_mut().upsert_node(n).unwrap();
    }
    s
}

fn cpu_pod(name: &str, cpu: &str) -> Pod {
    pod(
        name,
        json!({}),
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
    )
}

#[test]
fn resources_and_taints_give_kube_scheduler_message() {
    let mut s = sched(&[
        node("a", "1", "1Gi", json!({}), json!([])),
        node("b", "1", "1Gi", json!({}), json!([])),
        node(
            "c",
            "8",
            "8Gi",
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        ),
    ]);
    let err = s.schedule(&cpu_pod("big", "2")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
    );
    // Requests of placed pods count: two 600m pods cannot share a 1-cpu node.
    let a = s.schedule(&cpu_pod("p1", "600m")).unwrap();
    let b = s.schedule(&cpu_pod("p2", "600m")).unwrap();
    assert_ne!(a, b);
    assert!(s.schedule(&cpu_pod("p3", "600m")).is_err());
    // Tolerating the taint opens node c.
    let tol = pod(
        "t",
        json!({}),
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}],
               "tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
    );
    assert_eq!(s.schedule(&tol).unwrap(), "c");
    assert_eq!(s.cache().requested("c").map(|r| r.milli_cpu), Some(2000));
}

#[test]
fn too_many_pods_and_extended_resources() {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "small"},
        "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "1", "example.com/gpu": "1"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    let mut s = sched(&[n]);
    let gpu = |name: &str, n: &str| {
        pod(
            name,
            json!({}),
            json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": n}}}]}),
        )
    };
    assert_eq!(
        s.schedule(&gpu("g2", "2")).unwrap_err().to_string(),
        "0/1 nodes are available: 1 Insufficient example.com/gpu."
    );
    s.schedule(&gpu("g1", "1")).unwrap();
    assert_eq!(
        s.schedule(&cpu_pod("x", "1m")).unwrap_err().to_string(),
        "0/1 nodes are available: 1 Too many pods."
    );
}

#[test]
fn node_selector_affinity_and_unschedulable() {
    let mut cordoned = plain("c", &[("disk", "ssd")]);
    cordoned.spec.get_or_insert_default().unschedulable = Some(true);
    let mut s = sched(&[
        plain("a", &[("disk", "ssd"), ("cores", "16")]),
        plain("b", &[("disk", "hdd"), ("cores", "4")]),
        cordoned,
    ]);
    let sel = pod("s", json!({}), json!({"nodeSelector": {"disk": "ssd"}}));
    assert_eq!(s.schedule(&sel).unwrap(), "a");
    let gt = pod(
        "g",
        json!({}),
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
        ]}}}}),
    );
    let first = s.schedule(&gt).unwrap();
    assert!(first == "a" || first == "b");
    let none = pod("n", json!({}), json!({"nodeSelector": {"disk": "nvme"}}));
    assert_eq!(
        s.schedule(&none).unwrap_err().to_string(),
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."
    );
    // The unschedulable taint's toleration overrides cordoning.
    let tol = pod(
        "t",
        json!({}),
        json!({"nodeSelector": {"kubernetes.io/hostname": "c"},
               "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                "effect": "NoSchedule"}]}),
    );
    assert_eq!(s.schedule(&tol).unwrap(), "c");
}

#[test]
fn not_ready_nodes_are_tainted() {
    let mut down = plain("down", &[]);
    if let Some(st) = down.status.as_mut() {
        st.conditions = None;
    }
    let mut s = sched(&[down]);
    assert_eq!(
        s.schedule(&cpu_pod("p", "1m")).unwrap_err().to_string(),
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    );
    let tol = pod(
        "t",
        json!({}),
        json!({"tolerations": [{"operator": "Exists"}]}),
    );
    assert_eq!(s.schedule(&tol).unwrap(), "down");
}

fn anti(app: &str, key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

#[test]
fn anti_affinity_spreads_one_per_node() {
    let mut s = sched(&[plain("a", &[]), plain("b", &[]), plain("c", &[])]);
    let mut used = Vec::new();
    for i in 0..3 {
        let p = pod(
            &format!("web-{i}"),
            json!({"app": "web"}),
            anti("web", "kubernetes.io/hostname"),
        );
        used.push(s.schedule(&p).unwrap());
    }
    used.sort();
    assert_eq!(used, ["a", "b", "c"]);
    let p = pod(
        "web-3",
        json!({"app": "web"}),
        anti("web", "kubernetes.io/hostname"),
    );
    assert_eq!(
        s.schedule(&p).unwrap_err().to_string(),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // A pod without terms but matching the existing pods' terms is kept
    // off too (existing pods' anti-affinity is symmetric).
    let p = pod("intruder", json!({"app": "web"}), json!({}));
    assert_eq!(
        s.schedule(&p).unwrap_err().to_string(),
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    // Other namespaces are not matched by default.
    let mut other = pod("web-x", json!({"app": "web"}), json!({}));
    other.metadata.namespace = Some("other".into());
    assert!(s.schedule(&other).is_ok());
    // Removing one frees its node.
    let on_b = s.cache().pods_on("b");
    s.cache_mut().remove_pod(&on_b[0]);
    let p = pod(
        "web-4",
        json!({"app": "web"}),
        anti("web", "kubernetes.io/hostname"),
    );
    assert_eq!(s.schedule(&p).unwrap(), "b");
}

#[test]
fn pod_affinity_follows_the_first_of_its_group() {
    let zone = "topology.kubernetes.io/zone";
    let mut s = sched(&[
        plain("a1", &[(zone, "a")]),
        plain("b1", &[(zone, "b")]),
        plain("b2", &[(zone, "b")]),
        plain("nozone", &[]),
    ]);
    let aff = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": zone}]}}});
    // No db pod yet and the pod does not match itself: nowhere.
    let cache_pod = pod("cache", json!({"app": "cache"}), aff.clone());
    let err = s.schedule(&cache_pod).unwrap_err().to_string();
    assert_eq!(
        err,
        "0/4 nodes are available: 4 node(s) didn't match pod affinity rules."
    );
    // The first db pod matches its own term: allowed on zoned nodes.
    let first = s
        .schedule(&pod("db-0", json!({"app": "db"}), aff.clone()))
        .unwrap();
    assert_ne!(first, "nozone");
    let z = s.cache().node(&first).unwrap().labels[zone].clone();
    for i in 1..4 {
        let n = s
            .schedule(&pod(&format!("db-{i}"), json!({"app": "db"}), aff.clone()))
            .unwrap();
        assert_eq!(s.cache().node(&n).unwrap().labels[zone], z);
    }
    let n = s.schedule(&cache_pod).unwrap();
    assert_eq!(s.cache().node(&n).unwrap().labels[zone], z);
}

fn spread(key: &str, when: &str, extra: Value) -> Value {
    let mut c = json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when,
                       "labelSelector": {"matchLabels": {"app": "s"}}});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({"topologySpreadConstraints": [c]})
}

#[test]
fn topology_spread_do_not_schedule() {
    let zone = "topology.kubernetes.io/zone";
    let mut s = sched(&[
        plain("a1", &[(zone, "a")]),
        plain("a2", &[(zone, "a")]),
        plain("b1", &[(zone, "b")]),
        plain("nozone", &[]),
    ]);
    let mut per_zone = std::collections::BTreeMap::new();
    for i in 0..6 {
        let n = s
            .schedule(&pod(
                &format!("s-{i}"),
                json!({"app": "s"}),
                spread(zone, "DoNotSchedule", json!({})),
            ))
            .unwrap();
        *per_zone
            .entry(s.cache().node(&n).unwrap().labels[zone].clone())
            .or_insert(0) += 1;
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [3, 3]);
    // minDomains 3 with only 2 zones: the global minimum counts as 0, so a
    // zone already at 3 exceeds maxSkew 1.
    let err = s
        .schedule(&pod(
            "s-x",
            json!({"app": "s"}),
            spread(zone, "DoNotSchedule", json!({"minDomains": 3})),
        ))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), 3 node(s) didn't match pod topology spread constraints."
    );
}

#[test]
fn topology_spread_schedule_anyway_prefers_emptier_domain() {
    let zone = "topology.kubernetes.io/zone";
    let mut s = sched(&[plain("a1", &[(zone, "a")]), plain("b1", &[(zone, "b")])]);
    for i in 0..3 {
        let p = pod(
            &format!("x-{i}"),
            json!({"app": "s"}),
            json!({"nodeName": ""}),
        );
        s.cache_mut().assume(PodInfo::parse(&p).unwrap(), "a1");
    }
    let n = s
        .schedule(&pod(
            "s",
            json!({"app": "s"}),
            spread(zone, "ScheduleAnyway", json!({})),
        ))
        .unwrap();
    assert_eq!(n, "b1");
}

#[test]
fn scores_prefer_free_untainted_and_preferred_nodes() {
    let mut s = sched(&[
        node("busy", "4", "8Gi", json!({}), json!([])),
        node("free", "4", "8Gi", json!({}), json!([])),
    ]);
    s.cache_mut()
        .assume(PodInfo::parse(&cpu_pod("hog", "3")).unwrap(), "busy");
    assert_eq!(s.schedule(&cpu_pod("p", "100m")).unwrap(), "free");

    let mut s = sched(&[
        node(
            "soft",
            "4",
            "8Gi",
            json!({}),
            json!([{"key": "k", "effect": "PreferNoSchedule"}]),
        ),
        node("clean", "4", "8Gi", json!({}), json!([])),
    ]);
    assert_eq!(s.schedule(&cpu_pod("p", "100m")).unwrap(), "clean");

    let mut s = sched(&[
        plain("x", &[("tier", "gold")]),
        plain("y", &[("tier", "bronze")]),
    ]);
    let pref = pod(
        "p",
        json!({}),
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gold"]}]}}]}}}),
    );
    assert_eq!(s.schedule(&pref).unwrap(), "x");

    // Preferred pod anti-affinity pushes away from a matching pod.
    let mut s = sched(&[plain("x", &[]), plain("y", &[])]);
    s.cache_mut().assume(
        PodInfo::parse(&pod("other", json!({"app": "a"}), json!({}))).unwrap(),
        "x",
    );
    let p = pod(
        "p",
        json!({}),
        json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "a"}},
             "topologyKey": "kubernetes.io/hostname"}}]}}}),
    );
    assert_eq!(s.schedule(&p).unwrap(), "y");
}

#[test]
fn sampling_and_determinism() {
    let s = Scheduler::new(Config::default());
    assert_eq!(s.nodes_to_find(50), 50);
    assert_eq!(s.nodes_to_find(100), 100);
    assert_eq!(s.nodes_to_find(1000), 420);
    assert_eq!(s.nodes_to_find(5000), 500);
    assert_eq!(s.nodes_to_find(200), 100);
    let run = || {
        let nodes: Vec<Node> = (0..10).map(|i| plain(&format!("n{i}"), &[])).collect();
        let mut s = sched(&nodes);
        let pods: Vec<Pod> = (0..20).map(|i| cpu_pod(&format!("p{i}"), "100m")).collect();
        s.schedule_batch(&pods)
            .into_iter()
            .map(|(_, r)| r.unwrap())
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "20 equal pods spread over 10 equal nodes: {a:?}"
    );
}

#[test]
fn cache_is_incremental_and_keeps_ghosts() {
    let mut s = sched(&[plain("a", &[]), plain("b", &[])]);
    let bound: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bound", "namespace": "default"},
        "spec": {"nodeName": "a", "containers": [{"name": "c",
            "resources": {"requests": {"cpu": "1"}}}]},
    }))
    .unwrap();
    s.cache_mut().upsert_pod(&bound).unwrap();
    assert_eq!(s.cache().requested("a").map(|r| r.milli_cpu), Some(1000));
    // Deleting the node keeps its pods counted on a ghost, not a node.
    assert!(s.cache_mut().remove_node("a"));
    assert_eq!(s.cache().node_count(), 1);
    assert_eq!(s.cache().pod_count(), 1);
    assert_eq!(s.schedule(&cpu_pod("p", "1")).unwrap(), "b");
    // A finished pod frees its requests.
    let mut done = bound.clone();
    done.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    s.cache_mut().upsert_pod(&done).unwrap();
    assert_eq!(s.cache().pod_count(), 1);
    assert!(s.cache().requested("a").is_none(), "ghost slot dropped");
    // Heartbeats alone are not changes.
    let b = plain("b", &[]);
    assert!(!s.cache_mut().upsert_node(&b).unwrap());
}

#[test]
fn invalid_pods_and_nodes_are_typed_errors() {
    let mut s = sched(&[plain("a", &[])]);
    let bad = pod(
        "bad",
        json!({}),
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
             "topologyKey": "kubernetes.io/hostname"}]}}}),
    );
    let err = s.schedule(&bad).unwrap_err();
    assert!(err.invalid.is_some());
    assert!(
        err.to_string()
            .starts_with("pod cannot be scheduled: invalid pod:"),
        "{err}"
    );
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "q"},
        "status": {"allocatable": {"cpu": "lots"}}}))
    .unwrap();
    assert!(matches!(
        s.cache_mut().upsert_node(&n),
        Err(SchedulerError::Quantity { .. })
    ));
    let empty = Scheduler::new(Config::default()).schedule(&cpu_pod("p", "1m"));
    assert_eq!(
        empty.unwrap_err().to_string(),
        "no nodes available to schedule pods"
    );
}

#[test]
fn replicaset_pods_spread_over_hosts_by_default() {
    // One node already carries a big unrelated pod: by allocation alone
    // the replicas would avoid it; the system default spread (hostname,
    // maxSkew 3, ScheduleAnyway) still gives every node some.
    let mut s = sched(&[plain("n1", &[]), plain("n2", &[]), plain("n3", &[])]);
    let big = cpu_pod("big", "1500m");
    s.cache_mut().assume(PodInfo::parse(&big).unwrap(), "n3");
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..9 {
        let mut p = pod(&format!("web-{i}"), json!({"app": "web"}), json!({}));
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                "uid": "u", "controller": true,
            }))
            .unwrap(),
        ]);
        let n = s.schedule(&p).unwrap();
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|c| *c >= 2), "{per_node:?}");
    // A pod without a controller gets no default constraint.
    let lone = PodInfo::parse(&pod("lone", json!({"app": "web"}), json!({}))).unwrap();
    assert!(lone.spread.is_empty());
}
