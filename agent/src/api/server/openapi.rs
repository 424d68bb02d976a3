//! OpenAPI: `/openapi/v3` (the index) and `/openapi/v3/api/v1`,
//! `/openapi/v3/apis/<group>/v1` (one document per group version), as
//! kube-apiserver serves them; what kubectl reads to decide that the server
//! validates fields (`kubectl apply` then sends `fieldValidation=Strict`
//! instead of validating client-side), to compute strategic merge patches,
//! and for `kubectl explain`.
//!
//! Guarantees:
//! - Every served resource has its paths (namespaced and all-namespaces
//!   collections, items, `/status`, `/scale`, the `watch/` forms) with one
//!   operation per verb, each carrying `x-kubernetes-action` and
//!   `x-kubernetes-group-version-kind`; writes list `dryRun`,
//!   `fieldManager`, `fieldValidation` (and `force` on PATCH); the PATCH
//!   request body lists the four patch content types.
//! - The documents are built once, on first use, and cached; the index's
//!   `?hash=` changes only when a document does.
//! - `/openapi/v2` answers 406 `NotAcceptable`: kubectl asks it only for
//!   protobuf, which this server does not speak; kubectl then uses the v3
//!   documents or its compiled-in types.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::discovery::groups;
use super::{ApiState, Failure};
use crate::api::error::Reason;
use crate::api::{ApiError, Resource};
use schemas::{Shared, reference};

#[path = "openapi_schemas.rs"]
pub mod schemas;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/openapi/v3", get(index))
        .route("/openapi/v3/{*path}", get(document))
        .route("/openapi/v2", get(v2))
}

/// The built documents: path (`api/v1`) → (hash, JSON bytes).
struct Docs {
    index: Value,
    docs: BTreeMap<String, (String, bytes::Bytes)>,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut docs = BTreeMap::new();
        let mut paths = Map::new();
        let mut gvs = vec![""];
        gvs.extend(groups());
        for g in gvs {
            let path = gv_path(g);
            let body = bytes::Bytes::from(group_document(g).to_string());
            let mut h = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut h);
            let hash = format!("{:016X}", h.finish());
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            docs.insert(path, (hash, body));
        }
        Docs {
            index: json!({"paths": paths}),
            docs,
        }
    })
}

/// `api/v1` or `apis/<group>/v1`.
pub fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

/// The documents, built off the async workers the first time (schema
/// generation takes a while).
async fn built() -> Result<&'static Docs, Failure> {
    tokio::task::spawn_blocking(docs)
        .await
        .map_err(|e| Failure::from(ApiError::internal(format!("building OpenAPI: {e}"))))
}

async fn index() -> Result<Response, Failure> {
    Ok(axum::Json(built().await?.index.clone()).into_response())
}

async fn document(Path(path): Path<String>) -> Result<Response, Failure> {
    let (_, body) = built()
        .await?
        .docs
        .get(path.trim_end_matches('/'))
        .ok_or_else(|| {
            ApiError::new(
                Reason::NotFound,
                format!("the OpenAPI document {path:?} is not served"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response())
}

async fn v2() -> Failure {
    Failure::from(ApiError::new(
        Reason::NotAcceptable,
        "only OpenAPI v3 is served (/openapi/v3); /openapi/v2 is not available",
    ))
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    })
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted. Valid values: All",
        ),
        query_param(
            "fieldManager",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request \
             containing unknown or duplicate fields. Valid values: Ignore, Warn, Strict.",
        ),
    ];
    if patch {
        p.push(query_param(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
        ));
    }
    p
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .into_iter()
    .map(|(n, t)| query_param(n, t, n))
    .collect()
}

fn delete_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "string", "dryRun"),
        query_param("gracePeriodSeconds", "integer", "gracePeriodSeconds"),
        query_param("propagationPolicy", "string", "propagationPolicy"),
    ]
}

