//! Label selectors as controllers meet them in objects (not in URLs: those
//! are parsed by `api::server::selectors`).
//!
//! - A Service's `spec.selector` is a plain map: every pair must match; an
//!   empty or missing map selects nothing (such services are left alone).
//! - A `metav1.LabelSelector` (`matchLabels` + `matchExpressions` with
//!   `In`, `NotIn`, `Exists`, `DoesNotExist`): the empty selector matches
//!   everything; an unknown operator matches nothing (a typo never selects
//!   every pod).

use serde_json::{Map, Value};

/// The labels of an object (`metadata.labels`), if any.
pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
}

/// True when every `key: value` of `selector` is among `labels`.
/// An empty selector matches nothing, as for a Service.
pub fn map_matches(selector: &Map<String, Value>, labels: Option<&Map<String, Value>>) -> bool {
    if selector.is_empty() {
        return false;
    }
    let Some(labels) = labels else {
        return false;
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Service's selector when it selects pods (non-empty map).
pub fn service_selector(service: &Value) -> Option<&Map<String, Value>> {
    service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

/// `metav1.LabelSelector` matching (empty selector: everything).
pub fn label_selector_matches(selector: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object)
        && !ml
            .iter()
            .all(|(k, v)| v.as_str().is_some() && get(k) == v.as_str())
    {
        return false;
    }
    let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) else {
        return true;
    };
    exprs.iter().all(|e| {
        let Some(key) = e.get("key").and_then(Value::as_str) else {
            return false;
        };
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let actual = get(key);
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => actual.is_some_and(|a| values.contains(&a)),
            Some("NotIn") => actual.is_none_or(|a| !values.contains(&a)),
            Some("Exists") => actual.is_some(),
            Some("DoesNotExist") => actual.is_none(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(l: Value) -> Value {
        json!({"metadata": {"labels": l}})
    }

    #[test]
    fn service_map_selectors() {
        let sel = json!({"app": "web"});
        let sel = sel.as_object().unwrap();
        let p = obj(json!({"app": "web", "tier": "x"}));
        assert!(map_matches(sel, labels(&p)));
        assert!(!map_matches(sel, labels(&obj(json!({"app": "db"})))));
        assert!(!map_matches(sel, labels(&json!({"metadata": {}}))));
        assert!(!map_matches(&Map::new(), labels(&p)));
        let svc = json!({"spec": {"selector": {}}});
        assert!(service_selector(&svc).is_none());
    }

    #[test]
    fn label_selector_expressions() {
        let p = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: Value| label_selector_matches(&s, labels(&p));
        assert!(m(json!({})));
        assert!(m(json!({"matchLabels": {"app": "web"}})));
        assert!(!m(json!({"matchLabels": {"app": "db"}})));
        assert!(m(json!({"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "db"]},
            {"key": "tier", "operator": "NotIn", "values": ["back"]},
            {"key": "tier", "operator": "Exists"},
            {"key": "gone", "operator": "DoesNotExist"}]})));
        assert!(!m(
            json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]})
        ));
        assert!(!m(json!({"matchExpressions": [{"operator": "Exists"}]})));
    }
}
