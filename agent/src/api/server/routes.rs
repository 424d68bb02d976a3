//! CRUD on `/api/v1/...` and `/apis/{group}/{version}/...`: list (+ watch),
//! get, create, replace, status, scale, delete, for every [`Resource`].
//!
//! Paths are parsed in [`super::paths`] (one catch-all route per prefix) so
//! that cluster-scoped and namespaced forms cannot shadow each other and a
//! resource answers only under its own group. Writes live in
//! [`super::writes`], deletion in [`super::delete`], `/scale` in
//! [`super::scale`].

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::delete::{DeleteOptions, delete};
use super::patch::{self, FieldValidation, PatchRequest, with_warnings};
use super::paths::{Sub, Target, group_of, not_found_path, parse_path};
use super::query::{Query, parse_object, read_body};
use super::selectors::Selector;
use super::writes::{create, replace};
use super::{ApiResult, ApiState, Failure, discovery, podsub, scale, watch};
use crate::api::defaults::on_create;
use crate::api::manifest::Object;
use crate::api::services::ServiceNetwork;
use crate::api::{ApiError, Resource};
use crate::store::{Datastore, Key, StoreError};

pub use super::delete::DEFAULT_GRACE_SECONDS;

/// The handler behind `/api/v1/{*rest}`.
pub async fn dispatch(
    State(state): State<ApiState>,
    Extension(net): Extension<ServiceNetwork>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let target = parse_path("", &rest)?;
    handle(state, net, method, target, raw, headers, body).await
}

/// The handler behind `/apis/{*rest}`: `{group}` and `{group}/{version}`
/// are discovery documents, deeper paths name objects.
pub async fn dispatch_group(
    State(state): State<ApiState>,
    Extension(net): Extension<ServiceNetwork>,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let mut parts = rest.trim_end_matches('/').splitn(3, '/');
    let group = parts.next().unwrap_or("");
    let version = parts.next();
    let tail = parts.next();
    let get_only = |v: Value| -> ApiResult {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )
            .into());
        }
        Ok(axum::Json(v).into_response())
    };
    match (version, tail) {
        (None, _) => {
            let doc = discovery::api_group(group).ok_or_else(not_found_path)?;
            get_only(doc)
        }
        (Some(v), None) => {
            let g = group_of(group, v).ok_or_else(not_found_path)?;
            get_only(discovery::group_resource_list(g))
        }
        (Some(v), Some(tail)) => {
            let g = group_of(group, v).ok_or_else(not_found_path)?;
            let target = parse_path(g, tail)?;
            handle(state, net, method, target, raw, headers, body).await
        }
    }
}

async fn handle(
    state: ApiState,
    net: ServiceNetwork,
    method: Method,
    target: Target,
    raw: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
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
                watch::watch(state, resource, namespace, &q, &headers).await
            } else {
                list(&state, resource, namespace.as_deref(), &q, &headers).await
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
            let (value, warnings) = FieldValidation::from_query(&q)?.prepare(resource, value)?;
            let obj =
                blocking(move || create(&state, &net, resource, namespace.as_deref(), value, dry))
                    .await?;
            let resp = (StatusCode::CREATED, axum::Json(obj)).into_response();
            Ok(with_warnings(resp, &warnings))
        }
        (
            Method::DELETE,
            Target::Collection {
                resource,
                namespace,
            },
        ) => {
            let bytes = read_body(body).await?;
            let opts = DeleteOptions::parse(&q, &bytes)?;
            let sel = Selector::parse(resource, q.get("labelSelector"), q.get("fieldSelector"))?;
            let list = blocking(move || {
                delete_collection(&state, resource, namespace.as_deref(), &sel, &opts)
            })
            .await?;
            Ok(axum::Json(list).into_response())
        }
        (
            Method::POST,
            Target::Item {
                key,
                sub: sub @ (Sub::Eviction | Sub::Binding),
            },
        ) => {
            let value = parse_object(&read_body(body).await?, content_type.as_deref())?;
            let v = blocking(move || match sub {
                Sub::Eviction => podsub::evict(&state, &key, &value),
                _ => podsub::bind(&state, &key, &value),
            })
            .await?;
            Ok((StatusCode::CREATED, axum::Json(v)).into_response())
        }
        (Method::PATCH, Target::Item { key, sub }) => {
            let ty = PatchRequest::patch_type(content_type.as_deref())?;
            let req = PatchRequest {
                key,
                sub,
                ty,
                body: read_body(body).await?.to_vec(),
                dry: dry_run(&q)?,
                manager: q.get("fieldManager").map(str::to_string),
                force: q.flag("force")?,
                validation: FieldValidation::from_query(&q)?,
            };
            blocking(move || patch::run(&state, &net, req)).await
        }
        (Method::GET, Target::Item { key, sub }) => {
            let store = state.store.clone();
            let resource = key.resource;
            let v = blocking(move || Ok(store.get(&key)?)).await?;
            match sub {
                Sub::Scale => Ok(axum::Json(scale::to_scale(&v)).into_response()),
                Sub::Finalize | Sub::Eviction | Sub::Binding => Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
                .into()),
                Sub::Main | Sub::Status => Ok(super::list::item(resource, v, &q, &headers)?),
            }
        }
        (Method::PUT, Target::Item { key, sub }) => {
            let value = parse_object(&read_body(body).await?, content_type.as_deref())?;
            let dry = dry_run(&q)?;
            let (value, warnings) = match sub {
                Sub::Scale => (value, Vec::new()),
                _ => FieldValidation::from_query(&q)?.prepare(key.resource, value)?,
            };
            let obj = blocking(move || match sub {
                Sub::Scale => scale::put_scale(&state, &key, value, dry),
                _ => replace(&state, &net, &key, value, sub, dry),
            })
            .await?;
            Ok(with_warnings(axum::Json(obj).into_response(), &warnings))
        }
        (
            Method::DELETE,
            Target::Item {
                key,
                sub: Sub::Main,
            },
        ) => {
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
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::from(ApiError::internal(format!("request task failed: {e}"))))?
}

pub(super) fn dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "unsupported dryRun value {v:?} (supported: All)"
        ))),
    }
}

async fn list(
    state: &ApiState,
    resource: Resource,
    namespace: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult {
    super::list::list(state, resource, namespace, q, headers).await
}

/// DELETE on a collection: every matching object is deleted as a DELETE of
/// it would be (graceful pods, finalizers, propagation); the answer is the
/// list of what was deleted or marked. Objects gone meanwhile are skipped.
fn delete_collection(
    state: &ApiState,
    resource: Resource,
    namespace: Option<&str>,
    sel: &Selector,
    opts: &DeleteOptions,
) -> Result<Value, Failure> {
    let (items, rv) = state.store.list(resource, namespace)?;
    let mut out = Vec::new();
    for item in items.into_iter().filter(|o| sel.matches(o)) {
        let key = watch::key_of(resource, &item);
        match delete(state, &key, opts) {
            Ok(v) => out.push(v),
            Err(f) if f.error.reason == crate::api::error::Reason::NotFound => {}
            Err(f) => return Err(f),
        }
    }
    Ok(json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": out,
    }))
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
        on_create(&mut obj, None, k8s_openapi::jiff::Timestamp::now());
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
