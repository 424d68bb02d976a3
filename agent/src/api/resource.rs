//! The resources the API serves, as the API server names them.

use std::fmt;

/// A served resource (`/api/v1/namespaces/NS/<plural>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Pods,
    ConfigMaps,
    Secrets,
    Namespaces,
    Events,
    Nodes,
    Services,
    Endpoints,
    ServiceAccounts,
    Deployments,
    ReplicaSets,
    DaemonSets,
    Jobs,
    Leases,
    EndpointSlices,
}

impl Resource {
    pub const ALL: [Resource; 15] = [
        Resource::Pods,
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::Namespaces,
        Resource::Events,
        Resource::Nodes,
        Resource::Services,
        Resource::Endpoints,
        Resource::ServiceAccounts,
        Resource::Deployments,
        Resource::ReplicaSets,
        Resource::DaemonSets,
        Resource::Jobs,
        Resource::Leases,
        Resource::EndpointSlices,
    ];

    /// The URL path segment and store table name.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::ConfigMaps => "configmaps",
            Resource::Secrets => "secrets",
            Resource::Namespaces => "namespaces",
            Resource::Events => "events",
            Resource::Nodes => "nodes",
            Resource::Services => "services",
            Resource::Endpoints => "endpoints",
            Resource::ServiceAccounts => "serviceaccounts",
            Resource::Deployments => "deployments",
            Resource::ReplicaSets => "replicasets",
            Resource::DaemonSets => "daemonsets",
            Resource::Jobs => "jobs",
            Resource::Leases => "leases",
            Resource::EndpointSlices => "endpointslices",
        }
    }

    /// `kind` of one object.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::ConfigMaps => "ConfigMap",
            Resource::Secrets => "Secret",
            Resource::Namespaces => "Namespace",
            Resource::Events => "Event",
            Resource::Nodes => "Node",
            Resource::Services => "Service",
            Resource::Endpoints => "Endpoints",
            Resource::ServiceAccounts => "ServiceAccount",
            Resource::Deployments => "Deployment",
            Resource::ReplicaSets => "ReplicaSet",
            Resource::DaemonSets => "DaemonSet",
            Resource::Jobs => "Job",
            Resource::Leases => "Lease",
            Resource::EndpointSlices => "EndpointSlice",
        }
    }

    /// API group ("" for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Resource::Deployments | Resource::ReplicaSets | Resource::DaemonSets => "apps",
            Resource::Jobs => "batch",
            Resource::Leases => "coordination.k8s.io",
            Resource::EndpointSlices => "discovery.k8s.io",
            _ => "",
        }
    }

    /// `apiVersion` of the resource's objects (`v1`, `apps/v1`, ...).
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "apps" => "apps/v1",
            "batch" => "batch/v1",
            "coordination.k8s.io" => "coordination.k8s.io/v1",
            "discovery.k8s.io" => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// `kubectl get` short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Pods => &["po"],
            Resource::ConfigMaps => &["cm"],
            Resource::Secrets => &[],
            Resource::Namespaces => &["ns"],
            Resource::Events => &["ev"],
            Resource::Nodes => &["no"],
            Resource::Services => &["svc"],
            Resource::Endpoints => &["ep"],
            Resource::ServiceAccounts => &["sa"],
            Resource::Deployments => &["deploy"],
            Resource::ReplicaSets => &["rs"],
            Resource::DaemonSets => &["ds"],
            Resource::Jobs => &[],
            Resource::Leases => &[],
            Resource::EndpointSlices => &[],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::Namespaces | Resource::Nodes)
    }

    pub fn from_plural(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.plural() == s)
    }

    pub fn from_kind(api_version: &str, kind: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.kind() == kind && r.api_version() == api_version)
    }

    /// Accepts plural, singular (lowercased kind) and short names, as
    /// `kubectl get` does.
    pub fn from_cli_name(s: &str) -> Option<Resource> {
        let s = s.to_ascii_lowercase();
        Resource::ALL.into_iter().find(|r| {
            r.plural() == s
                || r.kind().to_ascii_lowercase() == s
                || r.short_names().contains(&s.as_str())
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}