fn path_param(name: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": format!("{name} of the object"),
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn pascal(group: &str) -> String {
    let first = group.split('.').next().unwrap_or("");
    let first = if first.is_empty() { "core" } else { first };
    let mut c = first.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn json_content(schema: &Value) -> Value {
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

/// One operation.
struct Op<'a> {
    action: &'static str,
    verb: &'static str,
    scope: &'static str,
    kind_group: &'a str,
    kind: &'a str,
    params: Vec<Value>,
    body: Option<Value>,
    response: Value,
}

impl Op<'_> {
    fn to_json(&self, tag: &str, suffix: &str) -> Value {
        let mut op = json!({
            "description": format!("{} {}", self.action, self.kind),
            "operationId": format!("{}{}V1{}{}{suffix}", self.verb, pascal(self.kind_group), self.scope, self.kind),
            "tags": [tag],
            "parameters": self.params,
            "responses": {
                "200": {"description": "OK", "content": json_content(&self.response)},
                "401": {"description": "Unauthorized"},
            },
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": schemas::gvk(self.kind_group, self.kind),
        });
        if let (Some(b), Some(m)) = (&self.body, op.as_object_mut()) {
            m.insert("requestBody".into(), b.clone());
        }
        op
    }
}

fn patch_body(patch_schema: &str) -> Value {
    let r = reference(patch_schema);
    json!({
        "content": {
            "application/apply-patch+yaml": {"schema": r},
            "application/json-patch+json": {"schema": r},
            "application/merge-patch+json": {"schema": r},
            "application/strategic-merge-patch+json": {"schema": r},
        },
        "required": true,
    })
}

fn object_body(schema: &Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

/// The paths of one resource.
fn resource_paths(
    r: Resource,
    kind_schema: &str,
    shared: &Shared,
    tag: &str,
    out: &mut Map<String, Value>,
) {
    let prefix = format!("/{}", gv_path(r.group()));
    let kind = r.kind();
    let obj = reference(kind_schema);
    let list = reference(&list_kind_name(kind_schema));
    let status = reference(&shared.status);
    let g = r.group();
    let (coll, scope, ns_param) = if r.namespaced() {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural()),
            "Namespaced",
            vec![path_param("namespace")],
        )
    } else {
        (format!("{prefix}/{}", r.plural()), "", vec![])
    };
    let op = |action, verb, scope, params, body, response: &Value| Op {
        action,
        verb,
        scope,
        kind_group: g,
        kind,
        params,
        body,
        response: response.clone(),
    };
    let mut dc_params = list_params();
    dc_params.extend(delete_params());
    let collection = json!({
        "get": op("list", "list", scope, list_params(), None, &list).to_json(tag, ""),
        "post": op("post", "create", scope, write_params(false), Some(object_body(&obj)), &obj).to_json(tag, ""),
        "delete": op("deletecollection", "deleteCollection", scope, dc_params, Some(object_body(&reference(&shared.delete_options))), &status).to_json(tag, ""),
        "parameters": ns_param,
    });
    out.insert(coll.clone(), collection);
    let mut item_params = ns_param.clone();
    item_params.insert(0, path_param("name"));
    let item_ops = |suffix: &str, response: &Value| {
        json!({
            "get": op("get", "read", scope, vec![], None, response).to_json(tag, suffix),
            "put": op("put", "replace", scope, write_params(false), Some(object_body(response)), response).to_json(tag, suffix),
            "patch": op("patch", "patch", scope, write_params(true), Some(patch_body(&shared.patch)), response).to_json(tag, suffix),
            "parameters": item_params,
        })
    };
    let mut item = item_ops("", &obj);
    if let Some(m) = item.as_object_mut() {
        m.insert(
            "delete".into(),
            op(
                "delete",
                "delete",
                scope,
                delete_params(),
                Some(object_body(&reference(&shared.delete_options))),
                &status,
            )
            .to_json(tag, ""),
        );
    }
    out.insert(format!("{coll}/{{name}}"), item);
    for s in super::discovery::subresources(r) {
        match s.name {
            "status" => {
                out.insert(format!("{coll}/{{name}}/status"), item_ops("Status", &obj));
            }
            "scale" => {
                let mut v = item_ops("Scale", &reference(&shared.scale));
                for verb in ["get", "put", "patch"] {
                    v[verb]["x-kubernetes-group-version-kind"] =
                        schemas::gvk("autoscaling", "Scale");
                }
                out.insert(format!("{coll}/{{name}}/scale"), v);
            }
            _ => {}
        }
    }
    let watch_event = json!({"type": "object"});
    if r.namespaced() {
        out.insert(
            format!("{prefix}/{}", r.plural()),
            json!({"get": op("list", "list", "", list_params(), None, &list).to_json(tag, "ForAllNamespaces")}),
        );
    }
    let watch_coll = coll.replacen(&prefix, &format!("{prefix}/watch"), 1);
    out.insert(
        watch_coll,
        json!({
            "get": op("watchlist", "watch", scope, list_params(), None, &watch_event).to_json(tag, "List"),
            "parameters": ns_param,
        }),
    );
}

fn list_kind_name(kind_schema: &str) -> String {
    format!("{kind_schema}List")
}

/// The OpenAPI v3 document of one group version (`""`: core `v1`).
pub fn group_document(group: &str) -> Value {
    let mut g = schemas::generator();
    let shared = schemas::add_shared(&mut g);
    let tag = format!(
        "{}_v1",
        if group.is_empty() {
            "core".to_string()
        } else {
            group.split('.').next().unwrap_or(group).to_string()
        }
    );
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    let mut lists = Vec::new();
    for r in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        let name = schemas::add_kind(&mut g, r);
        resource_paths(r, &name, &shared, &tag, &mut paths);
        lists.push((
            list_kind_name(&name),
            schemas::list_schema(r, &name, &shared.list_meta),
        ));
        kinds.push((name, r.group(), r.kind()));
    }
    let mut defs = g.take_definitions(true);
    schemas::annotate(&mut defs, &kinds);
    if let Some(s) = defs.get_mut(&shared.scale).and_then(Value::as_object_mut) {
        s.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([schemas::gvk("autoscaling", "Scale")]),
        );
    }
    for (name, schema) in lists {
        defs.insert(name, schema);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::MAJOR, super::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": defs},
    })
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
