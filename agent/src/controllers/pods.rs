//! Helpers the workload controllers share: decoding stored objects, label
//! selectors, ownerReferences (adopt/release as the ControllerRefManager
//! does), pods from templates, graceful pod deletion, pod state
//! (active/ready/available), the deletion ranking of the ReplicaSet
//! controller and template hashes.
//!
//! Guarantees: nothing here panics on a malformed stored object: decoding
//! failures are [`ControllerError::Invalid`] naming the object; store
//! failures are [`ControllerError::Store`] naming the key.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ControllerError;
use super::runner::key_label;
use crate::api::Resource;
use crate::api::manifest::Object;
use crate::store::{Datastore, Key, StoreError, resource_version, update_with};

/// Label a Deployment puts on its ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision annotation of Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Label of DaemonSet pods naming their template revision.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// Grace of a deleted pod without `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// generateName prefixes are cut to this length (apiserver's rule).
const MAX_PREFIX: usize = 58;

/// A store error of `controller` on `key`.
pub fn store_err(controller: &'static str, key: &Key, source: StoreError) -> ControllerError {
    ControllerError::Store {
        controller,
        key: key_label(key),
        source,
    }
}

/// Decodes a stored object into its k8s-openapi type.
pub fn decode<T: DeserializeOwned>(
    controller: &'static str,
    key: &Key,
    value: Value,
) -> Result<T, ControllerError> {
    serde_json::from_value(value).map_err(|e| ControllerError::Invalid {
        controller,
        key: key_label(key),
        reason: format!("cannot decode {}: {e}", key.resource.kind()),
    })
}

/// The object at `key`, decoded; `None` once it is gone.
pub fn get_decoded<T: DeserializeOwned>(
    controller: &'static str,
    store: &dyn Datastore,
    key: &Key,
) -> Result<Option<T>, ControllerError> {
    match store.get(key) {
        Ok(v) => decode(controller, key, v).map(Some),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_err(controller, key, e)),
    }
}

/// An object as JSON for the store.
pub fn encode<T: Serialize>(
    controller: &'static str,
    key: &Key,
    object: &T,
) -> Result<Value, ControllerError> {
    serde_json::to_value(object).map_err(|e| ControllerError::Invalid {
        controller,
        key: key_label(key),
        reason: format!("cannot encode {}: {e}", key.resource.kind()),
    })
}

/// Every object of `resource` in `namespace` (all when `None`), decoded;
/// objects that do not decode are skipped with a warning.
pub fn list<T: DeserializeOwned>(
    controller: &'static str,
    store: &dyn Datastore,
    resource: Resource,
    namespace: Option<&str>,
) -> Result<Vec<T>, ControllerError> {
    let (items, _) = store.list(resource, namespace).map_err(|source| {
        let key = Key::namespaced(resource, namespace.unwrap_or(""), "");
        store_err(controller, &key, source)
    })?;
    Ok(items
        .into_iter()
        .filter_map(|v| match serde_json::from_value(v) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(controller, %resource, error = %e, "skipping undecodable object");
                None
            }
        })
        .collect())
}

/// The primary keys of every object of `resource` (for `all_keys`).
pub fn all_keys(
    controller: &'static str,
    store: &dyn Datastore,
    resource: Resource,
) -> Result<Vec<Key>, ControllerError> {
    let (items, _) = store
        .list(resource, None)
        .map_err(|source| store_err(controller, &Key::cluster(resource, ""), source))?;
    Ok(items.iter().filter_map(|v| key_of(resource, v)).collect())
}

/// The key of a stored object.
pub fn key_of(resource: Resource, object: &Value) -> Option<Key> {
    let name = object.pointer("/metadata/name")?.as_str()?;
    match object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        Some(ns) => Some(Key::namespaced(resource, ns, name)),
        None => Some(Key::cluster(resource, name)),
    }
}

/// The controller ownerReference of an object's JSON, if any.
pub fn controller_of_value(object: &Value) -> Option<OwnerReference> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .filter_map(|r| serde_json::from_value::<OwnerReference>(r.clone()).ok())
        .find(|r| r.controller == Some(true))
}

