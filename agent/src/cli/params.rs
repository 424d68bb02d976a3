//! Request paths and query strings of the API, as the API server names
//! its parameters.

use std::fmt::Write as _;

use crate::api::Resource;

/// List and watch filters (`labelSelector`, `fieldSelector`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

/// `DELETE` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy` (`Background`, `Foreground`, `Orphan`); kubectl
    /// sends `Background` unless told otherwise (`--cascade`).
    pub propagation_policy: Option<String>,
}

/// `…/log` options, as the API server names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogParams {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub timestamps: bool,
}

/// `…/exec` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecParams {
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Builds `path?k=v&…` from pairs, skipping nothing (callers filter).
pub fn with_query(path: String, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path;
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_query(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

/// Where a resource's group version is served: `/api/v1` for the core
/// group, `/apis/{group}/{version}` for the others.
pub fn group_prefix(resource: Resource) -> String {
    if resource.group().is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}", resource.api_version())
    }
}

/// The collection path of a resource: `/api/v1/namespaces/NS/pods`,
/// `/api/v1/pods` (all namespaces), `/api/v1/namespaces`,
/// `/apis/apps/v1/namespaces/NS/deployments`.
pub fn collection_path(resource: Resource, namespace: Option<&str>) -> String {
    let prefix = group_prefix(resource);
    match (resource.namespaced(), namespace) {
        (true, Some(ns)) => format!("{prefix}/namespaces/{ns}/{}", resource.plural()),
        _ => format!("{prefix}/{}", resource.plural()),
    }
}

/// The path of one object.
pub fn object_path(resource: Resource, namespace: &str, name: &str) -> String {
    format!("{}/{name}", collection_path(resource, Some(namespace)))
}

pub fn list_query(params: &ListParams) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = &params.label_selector {
        q.push(("labelSelector", l.clone()));
    }
    if let Some(f) = &params.field_selector {
        q.push(("fieldSelector", f.clone()));
    }
    q
}

pub fn log_query(p: &LogParams) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(c) = &p.container {
        q.push(("container", c.clone()));
    }
    if p.follow {
        q.push(("follow", "true".into()));
    }
    if p.previous {
        q.push(("previous", "true".into()));
    }
    if let Some(n) = p.tail_lines {
        q.push(("tailLines", n.to_string()));
    }
    if let Some(s) = p.since_seconds {
        q.push(("sinceSeconds", s.to_string()));
    }
    if p.timestamps {
        q.push(("timestamps", "true".into()));
    }
    q
}

pub fn exec_query(p: &ExecParams) -> Vec<(&'static str, String)> {
    let mut q: Vec<(&'static str, String)> =
        p.command.iter().map(|c| ("command", c.clone())).collect();
    if let Some(c) = &p.container {
        q.push(("container", c.clone()));
    }
    for (k, v) in [
        ("stdin", p.stdin),
        ("stdout", p.stdout),
        ("stderr", p.stderr),
        ("tty", p.tty),
    ] {
        if v {
            q.push((k, "true".into()));
        }
    }
    q
}
