//! Request paths: which resource, namespace, object and subresource a URL
//! names.
//!
//! Core resources live only under `/api/v1`, group resources only under
//! `/apis/{group}/{version}`; anything else is a 404, as on the API server:
//! `{prefix}/{plural}` (all namespaces or cluster-scoped),
//! `{prefix}/namespaces/{ns}/{plural}[/{name}[/{sub}]]`,
//! `{prefix}/{plural}/{name}[/{sub}]` for cluster-scoped resources.

use crate::api::error::Reason;
use crate::api::{ApiError, Resource};
use crate::store::Key;

/// A subresource of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The object itself.
    Main,
    /// `pods/eviction` (POST an `policy/v1 Eviction`).
    Eviction,
    /// `pods/binding` (POST a `Binding`).
    Binding,
    /// `/status`: writes change only `.status`.
    Status,
    /// `/scale`: an autoscaling/v1 `Scale` view of `spec.replicas`.
    Scale,
    /// `/finalize` of a namespace: writes change only `spec.finalizers`.
    Finalize,
}

impl Sub {
    fn parse(s: &str, resource: Resource) -> Option<Sub> {
        match s {
            "status" if has_status(resource) => Some(Sub::Status),
            "scale" if has_scale(resource) => Some(Sub::Scale),
            "finalize" if resource == Resource::Namespaces => Some(Sub::Finalize),
            "eviction" if resource == Resource::Pods => Some(Sub::Eviction),
            "binding" if resource == Resource::Pods => Some(Sub::Binding),
            _ => None,
        }
    }
}

/// Resources with a `/status` subresource.
pub fn has_status(resource: Resource) -> bool {
    use Resource as R;
    matches!(
        resource,
        R::Pods
            | R::Namespaces
            | R::Nodes
            | R::Services
            | R::Deployments
            | R::ReplicaSets
            | R::DaemonSets
            | R::Jobs
    )
}

/// Resources with a `/scale` subresource.
pub fn has_scale(resource: Resource) -> bool {
    matches!(resource, Resource::Deployments | Resource::ReplicaSets)
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A collection: one namespace or all (`None`).
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Item {
        key: Key,
        sub: Sub,
    },
}

pub fn not_found_path() -> ApiError {
    ApiError::new(
        Reason::NotFound,
        "the server could not find the requested resource",
    )
}

/// Parses the part after `/api/v1/` (`group` "") or after
/// `/apis/{group}/{version}/`.
pub fn parse_path(group: &str, rest: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let res = |s: &str| {
        Resource::from_plural(s)
            .filter(|r| r.group() == group)
            .ok_or_else(not_found_path)
    };
    let sub = |s: Option<&&str>, r: Resource| match s {
        None => Ok(Sub::Main),
        Some(s) => Sub::parse(s, r).ok_or_else(not_found_path),
    };
    if segs.iter().any(|s| s.is_empty()) {
        return Err(not_found_path());
    }
    match segs.as_slice() {
        [plural] => Ok(Target::Collection {
            resource: res(plural)?,
            namespace: None,
        }),
        ["namespaces", ns, plural, rest @ ..] if group.is_empty() || rest.len() <= 2 => {
            match res(plural) {
                Ok(resource) if resource.namespaced() => match rest {
                    [] => Ok(Target::Collection {
                        resource,
                        namespace: Some(ns.to_string()),
                    }),
                    [name, more @ ..] if more.len() <= 1 => Ok(Target::Item {
                        key: Key::namespaced(resource, ns, name),
                        sub: sub(more.first(), resource)?,
                    }),
                    _ => Err(not_found_path()),
                },
                // `/api/v1/namespaces/{name}/status|finalize`.
                _ if group.is_empty() && rest.is_empty() => {
                    cluster_item(Resource::Namespaces, ns, Some(*plural))
                }
                _ => Err(not_found_path()),
            }
        }
        [plural, name] => cluster_item(res(plural)?, name, None),
        [plural, name, s] => cluster_item(res(plural)?, name, Some(*s)),
        _ => Err(not_found_path()),
    }
}

fn cluster_item(resource: Resource, name: &str, sub: Option<&str>) -> Result<Target, ApiError> {
    if resource.namespaced() {
        return Err(not_found_path());
    }
    let sub = match sub {
        None => Sub::Main,
        Some(s) => Sub::parse(s, resource).ok_or_else(not_found_path)?,
    };
    Ok(Target::Item {
        key: Key::cluster(resource, name),
        sub,
    })
}

/// The `{group}/{version}` prefixes served under `/apis`, with the group
/// of each.
pub fn group_of(group: &str, version: &str) -> Option<&'static str> {
    Resource::ALL
        .into_iter()
        .map(Resource::group)
        .filter(|g| !g.is_empty())
        .find(|g| *g == group && version == "v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_paths() {
        assert_eq!(
            parse_path("", "pods").unwrap(),
            Target::Collection {
                resource: Resource::Pods,
                namespace: None
            }
        );
        assert_eq!(
            parse_path("", "namespaces/kube-system").unwrap(),
            Target::Item {
                key: Key::cluster(Resource::Namespaces, "kube-system"),
                sub: Sub::Main
            }
        );
        assert_eq!(
            parse_path("", "namespaces/x/finalize").unwrap(),
            Target::Item {
                key: Key::cluster(Resource::Namespaces, "x"),
                sub: Sub::Finalize
            }
        );
        assert_eq!(
            parse_path("", "namespaces/a/pods/b/status").unwrap(),
            Target::Item {
                key: Key::namespaced(Resource::Pods, "a", "b"),
                sub: Sub::Status
            }
        );
        assert_eq!(
            parse_path("", "nodes/n1/status").unwrap(),
            Target::Item {
                key: Key::cluster(Resource::Nodes, "n1"),
                sub: Sub::Status
            }
        );
        for bad in [
            "widgets",
            "namespaces/a/namespaces",
            "namespaces/a/configmaps/b/status",
            "namespaces/a/deployments",
            "deployments",
            "namespaces/a/pods/b/scale",
            "nodes/n1/scale",
            "pods/x",
            "a/b/c/d/e/f",
            "namespaces//pods",
        ] {
            assert_eq!(parse_path("", bad).unwrap_err().code(), 404, "{bad}");
        }
    }

    #[test]
    fn group_paths() {
        assert_eq!(
            parse_path("apps", "namespaces/d/deployments/web/scale").unwrap(),
            Target::Item {
                key: Key::namespaced(Resource::Deployments, "d", "web"),
                sub: Sub::Scale
            }
        );
        assert_eq!(
            parse_path("batch", "jobs").unwrap(),
            Target::Collection {
                resource: Resource::Jobs,
                namespace: None
            }
        );
        for bad in [
            "pods",
            "namespaces/d/jobs",
            "namespaces/d/deployments/web/finalize",
            "namespaces/x/status",
        ] {
            assert_eq!(parse_path("apps", bad).unwrap_err().code(), 404, "{bad}");
        }
        assert_eq!(group_of("apps", "v1"), Some("apps"));
        assert_eq!(group_of("apps", "v2"), None);
        assert_eq!(group_of("", "v1"), None);
    }
}
