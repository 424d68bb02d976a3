//! Server-side apply and managedFields tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;
use crate::api::error::Reason;

const T1: &str = "2026-11-24T01:00:00Z";
const T2: &str = "2026-11-24T02:00:00Z";

fn config(image: &str, env: &[&str], ports: &[i64], replicas: Option<i64>) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|n| json!({"name": n, "value": "v"}))
        .collect();
    let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p})).collect();
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image, "env": env, "ports": ports}]}
        }
    });
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

#[test]
fn create_records_fields_v1() {
    let cfg = config("busybox:1", &["X"], &[80], Some(2));
    let out = apply(None, cfg, "kubectl", false, Resource::Deployments, T1).unwrap();
    let e = entry(&out, "kubectl").expect("entry");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    let want = json!({
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:name": {}, "f:image": {},
                    "f:env": {"k:{\"name\":\"X\"}": {".": {}, "f:name": {}, "f:value": {}}},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                }}}
            }
        }
    });
    // `selector` is a `LabelSelector`, an atomic struct: owned whole.
    assert_eq!(e["fieldsV1"], want);
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(out["metadata"]["name"], "web");
    assert_eq!(out["kind"], "Deployment");
}

#[test]
fn reapply_same_config_changes_nothing() {
    let live = apply(
        None,
        config("busybox:1", &["X"], &[80], Some(2)),
        "kubectl",
        false,
        Resource::Deployments,
        T1,
    )
    .unwrap();
    let again = apply(
        Some(&live),
        config("busybox:1", &["X"], &[80], Some(2)),
        "kubectl",
        false,
        Resource::Deployments,
        T2,
    )
    .unwrap();
    assert_eq!(again, live);
}

