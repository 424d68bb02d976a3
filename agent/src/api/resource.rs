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
}

impl Resource {
    pub const ALL: [Resource; 5] = [
        Resource::Pods,
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::Namespaces,
        Resource::Events,
    ];

    /// The URL path segment and store table name.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::ConfigMaps => "configmaps",
            Resource::Secrets => "secrets",
            Resource::Namespaces => "namespaces",
            Resource::Events => "events",
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
        }
    }

    /// `apiVersion` of the resource's objects.
    pub fn api_version(self) -> &'static str {
        "v1"
    }

    /// `kubectl get` short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Pods => &["po"],
            Resource::ConfigMaps => &["cm"],
            Resource::Secrets => &[],
            Resource::Namespaces => &["ns"],
            Resource::Events => &["ev"],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::Namespaces)
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
