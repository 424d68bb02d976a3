//! `components.schemas` of the OpenAPI v3 documents: k8s-openapi's
//! `schemars` schemas (named as kube-apiserver names them,
//! `io.k8s.api.core.v1.Pod`), plus what kubectl reads that they lack:
//! - `x-kubernetes-group-version-kind` (an array) on each served kind and
//!   its `<Kind>List`, so `kubectl explain` and `kubectl apply` find them;
//! - `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` on the
//!   fields the Go types tag (the `patchStrategy`/`patchMergeKey` struct
//!   tags of k8s.io/api), so the strategic merge patch kubectl computes
//!   from the v3 document merges lists by key as the API server does.
//!   Only the types reachable from the served kinds are listed.

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::api::Resource;

use k8s_openapi::api::{apps, batch, coordination, core, discovery};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

/// A generator writing `#/components/schemas/...` references.
pub fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator()
}

fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    g.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Adds the schema of `r`'s kind (and everything it references) to `g`;
/// returns its name.
pub fn add_kind(g: &mut SchemaGenerator, r: Resource) -> String {
    use Resource as R;
    match r {
        R::Pods => add::<core::v1::Pod>(g),
        R::ConfigMaps => add::<core::v1::ConfigMap>(g),
        R::Secrets => add::<core::v1::Secret>(g),
        R::Namespaces => add::<core::v1::Namespace>(g),
        R::Events => add::<core::v1::Event>(g),
        R::Nodes => add::<core::v1::Node>(g),
        R::Services => add::<core::v1::Service>(g),
        R::Endpoints => add::<core::v1::Endpoints>(g),
        R::ServiceAccounts => add::<core::v1::ServiceAccount>(g),
        R::Deployments => add::<apps::v1::Deployment>(g),
        R::ReplicaSets => add::<apps::v1::ReplicaSet>(g),
        R::DaemonSets => add::<apps::v1::DaemonSet>(g),
        R::Jobs => add::<batch::v1::Job>(g),
        R::Leases => add::<coordination::v1::Lease>(g),
        R::EndpointSlices => add::<discovery::v1::EndpointSlice>(g),
    }
}

/// Names of the shared schemas every document references.
#[derive(Debug, Clone)]
pub struct Shared {
    pub status: String,
    pub delete_options: String,
    pub patch: String,
    pub list_meta: String,
    pub scale: String,
}

pub fn add_shared(g: &mut SchemaGenerator) -> Shared {
    Shared {
        status: add::<meta::Status>(g),
        delete_options: add::<meta::DeleteOptions>(g),
        patch: add::<meta::Patch>(g),
        list_meta: add::<meta::ListMeta>(g),
        scale: add::<k8s_openapi::api::autoscaling::v1::Scale>(g),
    }
}

/// `#/components/schemas/<name>`.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The `<Kind>List` schema of a resource whose kind schema is `kind_schema`.
pub fn list_schema(r: Resource, kind_schema: &str, list_meta: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", r.kind(), r.kind()),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": reference(kind_schema)},
            "metadata": {"allOf": [reference(list_meta)], "default": {}},
        },
        "x-kubernetes-group-version-kind": [gvk(r.group(), &format!("{}List", r.kind()))],
    })
}

pub fn gvk(group: &str, kind: &str) -> Value {
    json!({"group": group, "version": "v1", "kind": kind})
}

/// `(schema, property, strategy, merge key)` from k8s.io/api's struct tags.
const PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

/// Adds the patch extensions and the GVK extensions to `schemas`;
/// `kinds` maps a kind's schema name to its group and kind.
pub fn annotate(schemas: &mut Map<String, Value>, kinds: &[(String, &str, &str)]) {
    for (schema, prop, strategy, key) in PATCH_META {
        let Some(p) = schemas
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*prop))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        p.insert("x-kubernetes-patch-strategy".into(), (*strategy).into());
        if let Some(k) = key {
            p.insert("x-kubernetes-patch-merge-key".into(), (*k).into());
        }
    }
    for (name, group, kind) in kinds {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(group, kind)]),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_meta_entry_exists() {
        let mut g = generator();
        for r in Resource::ALL {
            add_kind(&mut g, r);
        }
        let defs = g.take_definitions(true);
        for (schema, prop, _, _) in PATCH_META {
            assert!(
                defs.get(*schema)
                    .and_then(|s| s["properties"].get(*prop))
                    .is_some(),
                "{schema}.{prop} is not in the generated schemas"
            );
        }
        let c = &defs["io.k8s.api.core.v1.Container"]["properties"]["image"];
        assert_eq!(c["type"], "string");
    }
}