/// The controller ownerReference, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// True when `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller reference to `owner` (controller=true,
/// blockOwnerDeletion=true).
pub fn owner_ref(resource: Resource, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: resource.api_version().to_string(),
        kind: resource.kind().to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Label selector semantics (`metav1.LabelSelectorAsSelector`): every
/// `matchLabels` pair and every expression must hold; an empty selector
/// matches everything. Unknown operators match nothing.
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|g| values.contains(g)),
            "NotIn" => got.is_none_or(|g| !values.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// True when the selector has no requirement (it would select every pod:
/// the controllers refuse to act on it, as apps/v1 validation does).
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// A new pod from `template`, owned by `owner`, named by the API server
/// from `prefix` + 5 random characters (generateName).
pub fn pod_from_template(template: &PodTemplateSpec, owner: OwnerReference, prefix: &str) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut prefix = format!("{prefix}-");
    if prefix.len() > MAX_PREFIX {
        let mut cut = MAX_PREFIX;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates `pod` in `namespace` with the API server's create defaults
/// (uid, name from generateName, creationTimestamp, Pending status);
/// retries a name collision a few times.
pub fn create_pod(
    controller: &'static str,
    store: &dyn Datastore,
    namespace: &str,
    pod: Pod,
    now: Timestamp,
) -> Result<Pod, ControllerError> {
    let mut last = None;
    for _ in 0..5 {
        let mut obj = Object::Pod(Box::new(pod.clone()));
        crate::api::defaults::on_create(&mut obj, Some(namespace), now);
        let key = Key::namespaced(Resource::Pods, namespace, obj.name());
        match store.create(&key, obj.to_value()) {
            Ok(v) => return decode(controller, &key, v),
            Err(e @ StoreError::AlreadyExists { .. }) if pod.metadata.name.is_none() => {
                last = Some((key, e));
            }
            Err(e) => return Err(store_err(controller, &key, e)),
        }
    }
    let (key, e) = last.unwrap_or_else(|| {
        let key = Key::namespaced(Resource::Pods, namespace, "");
        let e = StoreError::AlreadyExists {
            resource: Resource::Pods,
            name: String::new(),
        };
        (key, e)
    });
    Err(store_err(controller, &key, e))
}

/// Deletes a pod as the API server does for a controller: a pod bound to a
/// node gets `deletionTimestamp` (its kubelet stops it and removes it), an
/// unbound one is removed at once. Gone already is success.
pub fn delete_pod(
    controller: &'static str,
    store: &dyn Datastore,
    pod: &Pod,
    now: Timestamp,
) -> Result<(), ControllerError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let key = Key::namespaced(
        Resource::Pods,
        ns,
        pod.metadata.name.as_deref().unwrap_or(""),
    );
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let result = if !bound {
        store.delete(&key, None).map(|_| ())
    } else {
        update_with(store, &key, |mut current| {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(None);
            }
            let grace = current
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(DEFAULT_GRACE_SECONDS);
            let at = now
                .checked_add(SignedDuration::from_secs(grace))
                .unwrap_or(Timestamp::MAX);
            if let Some(m) = current
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
            {
                m.insert("deletionTimestamp".into(), json!(Time(at)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            Ok(Some(current))
        })
        .map(|_| ())
    };
    match result {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_err(controller, &key, e)),
    }
}

/// Writes `status` into the object at `key` unless it is already that
/// (no write, no event when nothing changed). Gone is success.
pub fn write_status(
    controller: &'static str,
    store: &dyn Datastore,
    key: &Key,
    status: Value,
) -> Result<(), ControllerError> {
    let r = update_with(store, key, |mut current| {
        if current.get("status") == Some(&status) {
            return Ok(None);
        }
        if let Some(m) = current.as_object_mut() {
            m.insert("status".into(), status.clone());
        }
        Ok(Some(current))
    });
    match r {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_err(controller, key, e)),
    }
}

/// Replaces the object at `key` with `object` if its resourceVersion is
/// unchanged (a conflict is an error: the runner retries the reconcile).
pub fn replace<T: Serialize>(
    controller: &'static str,
    store: &dyn Datastore,
    key: &Key,
    object: &T,
) -> Result<Value, ControllerError> {
    let value = encode(controller, key, object)?;
    let rv = resource_version(&value);
    store
        .update(key, value, rv)
        .map_err(|e| store_err(controller, key, e))
}

/// The pods `owner` controls after adopting matching orphans and
/// releasing owned pods that no longer match (ControllerRefManager). An
/// owner being deleted adopts nothing.
pub fn claim_pods(
    controller: &'static str,
    store: &dyn Datastore,
    owner: OwnerReference,
    owner_deleting: bool,
    selector: &LabelSelector,
    pods: Vec<Pod>,
) -> Result<Vec<Pod>, ControllerError> {
    let mut mine = Vec::new();
    for pod in pods {
        let matches = selector_matches(selector, pod.metadata.labels.as_ref());
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let key = Key::namespaced(
            Resource::Pods,
            &ns,
            pod.metadata.name.as_deref().unwrap_or(""),
        );
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == owner.uid => {
                if matches {
                    mine.push(pod);
                } else if !owner_deleting {
                    set_owner(store, &key, &owner.uid, None)
                        .map_err(|e| store_err(controller, &key, e))?;
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && pod.metadata.deletion_timestamp.is_none() {
                    match set_owner(store, &key, &owner.uid, Some(&owner)) {
                        Ok(Some(v)) => mine.push(decode(controller, &key, v)?),
                        Ok(None) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(store_err(controller, &key, e)),
                    }
                }
            }
        }
    }
    Ok(mine)
}

/// Adds (`Some`) or removes (`None`) the controller reference with `uid`;
/// returns the adopted object, or `None` when someone else owns it now.
pub fn set_owner(
    store: &dyn Datastore,
    key: &Key,
    uid: &str,
    add: Option<&OwnerReference>,
) -> Result<Option<Value>, StoreError> {
    let mut adopted = true;
    let v = update_with(store, key, |mut current| {
        let refs: Vec<OwnerReference> = current
            .pointer("/metadata/ownerReferences")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let other = refs
            .iter()
            .any(|r| r.controller == Some(true) && r.uid != uid);
        let mut next: Vec<OwnerReference> = refs.iter().filter(|r| r.uid != uid).cloned().collect();
        match add {
            Some(_) if other => {
                adopted = false;
                return Ok(None);
            }
            Some(o) => next.push(o.clone()),
            None => {}
        }
        if next == refs {
            return Ok(None);
        }
        if let Some(m) = current
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
        {
            m.insert("ownerReferences".into(), json!(next));
        }
        Ok(Some(current))
    })?;
    Ok(adopted.then_some(v))
}

/// `status.phase`, "" when unset.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Neither finished nor being deleted (controller.IsPodActive).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !is_terminating(pod)
}

