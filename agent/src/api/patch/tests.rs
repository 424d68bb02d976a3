//! Table-driven tests of the patch engine, with the patches kubectl sends.
//!
//! The strategic cases follow the facts of the strategicpatch test tables in
//! kubernetes/apimachinery (merge by key, `$patch` in maps and lists,
//! `$retainKeys`, `$setElementOrder`, `$deleteFromPrimitiveList`), mapped
//! onto the served kinds' real fields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;
use crate::api::error::Reason;

fn no_directives(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .all(|(k, v)| !k.starts_with('$') && no_directives(v)),
        Value::Array(a) => a.iter().all(no_directives),
        _ => true,
    }
}

fn deployment(image: &str, env: Value, ports: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image, "env": env, "ports": ports,
                                          "args": ["a", "b"]}]}
            }
        }
    })
}

fn smp(live: &Value, p: Value, r: Resource) -> Result<Value, ApiError> {
    patch(live, p.to_string().as_bytes(), PatchType::Strategic, r)
}

#[test]
fn content_types() {
    let cases = [
        ("application/json-patch+json", Some(PatchType::Json)),
        ("application/merge-patch+json", Some(PatchType::Merge)),
        (
            "application/strategic-merge-patch+json",
            Some(PatchType::Strategic),
        ),
        ("application/apply-patch+yaml", Some(PatchType::Apply)),
        (
            "application/apply-patch+yaml; charset=utf-8",
            Some(PatchType::Apply),
        ),
        ("application/apply-patch+json", Some(PatchType::Apply)),
        ("application/json", None),
    ];
    for (ct, want) in cases {
        assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        if let Some(t) = want {
            assert_eq!(PatchType::from_content_type(t.content_type()), want);
        }
    }
}

/// Client-side `kubectl apply` of an edited manifest: new image, env `X`
/// and port 8080 removed. The patch is the three-way shape kubectl 1.32
/// sends (`$setElementOrder` for every merged list it touches, deletions as
/// `$patch: delete` items).
#[test]
fn client_side_apply_three_way_patch() {
    let live = deployment(
        "busybox:1",
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]),
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8080, "protocol": "TCP"}]),
    );
    let last = "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}";
    let p = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [{
                "name": "c", "image": "busybox:2",
                "$setElementOrder/env": [{"name": "Y"}],
                "env": [{"name": "X", "$patch": "delete"}],
                "$setElementOrder/ports": [{"containerPort": 80}],
                "ports": [{"containerPort": 8080, "$patch": "delete"}]
            }]
        }}}
    });
    let out = smp(&live, p, Resource::Deployments).unwrap();
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:2");
    assert_eq!(c["env"], json!([{"name": "Y", "value": "2"}]));
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(c["args"], json!(["a", "b"]));
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        last
    );
    assert_eq!(
        out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert!(no_directives(&out), "{out}");
}

/// One strategic case: name, resource, live, patch, expected value at the
/// pointer, pointer.
pub(super) type Case = (&'static str, Resource, Value, Value, Value, &'static str);

