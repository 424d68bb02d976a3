//! JSON merge patch (RFC 7386): objects merge key by key, `null` deletes a
//! key, every other value (lists included) replaces what was there.

use serde_json::{Map, Value};

/// Merges `patch` into `target` in place.
pub fn merge_into(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_into(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_cases_and_kubectl_shapes() {
        let cases = [
            // RFC 7386 appendix A (a selection).
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
            // kubectl scale falls back to this shape for the scale subresource.
            (
                json!({"spec": {"replicas": 1, "selector": {}}}),
                json!({"spec": {"replicas": 3}}),
                json!({"spec": {"replicas": 3, "selector": {}}}),
            ),
            // kubectl label app=web --overwrite / kubectl label app-
            (
                json!({"metadata": {"name": "p", "labels": {"app": "db", "x": "1"}}}),
                json!({"metadata": {"labels": {"app": "web", "x": null}}}),
                json!({"metadata": {"name": "p", "labels": {"app": "web"}}}),
            ),
            // kubectl annotate on an object without annotations
            (
                json!({"metadata": {"name": "p"}}),
                json!({"metadata": {"annotations": {"note": "hi"}}}),
                json!({"metadata": {"name": "p", "annotations": {"note": "hi"}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_into(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }
}
