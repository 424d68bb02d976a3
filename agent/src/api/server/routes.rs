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
use super::paths::{Sub, Target, group_of, not_found_path, parse_path};
use super::query::{Query, parse_object, read_body};
use super::selectors::Selector;
use super::writes::{create, replace};
use super::{ApiResult, ApiState, Failure, discovery, scale, watch};
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
            let obj =
                blocking(move || create(&state, &net, resource, namespace.as_deref(), value, dry))
                    .await?;
            Ok((StatusCode::CREATED, axum::Json(obj)).into_response())
        }
        (Method::GET, Target::Item { key, sub }) => {
            let store = state.store.clone();
            let v = blocking(move || Ok(store.get(&key)?)).await?;
            match sub {
                Sub::Scale => Ok(axum::Json(scale::to_scale(&v)).into_response()),
                Sub::Finalize => Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
                .into()),
                Sub::Main | Sub::Status => Ok(axum::Json(v).into_response()),
            }
        }
        (Method::PUT, Target::Item { key, sub }) => {
            let value = parse_object(&read_body(body).await?, content_type.as_deref())?;
            let dry = dry_run(&q)?;
            let obj = blocking(move || match sub {
                Sub::Scale => scale::put_scale(&state, &key, value, dry),
                _ => replace(&state, &net, &key, value, sub, dry),
            })
            .await?;
            Ok(axum::Json(obj).into_response())
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
