//! DELETE, as the API server's registry does it.
//!
//! Guarantees:
//! - Preconditions (`uid`, `resourceVersion`) are checked first (409).
//! - Pods bound to a node are deleted gracefully: `deletionTimestamp` and
//!   `deletionGracePeriodSeconds` are set and the node's kubelet removes
//!   the pod; an unbound pod or `gracePeriodSeconds=0` goes the way of
//!   every other object.
//! - `propagationPolicy` (query or body; `orphanDependents` too) sets the
//!   garbage collector's finalizers: `Foreground` adds `foregroundDeletion`,
//!   `Orphan` adds `orphan`, `Background` removes both. Without a policy
//!   the object's own GC finalizer stands, else the kind's default:
//!   Background, except batch/v1 Jobs (Orphan, as the API server keeps for
//!   compatibility; kubectl and herd send Background).
//! - An object left with finalizers is not removed: it gets
//!   `deletionTimestamp` (grace 0) and stays until an update removes the
//!   last finalizer ([`super::writes`]). Without finalizers it is removed
//!   at once.
//! - A namespace is not removed: it gets `deletionTimestamp`,
//!   `status.phase: Terminating` and `spec.finalizers: ["kubernetes"]`; the
//!   namespace controller empties it, then clears the finalizer (PUT
//!   `/finalize` or a plain update), which removes it. `default`,
//!   `kube-system` and `kube-public` may not be deleted (403).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::query::Query;
use super::routes::dry_run;
use super::{ApiState, Failure};
use crate::api::error::Reason;
use crate::api::{ApiError, Resource};
use crate::store::{Key, StoreError, resource_version};

/// Grace period of a pod without `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The finalizer of foreground cascading deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";
/// The namespace controller's finalizer in a namespace's `spec.finalizers`.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    fn parse(s: &str) -> Result<Propagation, ApiError> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }

    /// The kind's default (`DefaultGarbageCollectionPolicy`).
    pub fn default_for(resource: Resource) -> Propagation {
        if resource == Resource::Jobs {
            Propagation::Orphan
        } else {
            Propagation::Background
        }
    }
}

/// `DeleteOptions` from the query and/or the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<u64>,
    pub dry_run: bool,
    /// `None`: the object's finalizers or the kind's default decide.
    pub propagation: Option<Propagation>,
}

impl DeleteOptions {
    pub fn parse(q: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions {
            grace_period_seconds: q.int("gracePeriodSeconds")?,
            dry_run: dry_run(q)?,
            propagation: q
                .get("propagationPolicy")
                .filter(|s| !s.is_empty())
                .map(Propagation::parse)
                .transpose()?,
            ..Default::default()
        };
        if o.propagation.is_none() && q.get("orphanDependents").is_some_and(|s| !s.is_empty()) {
            o.propagation = Some(if q.flag("orphanDependents")? {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if o.grace_period_seconds.is_none() {
                o.grace_period_seconds = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            }
            o.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.resource_version = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            if v.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                o.dry_run = true;
            }
            if o.propagation.is_none() {
                if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                    o.propagation = Some(Propagation::parse(p)?);
                } else if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
                    o.propagation = Some(if orphan {
                        Propagation::Orphan
                    } else {
                        Propagation::Background
                    });
                }
            }
        }
        if o.grace_period_seconds.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request("gracePeriodSeconds must be >= 0"));
        }
        Ok(o)
    }
}

fn time_value(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The finalizers after applying the GC policy
/// (`deletionFinalizersForGarbageCollection`).
pub fn gc_finalizers(
    resource: Resource,
    current: &[String],
    policy: Option<Propagation>,
) -> Vec<String> {
    let policy = policy.unwrap_or_else(|| {
        if current.iter().any(|f| f == ORPHAN) {
            Propagation::Orphan
        } else if current.iter().any(|f| f == FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::default_for(resource)
        }
    });
    let mut out: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    match policy {
        Propagation::Orphan => out.push(ORPHAN.to_string()),
        Propagation::Foreground => out.push(FOREGROUND.to_string()),
        Propagation::Background => {}
    }
    out
}

/// Deletes (or starts deleting) the object at `key`. Like the API
/// server's GuaranteedUpdate, a write that lost a race with another writer
/// (the kubelet's status, a controller) is redone on the latest object,
/// unless the client pinned a resourceVersion: a plain DELETE never fails
/// with 409 because something else changed the object meanwhile.
pub(super) fn delete(state: &ApiState, key: &Key, opts: &DeleteOptions) -> Result<Value, Failure> {
    const TRIES: usize = 5;
    let mut tries = 1;
    loop {
        match delete_once(state, key, opts) {
            Err(f) if f.code() == 409 && opts.resource_version.is_none() && tries < TRIES => {
                tries += 1;
            }
            r => return r,
        }
    }
}

fn delete_once(state: &ApiState, key: &Key, opts: &DeleteOptions) -> Result<Value, Failure> {
    let store = state.store.as_ref();
    let current = store.get(key)?;
    if let Some(uid) = &opts.uid
        && current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
    {
        return Err(ApiError::conflict(
            key.resource,
            &key.name,
            &format!("Precondition failed: UID in precondition: {uid}"),
        )
        .into());
    }
    let rv = resource_version(&current);
    if let Some(want) = opts.resource_version
        && Some(want) != rv
    {
        return Err(StoreError::Conflict {
            resource: key.resource,
            name: key.name.clone(),
            current: rv.unwrap_or(0),
        }
        .into());
    }
    if key.resource == Resource::Namespaces {
        return delete_namespace(state, key, current, rv, opts);
    }
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let graceful = key.resource == Resource::Pods && bound && opts.grace_period_seconds != Some(0);
    if graceful {
        return delete_pod_gracefully(state, key, current, rv, opts);
    }
    let had = strings(current.pointer("/metadata/finalizers"));
    let finalizers = gc_finalizers(key.resource, &had, opts.propagation);
    if finalizers.is_empty() {
        if opts.dry_run {
            return Ok(current);
        }
        let gone = store.delete(key, rv)?;
        if key.resource == Resource::Services {
            let owner = format!("{}/{}", key.namespace.as_deref().unwrap_or(""), key.name);
            crate::api::service_ledger::release(store, &owner);
        }
        return Ok(gone);
    }
    let deleting = current.pointer("/metadata/deletionTimestamp").is_some();
    let grace0 = current
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        == Some(0);
    if deleting && grace0 && finalizers == had {
        return Ok(current);
    }
    let mut next = current.clone();
    if let Some(m) = next.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        if !deleting {
            m.insert("deletionTimestamp".into(), time_value(Timestamp::now()));
        }
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        m.insert("finalizers".into(), json!(finalizers));
    }
    if opts.dry_run {
        return Ok(next);
    }
    Ok(store.update(key, next, rv)?)
}