/// The strategic cases; `tests_oracle` replays them through real kubectl.
pub(super) fn strategic_case_table() -> Vec<Case> {
    let pod = |spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
    vec![
        (
            "merge list by key and append new item",
            Resource::Pods,
            pod(json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]})),
            json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "c", "image": "3"}]}}),
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]),
            "/spec/containers",
        ),
        (
            "$patch: replace in a list",
            Resource::Pods,
            pod(json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]})),
            json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"$patch": "replace"}]}}),
            json!([{"name": "b", "image": "2"}]),
            "/spec/containers",
        ),
        (
            "$patch: replace in a map",
            Resource::Pods,
            pod(json!({"nodeSelector": {"a": "1", "b": "2"}})),
            json!({"spec": {"nodeSelector": {"$patch": "replace", "c": "3"}}}),
            json!({"c": "3"}),
            "/spec/nodeSelector",
        ),
        (
            "$patch: delete of a map leaves it empty, as in Go",
            Resource::Pods,
            pod(json!({"nodeSelector": {"a": "1"}, "hostname": "h"})),
            json!({"spec": {"nodeSelector": {"$patch": "delete"}}}),
            json!({"hostname": "h", "nodeSelector": {}}),
            "/spec",
        ),
        (
            "null deletes a key",
            Resource::Pods,
            pod(json!({"nodeSelector": {"a": "1", "b": "2"}})),
            json!({"spec": {"nodeSelector": {"a": null}}}),
            json!({"b": "2"}),
            "/spec/nodeSelector",
        ),
        (
            "list without merge key is replaced",
            Resource::Pods,
            pod(
                json!({"tolerations": [{"key": "a"}, {"key": "b"}], "containers": [{"name": "a", "args": ["x", "y"]}]}),
            ),
            json!({"spec": {"tolerations": [{"key": "c"}], "containers": [{"name": "a", "args": ["z"]}]}}),
            json!({"tolerations": [{"key": "c"}], "containers": [{"name": "a", "args": ["z"]}]}),
            "/spec",
        ),
        (
            "$setElementOrder reorders",
            Resource::Pods,
            pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
            json!([{"name": "b"}, {"name": "a"}]),
            "/spec/containers",
        ),
        (
            "server-only items keep their place",
            Resource::Pods,
            pod(
                json!({"containers": [{"name": "c", "env": [{"name": "A"}, {"name": "S"}, {"name": "B"}]}]}),
            ),
            json!({"spec": {"containers": [{"name": "c",
                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}]}]}}),
            json!([{"name": "A"}, {"name": "S"}, {"name": "B"}, {"name": "C", "value": "3"}]),
            "/spec/containers/0/env",
        ),
        (
            "$retainKeys drops the other volume source",
            Resource::Pods,
            pod(json!({"volumes": [{"name": "v", "hostPath": {"path": "/x"}}]})),
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["emptyDir", "name"], "emptyDir": {}}]}}),
            json!([{"name": "v", "emptyDir": {}}]),
            "/spec/volumes",
        ),
        (
            "$retainKeys on the deployment strategy (Recreate)",
            Resource::Deployments,
            deployment("i", json!([]), json!([])),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            json!({"type": "Recreate"}),
            "/spec/strategy",
        ),
        (
            "finalizers: merged primitive list with deletions and order",
            Resource::ConfigMaps,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "finalizers": ["a", "b"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "c"], "$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}}),
            json!(["b", "c"]),
            "/metadata/finalizers",
        ),
        (
            "service ports merge by port",
            Resource::Services,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}]),
            "/spec/ports",
        ),
        (
            "status conditions merge by type",
            Resource::Pods,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]),
            "/status/conditions",
        ),
        (
            // normalizeElementOrder: a patch item that the live list does
            // not order against comes before the server-only items.
            "ownerReferences merge by uid",
            Resource::Pods,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "ownerReferences": [{"uid": "1", "name": "a"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}),
            json!([{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]),
            "/metadata/ownerReferences",
        ),
        (
            "a new item's directives are consumed",
            Resource::Pods,
            pod(json!({"containers": [{"name": "a"}]})),
            json!({"spec": {"containers": [{"name": "b", "$setElementOrder/env": [{"name": "E"}], "env": [{"name": "E", "value": "1"}]}]}}),
            // As in the kubectl patch task page: the new container first.
            json!([{"name": "b", "env": [{"name": "E", "value": "1"}]}, {"name": "a"}]),
            "/spec/containers",
        ),
        (
            // kubectl rollout restart
            "template annotation",
            Resource::Deployments,
            deployment("i", json!([]), json!([])),
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-24T01:00:00Z"}}}}}),
            json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-24T01:00:00Z"}}),
            "/spec/template/metadata",
        ),
    ]
}

#[test]
fn strategic_cases() {
    for (name, r, live, p, want, at) in strategic_case_table() {
        let out = smp(&live, p, r).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.pointer(at), Some(&want), "{name}: {out}");
        assert!(no_directives(&out), "{name}: {out}");
    }
}

