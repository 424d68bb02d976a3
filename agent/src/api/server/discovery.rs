//! Discovery and health: `/version`, `/healthz`, `/readyz`, `/livez`,
//! `/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]` — what kubectl
//! asks before anything else.
//!
//! `/api/v1` lists only core resources, `/apis/{group}/v1` only that
//! group's; each entry has its verbs (every resource: `create delete
//! deletecollection get list patch update watch`), short names, scope,
//! categories (`all` as on the API server), and the subresources
//! (`pods/status`, `deployments/scale`, …) are listed after their resource.
//!
//! Aggregated discovery: when `Accept` on `/api` or `/apis` names
//! `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io` (`v=v2` or
//! `v2beta1`) before plain JSON, the answer is the
//! `apidiscovery.k8s.io/v2 APIGroupDiscoveryList` of the same resources,
//! with that media type as `Content-Type` (kubectl 1.30+ asks for it
//! first and falls back to the legacy documents otherwise). The OpenAPI
//! documents are served from here too ([`super::openapi`]).

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::ApiState;
use crate::api::Resource;

/// The Kubernetes version the API speaks (k8s-openapi's `v1_33`).
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .route("/livez", get(ok))
        .route("/api", get(api_versions))
        .route("/api/v1", get(api_v1))
        .route("/apis", get(api_groups))
        .merge(super::openapi::routes())
}

/// The media type of an aggregated discovery answer.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether `Accept` asks for aggregated discovery before plain JSON.
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        if parts.next() != Some("application/json") {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        if params.is_empty() {
            return false;
        }
        let has = |k: &str, v: &[&str]| params.iter().any(|(pk, pv)| *pk == k && v.contains(pv));
        if has("as", &["APIGroupDiscoveryList"])
            && has("g", &["apidiscovery.k8s.io"])
            && has("v", &["v2", "v2beta1"])
        {
            return true;
        }
    }
    false
}

fn aggregated(doc: Value) -> Response {
    ([(header::CONTENT_TYPE, AGGREGATED)], Json(doc)).into_response()
}

async fn ok() -> &'static str {
    "ok"
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-herd"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", go_arch()),
    }))
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn api_versions(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(discovery_list(&[""]));
    }
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

/// The groups served under `/apis`, in order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in Resource::ALL {
        if !r.group().is_empty() && !out.contains(&r.group()) {
            out.push(r.group());
        }
    }
    out
}

