//! CRUD on `/api/v1/...`: list (+ watch), get, create, replace, status,
//! delete, for every [`Resource`].
//!
//! Paths are parsed here (one catch-all route) so that cluster-scoped and
//! namespaced forms cannot shadow each other:
//! `/api/v1/{plural}[/{name}]`, `/api/v1/namespaces/{ns}/{plural}[/{name}[/status]]`.
//!
//! Pod deletion is graceful as in the API server: a pod bound to a node
//! gets `deletionTimestamp`/`deletionGracePeriodSeconds` and stays until
//! the node's kubelet removes it (with a uid/resourceVersion precondition);
//! an unbound pod or `gracePeriodSeconds=0` deletes at once. Namespaces are
//! deleted at once, their contents are left (no namespace controller yet).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::query::{Query, parse_object, read_body};
use super::selectors::Selector;
use super::{ApiResult, ApiState, Failure, watch};
use crate::api::defaults::on_create;
use crate::api::manifest::{Object, decode};
use crate::api::validation::{validate, validate_update};
use crate::api::{ApiError, Resource};
use crate::store::{Datastore, Key, StoreError, resource_version};

/// Grace period of a pod without `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A collection: one namespace or all (`None`).
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Item {
        key: Key,
        /// `status` (the only subresource served here).
        status: bool,
    },
}

fn not_found_path() -> ApiError {
    ApiError::new(
        crate::api::error::Reason::NotFound,
        "the server could not find the requested resource",
    )
}

/// Parses the part after `/api/v1/`.
pub fn parse_path(rest: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let res = |s: &str| Resource::from_plural(s).ok_or_else(not_found_path);
    match segs.as_slice() {
        [plural] => Ok(Target::Collection {
            resource: res(plural)?,
            namespace: None,
        }),
        ["namespaces", name] | ["namespaces", name, "status"] => Ok(Target::Item {
            key: Key::cluster(Resource::Namespaces, name),
            status: segs.len() == 3,
        }),
        ["namespaces", ns, plural] => {
            let resource = res(plural)?;
            if !resource.namespaced() {
                return Err(not_found_path());
            }
            Ok(Target::Collection {
                resource,
                namespace: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] | ["namespaces", ns, plural, name, "status"] => {
            let resource = res(plural)?;
            if !resource.namespaced() || (segs.len() == 5 && resource != Resource::Pods) {
                return Err(not_found_path());
            }
            Ok(Target::Item {
                key: Key::namespaced(resource, ns, name),
                status: segs.len() == 5,
            })
        }
        _ => Err(not_found_path()),
    }
}

/// The one handler behind `/api/v1/{*rest}`.
pub async fn dispatch(
    State(state): State<ApiState>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let target = parse_path(&rest)?;
    let q = Query::parse(raw.as_deref());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match (method, target) {
        (
            Method::GET,
            Target::Collection {
                resource,
                namespace,
            },
        ) => {
            if q.flag("watch")? {
                watch::watch(state, resource, namespace, &q).await
            } else {
                list(&state, resource, namespace.as_deref(), &q)
            }
        }
        (
            Method::POST,
            Target::Collection {
                resource,
                namespace,
            },
        ) => {
            if resource.namespaced() && namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "POST on all namespaces: name a namespace",
                )
                .into());
            }
            let value = parse_object(&read_body(body).await?, content_type.as_deref())?;
            let dry = dry_run(&q)?;
            let obj = blocking(move || create(&state, resource, namespace.as_deref(), value, dry))
                .await?;
            Ok((StatusCode::CREATED, axum::Json(obj)).into_response())
        }
        (Method::GET, Target::Item { key, .. }) => {
            let store = state.store.clone();
            Ok(axum::Json(blocking(move || Ok(store.get(&key)?)).await?).into_response())
        }
        (Method::PUT, Target::Item { key, status }) => {
            let value = parse_object(&read_body(body).await?, content_type.as_deref())?;
            let dry = dry_run(&q)?;
            let obj = blocking(move || replace(&state, &key, value, status, dry)).await?;
            Ok(axum::Json(obj).into_response())
        }
        (Method::DELETE, Target::Item { key, status: false }) => {
            let bytes = read_body(body).await?;
            let opts = DeleteOptions::parse(&q, &bytes)?;
            let obj = blocking(move || delete(&state, &key, &opts)).await?;
            Ok(axum::Json(obj).into_response())
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )
        .into()),
    }
}

/// Runs a (possibly fsyncing) store call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::from(ApiError::internal(format!("request task failed: {e}"))))?
}

fn dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "unsupported dryRun value {v:?} (supported: All)"
        ))),
    }
}

