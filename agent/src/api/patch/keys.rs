//! How each list and map of the served kinds merges.
//!
//! Two tables, both keyed by the field path from the object root with list
//! items transparent (`spec.template.spec.containers.ports`):
//!
//! - [`strategic`]: the `patchStrategy`/`patchMergeKey` struct tags of
//!   k8s.io/api, which strategic merge patch (client-side `kubectl apply`,
//!   `kubectl patch`) follows. A list not named here is atomic: the patch
//!   replaces it.
//! - [`list_type`]: the `x-kubernetes-list-type`/`x-kubernetes-list-map-keys`
//!   markers server-side apply follows. They differ from the patch tags in
//!   places (container ports are keyed by `containerPort` and `protocol`).
//!
//! Only the kinds in [`Resource`] are covered, which is every kind the API
//! serves.

use crate::api::Resource;

/// How a list field merges under strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// No `patchStrategy`: the patch replaces the list.
    Atomic,
    /// `patchStrategy:"merge"` with a `patchMergeKey`.
    MergeKey(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars (`finalizers`).
    MergePrimitive,
}

/// The strategic-merge metadata of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    pub list: ListStrategy,
    /// `patchStrategy` includes `retainKeys` (volumes, deployment strategy).
    pub retain_keys: bool,
}

const ATOMIC: FieldMeta = FieldMeta {
    list: ListStrategy::Atomic,
    retain_keys: false,
};

const fn key(k: &'static str) -> FieldMeta {
    FieldMeta {
        list: ListStrategy::MergeKey(k),
        retain_keys: false,
    }
}

const fn key_retain(k: &'static str) -> FieldMeta {
    FieldMeta {
        list: ListStrategy::MergeKey(k),
        retain_keys: true,
    }
}

const PRIMITIVE: FieldMeta = FieldMeta {
    list: ListStrategy::MergePrimitive,
    retain_keys: false,
};

/// Where the `PodSpec` sits in objects of `resource`.
pub fn pod_spec_prefix(resource: Resource) -> Option<&'static [&'static str]> {
    match resource {
        Resource::Pods => Some(&["spec"]),
        Resource::Deployments | Resource::ReplicaSets | Resource::DaemonSets | Resource::Jobs => {
            Some(&["spec", "template", "spec"])
        }
        _ => None,
    }
}

fn has_status_conditions(resource: Resource) -> bool {
    matches!(
        resource,
        Resource::Pods
            | Resource::Nodes
            | Resource::Namespaces
            | Resource::Services
            | Resource::Deployments
            | Resource::ReplicaSets
            | Resource::DaemonSets
            | Resource::Jobs
    )
}

fn is_container_list(f: &str) -> bool {
    matches!(f, "containers" | "initContainers" | "ephemeralContainers")
}

fn pod_spec_meta(rel: &[&str]) -> Option<FieldMeta> {
    Some(match rel {
        [c] if is_container_list(c) => key("name"),
        [c, "ports"] if is_container_list(c) => key("containerPort"),
        [c, "env"] if is_container_list(c) => key("name"),
        [c, "volumeMounts"] if is_container_list(c) => key("mountPath"),
        [c, "volumeDevices"] if is_container_list(c) => key("devicePath"),
        ["volumes"] => key_retain("name"),
        ["imagePullSecrets"] => key("name"),
        ["hostAliases"] => key("ip"),
        ["topologySpreadConstraints"] => key("topologyKey"),
        ["resourceClaims"] => key_retain("name"),
        ["schedulingGates"] => key("name"),
        _ => return None,
    })
}

/// The strategic-merge metadata of the field at `path`.
pub fn strategic(resource: Resource, path: &[&str]) -> FieldMeta {
    if let Some(prefix) = pod_spec_prefix(resource)
        && let Some(rel) = path.strip_prefix(prefix)
        && let Some(m) = pod_spec_meta(rel)
    {
        return m;
    }
    match (resource, path) {
        (_, ["metadata", "finalizers"]) => PRIMITIVE,
        (_, ["metadata", "ownerReferences"]) => key("uid"),
        (r, ["status", "conditions"]) if has_status_conditions(r) => key("type"),
        (Resource::Pods, ["status", "podIPs" | "hostIPs"]) => key("ip"),
        (Resource::Pods, ["status", "resourceClaimStatuses"]) => key_retain("name"),
        (Resource::Nodes, ["status", "addresses"]) => key("type"),
        (Resource::Nodes, ["spec", "podCIDRs"]) => PRIMITIVE,
        (Resource::Services, ["spec", "ports"]) => key("port"),
        (Resource::ServiceAccounts, ["secrets"]) => key("name"),
        (Resource::Deployments, ["spec", "strategy"]) => FieldMeta {
            list: ListStrategy::Atomic,
            retain_keys: true,
        },
        _ => ATOMIC,
    }
}

/// How a list merges under server-side apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// `x-kubernetes-list-type: atomic` (the default): owned and replaced whole.
    Atomic,
    /// `set`: scalars, each owned on its own (`v:"x"`).
    Set,
    /// `map` with these keys: items owned on their own (`k:{"name":"c"}`).
    Map(&'static [&'static str]),
}

