//! Create and replace (main resource, `/status`, a namespace's
//! `/finalize`), as the API server's registry does them.
//!
//! Guarantees:
//! - Create: decode → system fields and defaults → (pods: bind to this
//!   node when configured) → validation → the namespace must exist and
//!   not be terminating (403 Forbidden, as the API server) → Services get
//!   their clusterIP/nodePorts under the allocation lock → store.
//! - Replace of the main resource keeps the system fields, keeps `.status`
//!   for kinds with a status subresource, keeps a namespace's
//!   `spec.finalizers`, and bumps `metadata.generation` when the spec
//!   changed (kinds that track generation). `/status` changes only
//!   `.status`; `/finalize` only `spec.finalizers`.
//! - An object being deleted (deletionTimestamp set, no grace period left)
//!   whose update leaves no finalizer is removed, as the API server does;
//!   no finalizer may be added to an object being deleted.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::paths::{Sub, has_status, not_found_path};
use super::{ApiState, Failure};
use crate::api::defaults::{apply_defaults, has_generation, on_create, service_ip_families};
use crate::api::error::Reason;
use crate::api::manifest::{Object, decode};
use crate::api::services::ServiceNetwork;
use crate::api::validation::{validate, validate_update};
use crate::api::{ApiError, FieldError, Resource};
use crate::store::{Datastore, Key, StoreError, resource_version};

pub(super) fn key_of(obj: &Object) -> Key {
    match obj.namespace() {
        Some(ns) if obj.resource().namespaced() => Key::namespaced(obj.resource(), ns, obj.name()),
        _ => Key::cluster(obj.resource(), obj.name()),
    }
}

/// The namespace exists and is not terminating.
fn namespace_open(
    store: &dyn Datastore,
    ns: &str,
    resource: Resource,
    name: &str,
) -> Result<(), Failure> {
    let v = match store.get(&Key::cluster(Resource::Namespaces, ns)) {
        Ok(v) => v,
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::not_found(Resource::Namespaces, ns).into());
        }
        Err(e) => return Err(e.into()),
    };
    let terminating = v.pointer("/metadata/deletionTimestamp").is_some()
        || v.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
    if terminating {
        let mut e = ApiError::new(
            Reason::Forbidden,
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                resource.plural()
            ),
        );
        e.kind = Some(resource.plural().to_string());
        e.name = Some(name.to_string());
        return Err(e.into());
    }
    Ok(())
}

pub(super) fn create(
    state: &ApiState,
    net: &ServiceNetwork,
    resource: Resource,
    namespace: Option<&str>,
    value: Value,
    dry: bool,
) -> Result<Value, Failure> {
    let mut obj = decode(value)?;
    if obj.resource() != resource {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected kind: {} is not {}",
            obj.resource().api_version(),
            obj.resource().kind(),
            resource.kind()
        ))
        .into());
    }
    if let (Some(url), Some(body)) = (namespace, obj.namespace())
        && !body.is_empty()
        && url != body
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )
        .into());
    }
    let now = Timestamp::now();
    on_create(&mut obj, namespace, now);
    if let Object::Pod(pod) = &mut obj
        && state.bind_unscheduled
    {
        bind(pod, &state.node_name, now);
    }
    validate(&obj)?;
    if let Some(ns) = obj.namespace() {
        namespace_open(state.store.as_ref(), ns, resource, obj.name())?;
    }
    let key = key_of(&obj);
    if dry {
        return match state.store.get(&key) {
            Ok(_) => Err(ApiError::already_exists(resource, &key.name).into()),
            Err(StoreError::NotFound { .. }) => Ok(obj.to_value()),
            Err(e) => Err(e.into()),
        };
    }
    let store = state.store.as_ref();
    if let Object::Service(svc) = &mut obj {
        let stored = net.create(store, svc, |svc| {
            let mut svc = svc.clone();
            service_ip_families(&mut svc);
            Ok(store.create(&key, Object::Service(Box::new(svc)).to_value())?)
        })?;
        return Ok(stored);
    }
    Ok(store.create(&key, obj.to_value())?)
}

/// Binds an unbound pod to `node` (PodScheduled=True); a bound pod is
/// left as it is.
pub(super) fn bind(pod: &mut k8s_openapi::api::core::v1::Pod, node: &str, now: Timestamp) {
    use k8s_openapi::api::core::v1::PodCondition;
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
        return;
    }
    spec.node_name = Some(node.to_string());
    let status = pod.status.get_or_insert_with(Default::default);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != "PodScheduled");
    conds.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "True".into(),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// `value` with `pointer`'s field (`/status`, `/spec/finalizers`) taken
