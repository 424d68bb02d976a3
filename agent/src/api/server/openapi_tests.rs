#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn patch_op<'a>(doc: &'a Value, path: &str) -> &'a Value {
    &doc["paths"][path]["patch"]
}

#[test]
fn core_document_has_what_kubectl_checks() {
    let doc = group_document("");
    let op = patch_op(&doc, "/api/v1/namespaces/{namespace}/pods/{name}");
    assert_eq!(op["x-kubernetes-action"], "patch");
    assert_eq!(
        op["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(params.contains(&p), "{p} missing: {params:?}");
    }
    let content = op["requestBody"]["content"].as_object().unwrap();
    for ct in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(ct), "{ct}");
    }
    let schemas = &doc["components"]["schemas"];
    let pod = &schemas["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod",
        "{pod}"
    );
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"][0]["kind"],
        "PodList"
    );
    // Every $ref resolves.
    let text = doc.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.get(name).is_some(), "dangling $ref {name}");
    }
    assert!(doc["paths"].get("/api/v1/pods").is_some());
    assert!(doc["paths"]["/api/v1/nodes/{name}/status"]["patch"].is_object());
    assert!(
        doc["paths"]
            .get("/api/v1/namespaces/{namespace}/deployments")
            .is_none()
    );
}

#[test]
fn apps_document_and_index() {
    let doc = group_document("apps");
    let scale = patch_op(
        &doc,
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
    );
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    assert!(
        doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
            ["x-kubernetes-group-version-kind"]
            .is_array()
    );
    let d = docs();
    let paths = d.index["paths"].as_object().unwrap();
    for p in [
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/coordination.k8s.io/v1",
        "apis/discovery.k8s.io/v1",
    ] {
        let url = paths[p]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
        assert!(d.docs.contains_key(p));
    }
}
