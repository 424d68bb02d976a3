//! The pod subresources a client POSTs to: `eviction` and `binding`.
//!
//! Guarantees:
//! - Eviction (`policy/v1` or `v1beta1` `Eviction`) deletes the pod with
//!   the eviction's `deleteOptions` (graceful, preconditions honoured) and
//!   answers `201` with a `Success` Status. herd serves no
//!   PodDisruptionBudgets, so no eviction is refused for budget reasons
//!   (kube-apiserver would answer 429 when one forbids it).
//! - Binding (`v1 Binding`, `target.kind: Node`) sets `spec.nodeName` and
//!   `PodScheduled=True` on an unbound pod, with the resourceVersion it
//!   read (a concurrent write gives 409); a pod already bound answers 409
//!   `pod X is already assigned to node Y`, as the API server does.

use serde_json::{Value, json};

use super::Failure;
use super::delete::{DeleteOptions, delete};
use super::query::Query;
use super::{ApiState, writes};
use crate::api::ApiError;
use crate::api::error::Reason;
use crate::store::Key;

/// The `Success` Status answered by both.
fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

fn check_name(body: &Value, key: &Key, kind: &str) -> Result<(), ApiError> {
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        None | Some("") => Ok(()),
        Some(n) if n == key.name => Ok(()),
        Some(n) => Err(ApiError::bad_request(format!(
            "name in URL does not match name in {kind} object: {:?} != {n:?}",
            key.name
        ))),
    }
}

/// POST `pods/{name}/eviction`.
pub fn evict(state: &ApiState, key: &Key, body: &Value) -> Result<Value, Failure> {
    match body.get("kind").and_then(Value::as_str) {
        Some("Eviction") | None => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!("expected an Eviction, got a {k}")).into());
        }
    }
    check_name(body, key, "eviction")?;
    let opts_bytes = match body.get("deleteOptions") {
        Some(o) if !o.is_null() => serde_json::to_vec(o)
            .map_err(|e| ApiError::bad_request(format!("deleteOptions: {e}")))?,
        _ => Vec::new(),
    };
    let opts = DeleteOptions::parse(&Query::parse(None), &opts_bytes)?;
    delete(state, key, &opts)?;
    Ok(success())
}

/// POST `pods/{name}/binding`.
pub fn bind(state: &ApiState, key: &Key, body: &Value) -> Result<Value, Failure> {
    check_name(body, key, "binding")?;
    let target = body.get("target").cloned().unwrap_or(Value::Null);
    if target
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Node")
    {
        return Err(ApiError::bad_request("target.kind: Unsupported value: must be Node").into());
    }
    let node = match target.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => return Err(ApiError::bad_request("target.name: Required value").into()),
    };
    let live = state.store.get(key)?;
    let rv = crate::store::resource_version(&live);
    if let Some(bound) = live
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::new(
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{bound}\"",
                key.name, key.name
            ),
        )
        .into());
    }
    if live.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            Reason::Conflict,
            format!(
                "pod {} is being deleted, cannot be assigned to a host",
                key.name
            ),
        )
        .into());
    }
    let mut pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(live)
        .map_err(|e| ApiError::internal(format!("stored pod {}: {e}", key.name)))?;
    writes::bind(&mut pod, &node, k8s_openapi::jiff::Timestamp::now());
    let mut v = serde_json::to_value(&pod)
        .map_err(|e| ApiError::internal(format!("encoding pod {}: {e}", key.name)))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Pod".into());
    }
    state.store.update(key, v, rv)?;
    Ok(success())
}