fn pod_spec_list_type(rel: &[&str]) -> Option<ListType> {
    Some(match rel {
        [c] if is_container_list(c) => ListType::Map(&["name"]),
        [c, "ports"] if is_container_list(c) => ListType::Map(&["containerPort", "protocol"]),
        [c, "env"] if is_container_list(c) => ListType::Map(&["name"]),
        [c, "volumeMounts"] if is_container_list(c) => ListType::Map(&["mountPath"]),
        [c, "volumeDevices"] if is_container_list(c) => ListType::Map(&["devicePath"]),
        [c, "resizePolicy"] if is_container_list(c) => ListType::Map(&["resourceName"]),
        [c, "resources", "claims"] if is_container_list(c) => ListType::Map(&["name"]),
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
            ListType::Map(&["name"])
        }
        ["hostAliases"] => ListType::Map(&["ip"]),
        ["topologySpreadConstraints"] => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        _ => return None,
    })
}

/// The server-side-apply list type of the list at `path`.
pub fn list_type(resource: Resource, path: &[&str]) -> ListType {
    if let Some(prefix) = pod_spec_prefix(resource)
        && let Some(rel) = path.strip_prefix(prefix)
        && let Some(t) = pod_spec_list_type(rel)
    {
        return t;
    }
    match (resource, path) {
        (_, ["metadata", "finalizers"]) => ListType::Set,
        (_, ["metadata", "ownerReferences"]) => ListType::Map(&["uid"]),
        (r, ["status", "conditions"]) if has_status_conditions(r) => ListType::Map(&["type"]),
        (Resource::Pods, ["status", "podIPs" | "hostIPs"]) => ListType::Map(&["ip"]),
        (Resource::Nodes, ["status", "addresses"]) => ListType::Map(&["type"]),
        (Resource::Nodes, ["spec", "podCIDRs"]) => ListType::Set,
        (Resource::Services, ["spec", "ports"]) => ListType::Map(&["port", "protocol"]),
        (Resource::ServiceAccounts, ["secrets"]) => ListType::Map(&["name"]),
        _ => ListType::Atomic,
    }
}

/// Whether the object at `path` is a `+structType=atomic` struct for
/// server-side apply (owned and replaced whole, like `LabelSelector`).
pub fn atomic_struct(resource: Resource, path: &[&str]) -> bool {
    if let Some(prefix) = pod_spec_prefix(resource)
        && let Some(rel) = path.strip_prefix(prefix)
    {
        return match rel {
            [c, "env", "valueFrom", x] if is_container_list(c) => matches!(
                *x,
                "configMapKeyRef" | "secretKeyRef" | "fieldRef" | "resourceFieldRef"
            ),
            [c, "envFrom", ..] if is_container_list(c) => true,
            ["topologySpreadConstraints", "labelSelector"] => true,
            [
                "affinity",
                "nodeAffinity",
                "requiredDuringSchedulingIgnoredDuringExecution",
            ] => true,
            _ => false,
        };
    }
    matches!(
        (resource, path),
        (
            Resource::Deployments | Resource::ReplicaSets | Resource::DaemonSets | Resource::Jobs,
            ["spec", "selector"]
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_follow_the_struct_tags() {
        let cases: &[(Resource, &str, ListStrategy)] = &[
            (
                Resource::Deployments,
                "spec.template.spec.containers",
                ListStrategy::MergeKey("name"),
            ),
            (
                Resource::Pods,
                "spec.containers.ports",
                ListStrategy::MergeKey("containerPort"),
            ),
            (
                Resource::Jobs,
                "spec.template.spec.initContainers.env",
                ListStrategy::MergeKey("name"),
            ),
            (
                Resource::DaemonSets,
                "spec.template.spec.containers.volumeMounts",
                ListStrategy::MergeKey("mountPath"),
            ),
            (
                Resource::Services,
                "spec.ports",
                ListStrategy::MergeKey("port"),
            ),
            (
                Resource::Nodes,
                "status.addresses",
                ListStrategy::MergeKey("type"),
            ),
            (
                Resource::ConfigMaps,
                "metadata.finalizers",
                ListStrategy::MergePrimitive,
            ),
            (Resource::Pods, "spec.containers.args", ListStrategy::Atomic),
            (Resource::Pods, "spec.tolerations", ListStrategy::Atomic),
            (Resource::EndpointSlices, "ports", ListStrategy::Atomic),
            // A pod's `spec.template` does not exist: no table entry leaks.
            (
                Resource::Pods,
                "spec.template.spec.containers",
                ListStrategy::Atomic,
            ),
        ];
        for (r, path, want) in cases {
            let p: Vec<&str> = path.split('.').collect();
            assert_eq!(strategic(*r, &p).list, *want, "{r:?} {path}");
        }
        assert!(strategic(Resource::Pods, &["spec", "volumes"]).retain_keys);
        assert!(strategic(Resource::Deployments, &["spec", "strategy"]).retain_keys);
        assert_eq!(
            list_type(Resource::Pods, &["spec", "containers", "ports"]),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(
            list_type(Resource::Pods, &["metadata", "finalizers"]),
            ListType::Set
        );
    }
}
