//! Update rules (k8s `ValidatePodUpdate`, `ValidateObjectMetaUpdate`,
//! `ValidateConfigMapUpdate`, `ValidateSecretUpdate`).

use serde_json::Value;

use super::collect;
use crate::api::manifest::Object;
use crate::api::{ApiError, FieldError};

const POD_UPDATE: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to \
existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was \
previously negative)";

/// Validates `new` as a replacement of `old`: `new` must be valid on its
/// own, keep its identity, and change a Pod's spec only where allowed.
pub fn validate_update(old: &Object, new: &Object) -> Result<(), ApiError> {
    if old.resource() != new.resource() {
        return Err(ApiError::bad_request(format!(
            "cannot change the kind of {} \"{}\" to {}",
            old.resource().kind(),
            old.name(),
            new.resource().kind()
        )));
    }
    let mut errs = collect(new);
    let (om, nm) = (old.meta(), new.meta());
    for (field, a, b) in [
        ("metadata.name", &om.name, &nm.name),
        ("metadata.namespace", &om.namespace, &nm.namespace),
        ("metadata.uid", &om.uid, &nm.uid),
    ] {
        // An unset field in the update means "keep".
        if b.is_some() && a != b {
            errs.push(FieldError::invalid(
                field,
                b.as_deref().unwrap_or(""),
                "field is immutable",
            ));
        }
    }
    if nm.creation_timestamp.is_some() && om.creation_timestamp != nm.creation_timestamp {
        errs.push(FieldError::invalid(
            "metadata.creationTimestamp",
            nm.creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            "field is immutable",
        ));
    }
    match (old, new) {
        (Object::Pod(a), Object::Pod(b)) => pod_spec_update(
            &serde_json::to_value(&a.spec).unwrap_or(Value::Null),
            &serde_json::to_value(&b.spec).unwrap_or(Value::Null),
            &mut errs,
        ),
        (Object::ConfigMap(a), Object::ConfigMap(b)) if a.immutable == Some(true) => {
            if b.immutable != Some(true) {
                errs.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            if a.data != b.data {
                errs.push(FieldError::forbidden(
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
            if a.binary_data != b.binary_data {
                errs.push(FieldError::forbidden(
                    "binaryData",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        (Object::Secret(a), Object::Secret(b)) => {
            let (ta, tb) = (
                a.type_.as_deref().unwrap_or("Opaque"),
                b.type_.as_deref().unwrap_or("Opaque"),
            );
            if ta != tb {
                errs.push(FieldError::invalid("type", tb, "field is immutable"));
            }
            if a.immutable == Some(true) {
                if b.immutable != Some(true) {
                    errs.push(FieldError::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
                if a.data != b.data || b.string_data.is_some() {
                    errs.push(FieldError::forbidden(
                        "data",
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        (Object::Deployment(a), Object::Deployment(b)) => immutable(
            "spec.selector",
            a.spec.as_ref().map(|s| &s.selector),
            b.spec.as_ref().map(|s| &s.selector),
            &mut errs,
        ),
        (Object::ReplicaSet(a), Object::ReplicaSet(b)) => immutable(
            "spec.selector",
            a.spec.as_ref().map(|s| &s.selector),
            b.spec.as_ref().map(|s| &s.selector),
            &mut errs,
        ),
        (Object::DaemonSet(a), Object::DaemonSet(b)) => immutable(
            "spec.selector",
            a.spec.as_ref().map(|s| &s.selector),
            b.spec.as_ref().map(|s| &s.selector),
            &mut errs,
        ),
        (Object::Job(a), Object::Job(b)) => {
            let (sa, sb) = (a.spec.as_ref(), b.spec.as_ref());
            immutable(
                "spec.selector",
                sa.and_then(|s| s.selector.as_ref()),
                sb.and_then(|s| s.selector.as_ref()),
                &mut errs,
            );
            immutable(
                "spec.template",
                sa.map(|s| &s.template),
                sb.map(|s| &s.template),
                &mut errs,
            );
            immutable(
                "spec.completionMode",
                sa.and_then(|s| s.completion_mode.as_ref()),
                sb.and_then(|s| s.completion_mode.as_ref()),
                &mut errs,
            );
        }
        (Object::Service(a), Object::Service(b)) => {
            let ip = |s: &k8s_openapi::api::core::v1::Service| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.clone())
                    .filter(|ip| !ip.is_empty())
            };
            let type_ = |s: &k8s_openapi::api::core::v1::Service| {
                s.spec.as_ref().and_then(|s| s.type_.clone())
            };
            // Changing to or from ExternalName frees or needs an IP: the
            // API server allows it; herd keeps the IP fixed for now.
            if ip(a).is_some() && ip(a) != ip(b) {
                errs.push(FieldError::invalid(
                    "spec.clusterIP",
                    ip(b).unwrap_or_default(),
                    "field is immutable",
                ));
            }
            if type_(b).as_deref() == Some("ExternalName") && type_(a) != type_(b) {
                errs.push(FieldError::forbidden(
                    "spec.type",
                    "changing a service to ExternalName is not supported",
                ));
            }
        }
        (Object::Node(a), Object::Node(b)) => {
            let cidr = |n: &k8s_openapi::api::core::v1::Node| {
                n.spec.as_ref().and_then(|s| s.pod_cidr.clone())
            };
            if cidr(a).is_some() && cidr(a) != cidr(b) {
                errs.push(FieldError::forbidden(
                    "spec.podCIDR",
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(new.resource(), new.name(), errs))
    }
}

/// `field is immutable` when `a` and `b` differ.
fn immutable<T: PartialEq + serde::Serialize>(
    field: &str,
    a: Option<&T>,
    b: Option<&T>,
    errs: &mut Vec<FieldError>,
) {
    if a != b {
        let shown = serde_json::to_string(&b).unwrap_or_default();
        errs.push(FieldError::invalid(field, shown, "field is immutable"));
    }
}

/// Clears what a Pod update may change, so the rest compares equal.
fn mask(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    m.remove("activeDeadlineSeconds");
    m.remove("tolerations");
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = m.get_mut(list) {
            for c in cs {
                if let Some(c) = c.as_object_mut() {
                    c.remove("image");
                }
            }
        }
    }
}

fn pod_spec_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let (mut a, mut b) = (old.clone(), new.clone());
    // Tolerations may only be added to.
    let tol = |v: &Value| -> Vec<Value> {
        v.get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (ta, tb) = (tol(old), tol(new));
    if !ta.iter().all(|t| tb.contains(t)) {
        errs.push(FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    // activeDeadlineSeconds may be set or lowered, never unset or raised.
    let ad = |v: &Value| v.get("activeDeadlineSeconds").and_then(Value::as_i64);
    if let Some(o) = ad(old) {
        match ad(new) {
            None => errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                "nil",
                "must not update from a positive integer to nil value",
            )),
            Some(n) if n > o => errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                n,
                "must be less than or equal to previous value",
            )),
            _ => {}
        }
    }
    mask(&mut a);
    mask(&mut b);
    if a != b {
        errs.push(FieldError::forbidden("spec", POD_UPDATE));
    }
}