#[test]
fn strategic_errors_name_the_field() {
    let live = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
    let cases = [
        (json!({"spec": {"containers": "x"}}), "spec.containers"),
        (json!({"spec": {"containers": [1]}}), "spec.containers"),
        (
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            "merge key: name",
        ),
        (
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            "merge key: name",
        ),
        (json!({"spec": {"$patch": "frob"}}), "spec"),
        (json!({"spec": {"$bogus": 1}}), "unknown directive"),
        (
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": "x"}]}}),
            "$retainKeys",
        ),
        (
            json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"], "emptyDir": {}}]}}),
            "not retained",
        ),
        (
            json!({"metadata": {"finalizers": [{"a": 1}]}}),
            "metadata.finalizers",
        ),
        (json!({"$patch": "delete"}), "DELETE"),
        (json!([1]), "object"),
    ];
    for (p, needle) in cases {
        let e = smp(&live, p.clone(), Resource::Pods).unwrap_err();
        assert_eq!(e.reason, Reason::BadRequest, "{p}");
        assert!(e.message.contains(needle), "{p}: {}", e.message);
    }
}

#[test]
fn hostile_input_does_not_panic() {
    let live = json!({"metadata": {"name": "p"}, "spec": {}});
    // Deeper than the JSON parser allows.
    let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    for ty in [PatchType::Merge, PatchType::Strategic, PatchType::Json] {
        assert!(patch(&live, deep.as_bytes(), ty, Resource::Pods).is_err());
    }
    // A huge merged list stays linear.
    let items: Vec<Value> = (0..50_000)
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let p = json!({"spec": {"containers": items}});
    let out = smp(&live, p, Resource::Pods).unwrap();
    assert_eq!(
        out["spec"]["containers"].as_array().map(Vec::len),
        Some(50_000)
    );
    let e = apply(
        None,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "x"}}),
        "m",
        false,
        Resource::Pods,
        "t",
    );
    assert!(
        e.is_ok(),
        "an atomic-looking value is stored as is and left to validation"
    );
    let e = apply(None, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": ["x"]}}), "m", false, Resource::Pods, "t").unwrap_err();
    assert!(e.message.contains("spec.containers[0]"), "{}", e.message);
}

/// `kubectl rollout undo deployment` sends a JSON patch replacing the
/// template and the annotations.
#[test]
fn rollout_undo_json_patch() {
    let live = deployment("busybox:2", json!([]), json!([]));
    let old_template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}});
    let p = json!([
        {"op": "replace", "path": "/spec/template", "value": old_template},
        {"op": "replace", "path": "/metadata/annotations", "value": {"deployment.kubernetes.io/revision": "1"}}
    ]);
    let out = patch(
        &live,
        p.to_string().as_bytes(),
        PatchType::Json,
        Resource::Deployments,
    )
    .unwrap();
    assert_eq!(out["spec"]["template"], old_template);
    assert_eq!(out["spec"]["replicas"], 1);
    // A failed test op: 422 with the API server's message.
    let p = json!([{"op": "test", "path": "/spec/replicas", "value": 5}]);
    let e = patch(
        &live,
        p.to_string().as_bytes(),
        PatchType::Json,
        Resource::Deployments,
    )
    .unwrap_err();
    assert_eq!(e.code(), 422);
    assert_eq!(
        e.message,
        "the server rejected our request due to an error in our request"
    );
    assert_eq!(e.causes[0].field, "/spec/replicas");
    let e = patch(&live, b"{", PatchType::Json, Resource::Deployments).unwrap_err();
    assert_eq!(e.code(), 400);
}

/// `kubectl scale` (merge patch on the scale subresource), `kubectl label`
/// and `kubectl annotate` (merge patches) through [`patch`].
#[test]
fn kubectl_merge_patches() {
    let live = deployment("i", json!([]), json!([]));
    let cases = [
        (json!({"spec": {"replicas": 3}}), "/spec/replicas", json!(3)),
        (
            json!({"metadata": {"labels": {"tier": "fe"}}}),
            "/metadata/labels",
            json!({"tier": "fe"}),
        ),
        (
            json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": null, "note": "x"}}}),
            "/metadata/annotations",
            json!({"note": "x"}),
        ),
    ];
    for (p, at, want) in cases {
        let out = patch(
            &live,
            p.to_string().as_bytes(),
            PatchType::Merge,
            Resource::Deployments,
        )
        .unwrap();
        assert_eq!(out.pointer(at), Some(&want), "{p}");
        assert_eq!(out["spec"]["template"], live["spec"]["template"]);
    }
    let e = patch(&live, b"[1]", PatchType::Merge, Resource::Deployments).unwrap_err();
    assert_eq!(e.code(), 400);
}
