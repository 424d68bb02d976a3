//! `labelSelector` and `fieldSelector`, as the API server parses them.
//!
//! Labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`
//! (exists), `!k` (does not exist), comma-separated (AND). Fields:
//! `metadata.name`, `metadata.namespace` for every resource, plus the
//! API server's per-kind fields (pods: `spec.nodeName`, `status.phase`,
//! `status.podIP`, …; nodes: `spec.unschedulable`; services:
//! `spec.clusterIP`, `spec.type`; secrets: `type`; …) with `=`, `==`,
//! `!=`. Booleans and counts compare as their text (unset: `false`, `0`).

use serde_json::Value;

use crate::api::{ApiError, Resource};

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    pointer: &'static str,
    value: String,
    negate: bool,
}

/// Both selectors of a request; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn bad(what: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {what}: {detail}"))
}

fn check_key(k: &str, term: &str) -> Result<String, ApiError> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(bad(term, format!("invalid label key {k:?}")))
    }
}

fn check_value(v: &str, term: &str) -> Result<String, ApiError> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad(term, format!("invalid label value {v:?}")))
    }
}

fn parse_set(rest: &str, term: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(term, "expected a parenthesised set of values"))?;
    inner.split(',').map(|v| check_value(v, term)).collect()
}

fn parse_label(term: &str) -> Result<LabelReq, ApiError> {
    let t = term.trim();
    if let Some(k) = t.strip_prefix('!') {
        return Ok(LabelReq::NotExists(check_key(k, term)?));
    }
    if let Some(i) = t.find(" notin ").or_else(|| t.find(" notin(")) {
        let (k, rest) = t.split_at(i);
        let set = parse_set(&rest[" notin".len()..], term)?;
        return Ok(LabelReq::NotIn(check_key(k, term)?, set));
    }
    if let Some(i) = t.find(" in ").or_else(|| t.find(" in(")) {
        let (k, rest) = t.split_at(i);
        let set = parse_set(&rest[" in".len()..], term)?;
        return Ok(LabelReq::In(check_key(k, term)?, set));
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(LabelReq::NotEq(check_key(k, term)?, check_value(v, term)?));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(LabelReq::Eq(check_key(k, term)?, check_value(v, term)?));
    }
    Ok(LabelReq::Exists(check_key(t, term)?))
}

fn field_pointer(resource: Resource, field: &str) -> Option<&'static str> {
    match field {
        "metadata.name" => Some("/metadata/name"),
        "metadata.namespace" => Some("/metadata/namespace"),
        "spec.nodeName" if resource == Resource::Pods => Some("/spec/nodeName"),
        "status.phase" if resource == Resource::Pods => Some("/status/phase"),
        "status.podIP" if resource == Resource::Pods => Some("/status/podIP"),
        "spec.restartPolicy" if resource == Resource::Pods => Some("/spec/restartPolicy"),
        "spec.schedulerName" if resource == Resource::Pods => Some("/spec/schedulerName"),
        "spec.unschedulable" if resource == Resource::Nodes => Some("/spec/unschedulable"),
        "spec.clusterIP" if resource == Resource::Services => Some("/spec/clusterIP"),
        "spec.type" if resource == Resource::Services => Some("/spec/type"),
        "type" if resource == Resource::Secrets => Some("/type"),
        "status.phase" if resource == Resource::Namespaces => Some("/status/phase"),
        "status.replicas" if resource == Resource::ReplicaSets => Some("/status/replicas"),
        "status.successful" if resource == Resource::Jobs => Some("/status/successful"),
        _ => None,
    }
}

impl Selector {
    /// Parses both selectors (`None` or empty: match all).
    pub fn parse(
        resource: Resource,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Selector, ApiError> {
        let mut sel = Selector::default();
        if let Some(l) = labels.filter(|l| !l.trim().is_empty()) {
            for term in split_top(l) {
                sel.labels.push(parse_label(term)?);
            }
        }
        if let Some(f) = fields.filter(|f| !f.trim().is_empty()) {
            for term in f.split(',') {
                let (k, v, negate) = if let Some((k, v)) = term.split_once("!=") {
                    (k, v, true)
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    (k, v, false)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid selector: '{f}'; can't understand '{term}'"
                    )));
                };
                let k = k.trim();
                let pointer = field_pointer(resource, k).ok_or_else(|| {
                    ApiError::bad_request(format!("field label not supported: {k}"))
                })?;
                sel.fields.push(FieldReq {
                    pointer,
                    value: v.trim().to_string(),
                    negate,
                });
            }
        }
        Ok(sel)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, set) => label(k).is_some_and(|x| set.iter().any(|s| s == x)),
            LabelReq::NotIn(k, set) => label(k).is_none_or(|x| !set.iter().any(|s| s == x)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|f| {
                // Unset bools and counts read as their zero value.
                let actual = match object.pointer(f.pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ if f.pointer == "/spec/unschedulable" => "false".to_string(),
                    _ if f.pointer.starts_with("/status/")
                        && f.pointer != "/status/phase"
                        && f.pointer != "/status/podIP" =>
                    {
                        "0".to_string()
                    }
                    _ => String::new(),
                };
                (actual == f.value) != f.negate
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels},
               "spec": {"nodeName": node}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_operators() {
        let p = pod(json!({"app": "web", "tier": "front"}), "n1");
        let m = |s: &str| {
            Selector::parse(Resource::Pods, Some(s), None)
                .unwrap()
                .matches(&p)
        };
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("tier notin (back)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(!m("missing"));
        assert!(m(""));
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}), "n1");
        let m = |s: &str| {
            Selector::parse(Resource::Pods, None, Some(s))
                .unwrap()
                .matches(&p)
        };
        assert!(m("spec.nodeName=n1,status.phase=Running"));
        assert!(!m("spec.nodeName!=n1"));
        assert!(m("metadata.name=p,metadata.namespace==default"));
        let e = Selector::parse(Resource::ConfigMaps, None, Some("spec.nodeName=x")).unwrap_err();
        assert_eq!(e.code(), 400);
        assert_eq!(e.message, "field label not supported: spec.nodeName");
    }

    #[test]
    fn garbage_is_400() {
        for s in ["app in web", "a b=c", "app=(x", "=x"] {
            let e = Selector::parse(Resource::Pods, Some(s), None).unwrap_err();
            assert_eq!(e.code(), 400, "{s}");
        }
        assert!(Selector::parse(Resource::Pods, None, Some("nonsense")).is_err());
    }
}
