//! Discovery and health: `/version`, `/healthz`, `/readyz`, `/livez`,
//! `/api`, `/api/v1`, `/apis` — what kubectl asks before anything else.

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

async fn api_groups() -> Json<Value> {
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
}

/// The `APIResourceList` of `/api/v1`.
pub fn resource_list() -> Value {
    let crud = ["create", "delete", "get", "list", "update", "watch"];
    let mut resources = Vec::new();
    for r in Resource::ALL {
        resources.push(json!({
            "name": r.plural(),
            "singularName": r.kind().to_ascii_lowercase(),
            "namespaced": r.namespaced(),
            "kind": r.kind(),
            "verbs": crud,
            "shortNames": r.short_names(),
        }));
        if r == Resource::Pods {
            for (sub, verbs) in [
                ("pods/log", vec!["get"]),
                ("pods/exec", vec!["create", "get"]),
                ("pods/status", vec!["get", "update"]),
            ] {
                let kind = if sub == "pods/exec" {
                    "PodExecOptions"
                } else {
                    "Pod"
                };
                resources.push(json!({
                    "name": sub,
                    "singularName": "",
                    "namespaced": true,
                    "kind": kind,
                    "verbs": verbs,
                }));
            }
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": resources,
    })
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
    }
}