/// The Deployment applied twice: edited image, a removed env var and a
/// removed container port are gone; fields another writer set stay.
#[test]
fn reapply_removes_what_is_no_longer_applied() {
    let mut live = apply(
        None,
        config("busybox:1", &["X", "Y"], &[80, 8080], Some(2)),
        "kubectl",
        false,
        Resource::Deployments,
        T1,
    )
    .unwrap();
    // A controller defaulted a field nobody applied.
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
    let out = apply(
        Some(&live),
        config("busybox:2", &["Y"], &[80], Some(2)),
        "kubectl",
        false,
        Resource::Deployments,
        T2,
    )
    .unwrap();
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:2");
    assert_eq!(c["env"], json!([{"name": "Y", "value": "v"}]));
    assert_eq!(c["ports"], json!([{"containerPort": 80}]));
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let e = entry(&out, "kubectl").unwrap();
    assert_eq!(e["time"], T2);
    let containers =
        &e["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
    assert!(containers["f:env"].get("k:{\"name\":\"X\"}").is_none());
    assert_eq!(
        out["metadata"]["managedFields"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn conflicts_name_fields_and_managers_and_force_takes_over() {
    let live = apply(
        None,
        config("busybox:1", &[], &[], Some(2)),
        "kubectl",
        false,
        Resource::Deployments,
        T1,
    )
    .unwrap();
    // `kubectl scale` by another manager writes replicas.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(Some(&live), &mut scaled, "kubectl-scale", T2);
    let su = entry(&scaled, "kubectl-scale").expect("update entry");
    assert_eq!(su["operation"], "Update");
    assert_eq!(su["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    // The applier no longer owns replicas.
    let ae = entry(&scaled, "kubectl").unwrap();
    assert!(ae["fieldsV1"]["f:spec"].get("f:replicas").is_none());

    // Re-applying replicas=2 conflicts with the scaler.
    let err = apply(
        Some(&scaled),
        config("busybox:1", &[], &[], Some(2)),
        "kubectl",
        false,
        Resource::Deployments,
        T2,
    )
    .unwrap_err();
    assert_eq!(err.reason, Reason::Conflict);
    assert_eq!(err.code(), 409);
    assert_eq!(
        err.message,
        format!(
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1 at {T2}: .spec.replicas"
        )
    );
    assert_eq!(err.causes[0].field, ".spec.replicas");

    // Applying the scaler's value is shared ownership, not a conflict.
    let shared = apply(
        Some(&scaled),
        config("busybox:1", &[], &[], Some(5)),
        "kubectl",
        false,
        Resource::Deployments,
        T2,
    )
    .unwrap();
    assert!(entry(&shared, "kubectl-scale").is_some());

    // Force takes the field; the scaler's entry, now empty, goes.
    let forced = apply(
        Some(&scaled),
        config("busybox:1", &[], &[], Some(2)),
        "kubectl",
        true,
        Resource::Deployments,
        T2,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(entry(&forced, "kubectl-scale").is_none());

    // Dropping replicas from the config leaves it to the co-owner.
    let dropped = apply(
        Some(&shared),
        config("busybox:1", &[], &[], None),
        "kubectl",
        false,
        Resource::Deployments,
        T2,
    )
    .unwrap();
    assert_eq!(dropped["spec"]["replicas"], 5);
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let live = apply(
        None,
        config("a", &[], &[], Some(1)),
        "one",
        false,
        Resource::Deployments,
        T1,
    )
    .unwrap();
    let err = apply(
        Some(&live),
        config("b", &[], &[], Some(2)),
        "two",
        false,
        Resource::Deployments,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"one\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"c\"].image"
    );
}

#[test]
fn record_update_on_create_owns_everything() {
    let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "labels": {"a": "1"}}, "data": {"k": "v"}});
    record_update(None, &mut obj, "kubectl-create", T1);
    let e = entry(&obj, "kubectl-create").unwrap();
    assert_eq!(
        e["fieldsV1"],
        json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}})
    );
    // No change: nothing recorded anew.
    let before = obj.clone();
    let mut same = obj.clone();
    record_update(Some(&before), &mut same, "kubectl-edit", T2);
    assert_eq!(same, before);
}

#[test]
fn apply_rejects_bad_configs() {
    let cases = [
        json!({"kind": "Deployment", "metadata": {"name": "x"}}),
        json!({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}}),
        json!({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "x"}}),
        json!([1]),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": "x"}),
    ];
    for c in cases {
        let e = apply(None, c.clone(), "m", false, Resource::Deployments, T1).unwrap_err();
        assert_eq!(e.code(), 400, "{c}: {}", e.message);
    }
    let mut deep = json!(1);
    for _ in 0..150 {
        deep = json!({"a": deep});
    }
    let c = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": deep});
    assert_eq!(
        apply(None, c, "m", false, Resource::Deployments, T1)
            .unwrap_err()
            .code(),
        400
    );
}

#[test]
fn apply_bodies_parse_as_yaml_or_json() {
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\ndata:\n  k: v\n";
    let v = parse_apply_body(yaml).unwrap();
    assert_eq!(v["data"]["k"], "v");
    let json = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"m"}}"#;
    assert_eq!(parse_apply_body(json).unwrap()["metadata"]["name"], "m");
    let two = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n";
    assert_eq!(parse_apply_body(two).unwrap_err().code(), 400);
    assert_eq!(parse_apply_body(b"\xff").unwrap_err().code(), 400);
}

#[test]
fn resource_version_in_config_is_kept_as_a_precondition() {
    let mut live = apply(
        None,
        config("a", &[], &[], Some(1)),
        "m",
        false,
        Resource::Deployments,
        T1,
    )
    .unwrap();
    live["metadata"]["resourceVersion"] = json!("7");
    let mut cfg = config("a", &[], &[], Some(1));
    cfg["metadata"]["resourceVersion"] = json!("3");
    let out = apply(Some(&live), cfg, "m", false, Resource::Deployments, T2).unwrap();
    assert_eq!(out["metadata"]["resourceVersion"], "3");
    let e = entry(&out, "m").unwrap();
    assert!(e["fieldsV1"].get("f:metadata").is_none(), "{e}");
}