/// When the pod's Ready condition turned True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (a Ready condition
/// without a transition time counts as ready long enough).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => since
            .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
            .is_ok_and(|t| t <= now),
    }
}

/// When a ready pod becomes available (for requeueing), if later than now.
pub fn available_at(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Timestamp> {
    let since = ready_since(pod)??;
    let at = since
        .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
        .ok()?;
    (min_ready_seconds > 0 && at > now).then_some(at)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// The ReplicaSet controller's deletion order (`controller.ActivePods`):
/// `Less` means "delete first": unscheduled before scheduled, pending
/// before unknown before running, not ready before ready, ready for less
/// time first, more restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    node(a)
        .cmp(&node(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| {
            // Ready more recently first: later transition sorts earlier.
            let ra = ready_since(a).flatten();
            let rb = ready_since(b).flatten();
            rb.cmp(&ra)
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// `ComputeHash`: fnv-1a (32 bit) over the template's JSON and the
/// collision count, printed in decimal and mapped onto the
/// `bcdfghjklmnpqrstvwxz2456789` alphabet as `rand.SafeEncodeString` does.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    safe_encode(&h.to_string())
}

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The pods of `namespace`, decoded.
pub fn pods_in(
    controller: &'static str,
    store: &dyn Datastore,
    namespace: &str,
) -> Result<Vec<Pod>, ControllerError> {
    list(controller, store, Resource::Pods, Some(namespace))
}

/// `metadata.creationTimestamp` (epoch when unset, so it sorts first).
pub fn created(meta: &ObjectMeta) -> Timestamp {
    meta.creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