fn group_doc(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/{group}`: the `APIGroup`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut v = group_doc(group);
        if let Some(m) = v.as_object_mut() {
            m.insert("kind".into(), "APIGroup".into());
            m.insert("apiVersion".into(), "v1".into());
        }
        v
    })
}

/// `/apis`: the `APIGroupList`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group_doc).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

async fn api_groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(discovery_list(&groups()));
    }
    Json(api_group_list()).into_response()
}

/// `categories` of a resource (`all` as on the API server).
pub fn categories(r: Resource) -> Vec<&'static str> {
    use Resource as R;
    match r {
        R::Pods | R::Services | R::Deployments | R::ReplicaSets | R::DaemonSets | R::Jobs => {
            vec!["all"]
        }
        _ => Vec::new(),
    }
}

/// The verbs of every top-level resource.
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The `apidiscovery.k8s.io/v2 APIGroupDiscoveryList` of `groups` (`""`:
/// the core group, `/api`).
pub fn discovery_list(groups: &[&str]) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let resources: Vec<Value> = Resource::ALL
                .into_iter()
                .filter(|r| r.group() == *g)
                .map(|r| {
                    let subs: Vec<Value> = subresources(r)
                        .into_iter()
                        .map(|s| {
                            json!({
                                "subresource": s.name,
                                "responseKind": {"group": s.group, "version": "v1", "kind": s.kind},
                                "verbs": s.verbs,
                            })
                        })
                        .collect();
                    json!({
                        "resource": r.plural(),
                        "responseKind": {"group": r.group(), "version": "v1", "kind": r.kind()},
                        "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
                        "singularResource": r.kind().to_ascii_lowercase(),
                        "verbs": VERBS,
                        "shortNames": r.short_names(),
                        "categories": categories(r),
                        "subresources": subs,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": g},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// A subresource as discovery lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// Group of the kind it answers with (`autoscaling` for `Scale`).
    pub group: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

const fn sub(
    name: &'static str,
    group: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        group,
        kind,
        verbs,
    }
}

const GPU: &[&str] = &["get", "patch", "update"];

/// The subresources of a resource, in name order.
pub fn subresources(r: Resource) -> Vec<Subresource> {
    let status = sub("status", r.group(), r.kind(), GPU);
    match r {
        Resource::Pods => vec![
            sub("binding", "", "Binding", &["create"]),
            sub("eviction", "policy", "Eviction", &["create"]),
            sub("exec", "", "PodExecOptions", &["create", "get"]),
            sub("log", "", "Pod", &["get"]),
            sub(
                "portforward",
                "",
                "PodPortForwardOptions",
                &["create", "get"],
            ),
            status,
        ],
        Resource::Namespaces => vec![sub("finalize", "", "Namespace", &["update"]), status],
        Resource::Deployments | Resource::ReplicaSets => {
            vec![sub("scale", "autoscaling", "Scale", GPU), status]
        }
        Resource::Nodes | Resource::Services | Resource::DaemonSets | Resource::Jobs => {
            vec![status]
        }
        _ => Vec::new(),
    }
}

/// The `APIResourceList` of one group version (`""`: the core `v1`).
pub fn group_resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for r in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        resources.push(json!({
            "name": r.plural(),
            "singularName": r.kind().to_ascii_lowercase(),
            "namespaced": r.namespaced(),
            "kind": r.kind(),
            "verbs": VERBS,
            "shortNames": r.short_names(),
            "categories": categories(r),
        }));
        for s in subresources(r) {
            let mut e = json!({
                "name": format!("{}/{}", r.plural(), s.name),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group()
                && let Some(m) = e.as_object_mut()
            {
                m.insert("group".into(), s.group.into());
                m.insert("version".into(), "v1".into());
            }
            resources.push(e);
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// The `APIResourceList` of `/api/v1` (core resources only).
pub fn resource_list() -> Value {
    group_resource_list("")
}

async fn api_v1() -> Json<Value> {
    Json(resource_list())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_resource_and_subresource() {
        let v = resource_list();
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for n in [
            "pods",
            "pods/log",
            "pods/exec",
            "pods/status",
            "configmaps",
            "secrets",
            "namespaces",
            "events",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let ns = &v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "namespaces")
            .unwrap();
        assert_eq!(ns["namespaced"], false);
        assert_eq!(ns["shortNames"][0], "ns");
        for n in ["deployments", "jobs", "leases", "endpointslices"] {
            assert!(!names.contains(&n), "{n} is not core");
        }
        for n in ["services", "services/status", "nodes/status", "endpoints"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
    }

    #[test]
    fn groups_list_their_resources() {
        assert_eq!(
            groups(),
            ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"]
        );
        let v = group_resource_list("apps");
        assert_eq!(v["groupVersion"], "apps/v1");
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/scale"), "{names:?}");
        assert!(names.contains(&"daemonsets/status"), "{names:?}");
        assert!(!names.contains(&"pods"));
        assert_eq!(
            api_group("batch").unwrap()["preferredVersion"]["groupVersion"],
            "batch/v1"
        );
        assert!(api_group("extensions").is_none());
        assert_eq!(api_group_list()["groups"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn aggregated_negotiation_and_document() {
        use axum::http::HeaderValue;
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, HeaderValue::from_static(v));
            m
        };
        assert!(wants_aggregated(&h(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
             application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
             application/json"
        )));
        assert!(!wants_aggregated(&h("application/json")));
        assert!(!wants_aggregated(&h(
            "application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )));
        assert!(!wants_aggregated(&HeaderMap::new()));

        let core = discovery_list(&[""]);
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let resources = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let pods = resources.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["verbs"], json!(VERBS));
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(
            subs,
            [
                "binding",
                "eviction",
                "exec",
                "log",
                "portforward",
                "status"
            ]
        );
        let apps = discovery_list(&groups());
        let deploy = &apps["items"][0]["versions"][0]["resources"][0];
        assert_eq!(apps["items"][0]["metadata"]["name"], "apps");
        assert_eq!(deploy["resource"], "deployments");
        assert_eq!(
            deploy["subresources"][0]["responseKind"]["group"],
            "autoscaling"
        );
        let legacy = group_resource_list("");
        let cm = legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "configmaps")
            .unwrap();
        assert!(cm["verbs"].as_array().unwrap().contains(&json!("patch")));
        assert!(
            cm["verbs"]
                .as_array()
                .unwrap()
                .contains(&json!("deletecollection"))
        );
    }
}