/// from `from`.
fn with_field(mut value: Value, from: &Value, parent: &str, field: &str) -> Value {
    let src = from.pointer(&format!("{parent}/{field}")).cloned();
    if value.pointer(parent).is_none()
        && src.is_some()
        && let Some(m) = value.as_object_mut()
    {
        m.insert(
            parent.trim_start_matches('/').to_string(),
            Value::Object(Default::default()),
        );
    }
    if let Some(m) = value.pointer_mut(parent).and_then(Value::as_object_mut) {
        match src {
            Some(s) => {
                m.insert(field.to_string(), s);
            }
            None => {
                m.remove(field);
            }
        }
    }
    value
}

fn root_field(mut value: Value, from: &Value, field: &str) -> Value {
    if let Some(m) = value.as_object_mut() {
        match from.get(field) {
            Some(s) => {
                m.insert(field.to_string(), s.clone());
            }
            None => {
                m.remove(field);
            }
        }
    }
    value
}

pub(super) fn replace(
    state: &ApiState,
    net: &ServiceNetwork,
    key: &Key,
    value: Value,
    sub: Sub,
    dry: bool,
) -> Result<Value, Failure> {
    let mut new = decode(value)?;
    if new.resource() != key.resource {
        return Err(ApiError::bad_request(format!(
            "{} is not {}",
            new.resource().kind(),
            key.resource.kind()
        ))
        .into());
    }
    if new.name() != key.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            new.name(),
            key.name
        ))
        .into());
    }
    if let (Some(url), Some(body)) = (&key.namespace, new.namespace())
        && !body.is_empty()
        && url != body
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )
        .into());
    }
    let expected = new
        .meta()
        .resource_version
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {s:?}: not an integer"))
            })
        })
        .transpose()?;
    let store = state.store.as_ref();
    let current = store.get(key)?;
    let old = Object::from_value_unchecked(key.resource, current.clone())?;
    let mut v = match sub {
        // Only the status changes; everything else stays as stored.
        Sub::Status => root_field(current.clone(), &new.to_value(), "status"),
        Sub::Finalize => with_field(current.clone(), &new.to_value(), "/spec", "finalizers"),
        Sub::Scale | Sub::Eviction | Sub::Binding => return Err(not_found_path().into()),
        Sub::Main => {
            // System fields the client may leave out are kept.
            let (om, nm) = (old.meta().clone(), new.meta_mut());
            nm.namespace = om.namespace.clone();
            nm.uid = nm.uid.take().or(om.uid);
            nm.creation_timestamp = nm.creation_timestamp.take().or(om.creation_timestamp);
            nm.deletion_timestamp = om.deletion_timestamp.clone();
            nm.deletion_grace_period_seconds = om.deletion_grace_period_seconds;
            nm.generation = om.generation;
            if om.deletion_timestamp.is_some() {
                let had = om.finalizers.clone().unwrap_or_default();
                if nm.finalizers.iter().flatten().any(|f| !had.contains(f)) {
                    return Err(ApiError::invalid(
                        key.resource,
                        &key.name,
                        vec![FieldError::forbidden(
                            "metadata.finalizers",
                            "no new finalizers can be added if the object is being deleted",
                        )],
                    )
                    .into());
                }
            }
            apply_defaults(&mut new);
            validate(&new)?;
            let commit = |new: &Object| -> Result<Value, ApiError> {
                validate_update(&old, new)?;
                let mut v = new.to_value();
                if has_status(key.resource) {
                    v = root_field(v, &current, "status");
                }
                if key.resource == Resource::Namespaces {
                    v = with_field(v, &current, "/spec", "finalizers");
                }
                if has_generation(key.resource) && v.get("spec") != current.get("spec") {
                    let g = old.meta().generation.unwrap_or(0).saturating_add(1);
                    if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                        m.insert("generation".into(), g.into());
                    }
                }
                Ok(v)
            };
            match (&old, &mut new) {
                (Object::Service(o), Object::Service(n)) if !dry => {
                    return Ok(net.update(store, o, n, |svc| {
                        let v = commit(&Object::Service(Box::new(svc.clone())))?;
                        Ok(write(store, key, v, &current, expected)?)
                    })?);
                }
                _ => commit(&new)?,
            }
        }
    };
    if dry {
        if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.insert(
                "resourceVersion".into(),
                current
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
        }
        return Ok(v);
    }
    if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    Ok(write(store, key, v, &current, expected)?)
}

/// Stores an update, or removes the object when it was being deleted and
/// no finalizer is left (a namespace also needs empty `spec.finalizers`).
fn write(
    store: &dyn Datastore,
    key: &Key,
    mut v: Value,
    current: &Value,
    expected: Option<u64>,
) -> Result<Value, StoreError> {
    if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let expected = expected.or_else(|| resource_version(current));
    let deleting = current.pointer("/metadata/deletionTimestamp").is_some()
        && current
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g == 0);
    let finalizers_left = !strings(v.pointer("/metadata/finalizers")).is_empty()
        || (key.resource == Resource::Namespaces
            && !strings(v.pointer("/spec/finalizers")).is_empty());
    if deleting && !finalizers_left {
        store.delete(key, expected)?;
        return Ok(v);
    }
    store.update(key, v, expected)
}
