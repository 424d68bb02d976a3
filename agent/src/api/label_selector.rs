//! `metav1.LabelSelector`: matching a label set, and the string form the
//! API server prints (`app=web,tier in (a,b)`, as in a Scale's
//! `status.selector` and kubectl's SELECTOR column).
//!
//! Guarantees: an empty selector matches everything (as `LabelSelectorAsSelector`
//! does for apps/v1 objects once validated non-empty); an unknown operator
//! matches nothing; nothing here panics.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy every requirement of `sel`.
pub fn matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let ml = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    ml && sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    })
}

/// Whether the selector has no requirement at all.
pub fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// The selector as a `labelSelector` query string.
pub fn to_query(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({})", e.key, values.join(",")),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn match_and_render() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["b".into(), "a".into()]),
                },
                LabelSelectorRequirement {
                    key: "old".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(matches(&sel, Some(&l(&[("app", "web"), ("tier", "a")]))));
        assert!(!matches(&sel, Some(&l(&[("app", "web"), ("tier", "c")]))));
        assert!(!matches(
            &sel,
            Some(&l(&[("app", "web"), ("tier", "a"), ("old", "x")]))
        ));
        assert!(!matches(&sel, None));
        assert_eq!(to_query(&sel), "app=web,tier in (a,b),!old");
        assert!(is_empty(&LabelSelector::default()));
        assert!(matches(&LabelSelector::default(), None));
    }
}
