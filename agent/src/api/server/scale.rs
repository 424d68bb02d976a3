//! The `/scale` subresource of Deployments and ReplicaSets: an
//! autoscaling/v1 `Scale` view of `spec.replicas`.
//!
//! Guarantees: GET answers `spec.replicas`, `status.replicas` and the
//! selector as a string; PUT changes only `spec.replicas` (bumping
//! `metadata.generation` when it changes), honours the Scale's
//! `resourceVersion` as a precondition, and rejects negative counts (422
//! naming `spec.replicas`).

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::{ApiState, Failure};
use crate::api::label_selector;
use crate::api::{ApiError, FieldError};
use crate::store::{Key, StoreError, resource_version};

/// The Scale of a stored Deployment or ReplicaSet.
pub fn to_scale(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut m = serde_json::Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(k) {
            m.insert(k.to_string(), v.clone());
        }
    }
    let selector = serde_json::from_value::<LabelSelector>(obj["spec"]["selector"].clone())
        .map(|s| label_selector::to_query(&s))
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

pub(super) fn put_scale(
    state: &ApiState,
    key: &Key,
    body: Value,
    dry: bool,
) -> Result<Value, Failure> {
    let scale: Scale = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("Scale cannot be decoded: {e}")))?;
    if scale
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n != key.name)
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            scale.metadata.name.as_deref().unwrap_or(""),
            key.name
        ))
        .into());
    }
    let replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    if replicas < 0 {
        let mut e = ApiError::invalid(
            key.resource,
            &key.name,
            vec![FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        );
        e.kind = Some("Scale".into());
        e.message = e.message.replacen(key.resource.kind(), "Scale", 1);
        return Err(e.into());
    }
    let expected = scale
        .metadata
        .resource_version
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {s:?}: not an integer"))
            })
        })
        .transpose()?;
    // Without a resourceVersion the client asks for "set replicas to N"
    // whatever else changed: retried on conflict (controllers write the
    // same object), as the API server's update retry does.
    let mut attempts = 0;
    let stored = loop {
        let current = state.store.get(key)?;
        let mut next = current.clone();
        let changed = current["spec"]["replicas"].as_i64() != Some(i64::from(replicas));
        if let Some(spec) = next.pointer_mut("/spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(replicas));
        }
        if changed && let Some(m) = next.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
            m.insert("generation".into(), json!(g.saturating_add(1)));
        }
        if dry {
            return Ok(to_scale(&next));
        }
        if let Some(m) = next.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        match state
            .store
            .update(key, next, expected.or_else(|| resource_version(&current)))
        {
            Err(StoreError::Conflict { .. }) if expected.is_none() && attempts < 16 => {
                attempts += 1;
            }
            other => break other?,
        }
    };
    Ok(to_scale(&stored))
}
