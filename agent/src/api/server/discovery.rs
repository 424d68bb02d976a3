//! Discovery and health: `/version`, `/healthz`, `/readyz`, `/livez`,
//! `/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]` — what kubectl
//! asks before anything else.
//!
//! `/api/v1` lists only core resources, `/apis/{group}/v1` only that
//! group's; each entry has its verbs, short names, scope, and the
//! subresources (`pods/status`, `deployments/scale`, …) are listed after
//! their resource.

use axum::Json;
use axum::Router;
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

async fn api_versions() -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
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

async fn api_groups() -> Json<Value> {
    Json(api_group_list())
}

/// The subresources of a resource: name suffix, kind, verbs.
fn subresources(r: Resource) -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let status = || ("status", r.kind(), vec!["get", "patch", "update"]);
    match r {
        Resource::Pods => vec![
            ("log", "Pod", vec!["get"]),
            ("exec", "PodExecOptions", vec!["create", "get"]),
            ("status", "Pod", vec!["get", "update"]),
        ],
        Resource::Namespaces => vec![
            ("finalize", "Namespace", vec!["update"]),
            ("status", "Namespace", vec!["get", "update"]),
        ],
        Resource::Deployments | Resource::ReplicaSets => {
            vec![("scale", "Scale", vec!["get", "update"]), status()]
        }
        Resource::Nodes | Resource::Services | Resource::DaemonSets | Resource::Jobs => {
            vec![status()]
        }
        _ => Vec::new(),
    }
}

/// The `APIResourceList` of one group version (`""`: the core `v1`).
pub fn group_resource_list(group: &str) -> Value {
    let crud = ["create", "delete", "get", "list", "update", "watch"];
    let mut resources = Vec::new();
    for r in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        resources.push(json!({
            "name": r.plural(),
            "singularName": r.kind().to_ascii_lowercase(),
            "namespaced": r.namespaced(),
            "kind": r.kind(),
            "verbs": crud,
            "shortNames": r.short_names(),
        }));
        for (sub, kind, verbs) in subresources(r) {
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural()),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": kind,
                "verbs": verbs,
            });
            if kind == "Scale"
                && let Some(m) = e.as_object_mut()
            {
                m.insert("group".into(), "autoscaling".into());
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
}