fn list(state: &ApiState, resource: Resource, namespace: Option<&str>, q: &Query) -> ApiResult {
    let sel = Selector::parse(resource, q.get("labelSelector"), q.get("fieldSelector"))?;
    let (items, rv) = state.store.list(resource, namespace)?;
    let items: Vec<Value> = items.into_iter().filter(|o| sel.matches(o)).collect();
    Ok(axum::Json(json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    }))
    .into_response())
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn time_value(t: Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

fn namespace_exists(store: &dyn Datastore, ns: &str) -> Result<(), Failure> {
    match store.get(&Key::cluster(Resource::Namespaces, ns)) {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => {
            Err(ApiError::not_found(Resource::Namespaces, ns).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn key_of(obj: &Object) -> Key {
    match obj.namespace() {
        Some(ns) if obj.resource().namespaced() => Key::namespaced(obj.resource(), ns, obj.name()),
        _ => Key::cluster(obj.resource(), obj.name()),
    }
}

fn create(
    state: &ApiState,
    resource: Resource,
    namespace: Option<&str>,
    value: Value,
    dry: bool,
) -> Result<Value, Failure> {
    let mut obj = decode(value)?;
    if obj.resource() != resource {
        return Err(ApiError::bad_request(format!(
            "the API version in the data (v1) does not match the expected kind: {} is not {}",
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
    let now = now();
    on_create(&mut obj, namespace, now);
    if let Object::Pod(pod) = &mut obj
        && state.bind_unscheduled
    {
        bind(pod, &state.node_name, now);
    }
    validate(&obj)?;
    if let Some(ns) = obj.namespace() {
        namespace_exists(state.store.as_ref(), ns)?;
    }
    let key = key_of(&obj);
    if dry {
        return match state.store.get(&key) {
            Ok(_) => Err(ApiError::already_exists(resource, &key.name).into()),
            Err(StoreError::NotFound { .. }) => Ok(obj.to_value()),
            Err(e) => Err(e.into()),
        };
    }
    Ok(state.store.create(&key, obj.to_value())?)
}

/// Single node without a scheduler: bind to this node.
fn bind(pod: &mut k8s_openapi::api::core::v1::Pod, node: &str, now: Timestamp) {
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

fn replace(
    state: &ApiState,
    key: &Key,
    value: Value,
    status_only: bool,
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
    let current = state.store.get(key)?;
    let old = Object::from_value_unchecked(key.resource, current.clone())?;
    let next = if status_only {
        // Only the status changes; everything else stays as stored.
        let (Object::Pod(old_pod), Object::Pod(new_pod)) = (&old, &new) else {
            return Err(not_found_path().into());
        };
        let mut pod = old_pod.clone();
        pod.status = new_pod.status.clone();
        Object::Pod(pod)
    } else {
        // System fields the client may leave out are kept.
        let (om, nm) = (old.meta().clone(), new.meta_mut());
        nm.namespace = om.namespace.clone();
        nm.uid = nm.uid.take().or(om.uid);
        nm.creation_timestamp = nm.creation_timestamp.take().or(om.creation_timestamp);
        nm.deletion_timestamp = om.deletion_timestamp;
        nm.deletion_grace_period_seconds = om.deletion_grace_period_seconds;
        nm.generation = om.generation;
        crate::api::defaults::apply_defaults(&mut new);
        if let (Object::Pod(o), Object::Pod(n)) = (&old, &mut new) {
            n.status = o.status.clone();
        }
        validate(&new)?;
        validate_update(&old, &new)?;
        new
    };
    let mut v = next.to_value();
    if dry {
        if let Some(m) = v.pointer_mut("/metadata")
            && let Some(m) = m.as_object_mut()
        {
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
    let expected = expected.or_else(|| resource_version(&current));
    Ok(state.store.update(key, v, expected)?)
}

/// `DeleteOptions` from the query and/or the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<u64>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(q: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions {
            grace_period_seconds: q.int("gracePeriodSeconds")?,
            dry_run: dry_run(q)?,
            ..Default::default()
        };
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
        }
        if o.grace_period_seconds.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request("gracePeriodSeconds must be >= 0"));
        }
        Ok(o)
    }
}

fn delete(state: &ApiState, key: &Key, opts: &DeleteOptions) -> Result<Value, Failure> {
    let current = state.store.get(key)?;
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
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let graceful = key.resource == Resource::Pods && bound && opts.grace_period_seconds != Some(0);
    if !graceful {
        if opts.dry_run {
            return Ok(current);
        }
        return Ok(state.store.delete(key, rv)?);
    }
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
    let at = now()
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

/// Creates `default` and `kube-system` when missing.
pub fn ensure_namespaces(store: &dyn Datastore) -> Result<(), StoreError> {
    for name in ["default", "kube-system"] {
        let key = Key::cluster(Resource::Namespaces, name);
        match store.get(&key) {
            Ok(_) => continue,
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut obj = Object::Namespace(k8s_openapi::api::core::v1::Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        });
        on_create(&mut obj, None, now());
        match store.create(&key, obj.to_value()) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("pods").unwrap(),
            Target::Collection {
                resource: Resource::Pods,
                namespace: None
            }
        );
        assert_eq!(
            parse_path("namespaces/kube-system").unwrap(),
            Target::Item {
                key: Key::cluster(Resource::Namespaces, "kube-system"),
                status: false
            }
        );
        assert_eq!(
            parse_path("namespaces/a/pods/b/status").unwrap(),
            Target::Item {
                key: Key::namespaced(Resource::Pods, "a", "b"),
                status: true
            }
        );
        for bad in [
            "widgets",
            "namespaces/a/namespaces",
            "namespaces/a/configmaps/b/status",
            "a/b/c/d/e/f",
        ] {
            assert_eq!(parse_path(bad).unwrap_err().code(), 404, "{bad}");
        }
    }

    #[test]
    fn delete_options_from_query_and_body() {
        let q = Query::parse(Some("gracePeriodSeconds=5"));
        let o = DeleteOptions::parse(
            &q,
            br#"{"gracePeriodSeconds": 9, "preconditions": {"uid": "u"}}"#,
        )
        .unwrap();
        assert_eq!(o.grace_period_seconds, Some(5));
        assert_eq!(o.uid.as_deref(), Some("u"));
        let o = DeleteOptions::parse(&Query::default(), br#"{"gracePeriodSeconds": 0}"#).unwrap();
        assert_eq!(o.grace_period_seconds, Some(0));
        assert!(DeleteOptions::parse(&Query::default(), b"{garbage").is_err());
        assert!(DeleteOptions::parse(&Query::parse(Some("gracePeriodSeconds=-1")), b"").is_err());
    }
}