fn delete_pod_gracefully(
    state: &ApiState,
    key: &Key,
    current: Value,
    rv: Option<u64>,
    opts: &DeleteOptions,
) -> Result<Value, Failure> {
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        // Already terminating: the kubelet finishes it.
        return Ok(current);
    }
    let grace = opts
        .grace_period_seconds
        .or_else(|| {
            current
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let at = Timestamp::now()
        .checked_add(SignedDuration::from_secs(grace))
        .unwrap_or(Timestamp::MAX);
    let mut next = current.clone();
    if let Some(m) = next.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.insert("deletionTimestamp".into(), time_value(at));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if opts.dry_run {
        return Ok(next);
    }
    Ok(state.store.update(key, next, rv)?)
}

fn delete_namespace(
    state: &ApiState,
    key: &Key,
    current: Value,
    rv: Option<u64>,
    opts: &DeleteOptions,
) -> Result<Value, Failure> {
    if matches!(key.name.as_str(), "default" | "kube-system" | "kube-public") {
        let mut e = ApiError::new(
            Reason::Forbidden,
            format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                key.name
            ),
        );
        e.kind = Some("namespaces".into());
        e.name = Some(key.name.clone());
        return Err(e.into());
    }
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(current);
    }
    let mut next = current.clone();
    if let Some(m) = next.as_object_mut() {
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("deletionTimestamp".into(), time_value(Timestamp::now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        let spec = m.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            let mut f = strings(spec.get("finalizers"));
            if !f.iter().any(|x| x == NAMESPACE_FINALIZER) {
                f.push(NAMESPACE_FINALIZER.to_string());
            }
            spec.insert("finalizers".into(), json!(f));
        }
        let status = m.entry("status").or_insert_with(|| json!({}));
        if let Some(status) = status.as_object_mut() {
            status.insert("phase".into(), json!("Terminating"));
        }
    }
    if opts.dry_run {
        return Ok(next);
    }
    Ok(state.store.update(key, next, rv)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_options_from_query_and_body() {
        let q = Query::parse(Some("gracePeriodSeconds=5"));
        let o = DeleteOptions::parse(
            &q,
            br#"{"gracePeriodSeconds": 9, "preconditions": {"uid": "u"}, "propagationPolicy": "Foreground"}"#,
        )
        .unwrap();
        assert_eq!(o.grace_period_seconds, Some(5));
        assert_eq!(o.uid.as_deref(), Some("u"));
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        let o = DeleteOptions::parse(&Query::default(), br#"{"gracePeriodSeconds": 0}"#).unwrap();
        assert_eq!(o.grace_period_seconds, Some(0));
        assert_eq!(o.propagation, None);
        let o = DeleteOptions::parse(&Query::parse(Some("propagationPolicy=Orphan")), b"").unwrap();
        assert_eq!(o.propagation, Some(Propagation::Orphan));
        let o = DeleteOptions::parse(&Query::default(), br#"{"orphanDependents": true}"#).unwrap();
        assert_eq!(o.propagation, Some(Propagation::Orphan));
        assert!(DeleteOptions::parse(&Query::default(), b"{garbage").is_err());
        assert!(DeleteOptions::parse(&Query::parse(Some("gracePeriodSeconds=-1")), b"").is_err());
        assert_eq!(
            DeleteOptions::parse(&Query::parse(Some("propagationPolicy=Sideways")), b"")
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn gc_finalizer_rules() {
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
        let d = Resource::Deployments;
        assert!(gc_finalizers(d, &[], None).is_empty());
        assert_eq!(gc_finalizers(Resource::Jobs, &[], None), s(&[ORPHAN]));
        assert_eq!(
            gc_finalizers(Resource::Jobs, &[], Some(Propagation::Background)),
            Vec::<String>::new()
        );
        assert_eq!(
            gc_finalizers(d, &s(&["x", ORPHAN]), Some(Propagation::Foreground)),
            s(&["x", FOREGROUND])
        );
        assert_eq!(gc_finalizers(d, &s(&[ORPHAN]), None), s(&[ORPHAN]));
        assert_eq!(
            gc_finalizers(d, &s(&["x", FOREGROUND]), Some(Propagation::Background)),
            s(&["x"])
        );
    }
}
