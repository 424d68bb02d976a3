//! Where a DaemonSet pod may run, as the DaemonSet controller decides
//! (`NodeShouldRunDaemonPod`): the template's nodeSelector, required node
//! affinity, and the node's NoSchedule/NoExecute taints against the
//! template's tolerations plus the ones the controller adds to every
//! daemon pod. Pure functions, no IO.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Taint, Toleration,
};

/// The tolerations kube adds to daemon pods (`AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// `tolerations` with the daemon tolerations added (no duplicates).
pub fn with_daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut out = spec.tolerations.clone().unwrap_or_default();
    for t in daemon_tolerations(spec.host_network == Some(true)) {
        if !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            out.push(t);
        }
    }
    out
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Every NoSchedule/NoExecute taint of the node is tolerated.
pub fn taints_tolerated(node: &Node, tolerations: &[Toleration]) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A node selector term: every expression (labels) and field
/// (`metadata.name`) holds; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = if r.key == "metadata.name" { name } else { None };
            requirement_matches(r, v)
        })
}

/// nodeSelector labels and required node affinity (terms ORed).
pub fn node_matches(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| term_matches(t, node))
        });
    selector_ok && affinity_ok
}

/// Whether a daemon pod of `spec` should run on `node`.
pub fn should_run(spec: &PodSpec, node: &Node) -> bool {
    node_matches(spec, node) && taints_tolerated(node, &with_daemon_tolerations(spec))
}

/// The node a daemon pod is for: `spec.nodeName`, else its required
/// `metadata.name` matchFields.
pub fn target_node(spec: &PodSpec) -> Option<String> {
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required terms become
/// one `metadata.name In [node]` term (preferred terms are kept), and the
/// daemon tolerations are added.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    spec.tolerations = Some(with_daemon_tolerations(spec));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn taints_need_tolerations_except_the_daemon_ones() {
        let spec = PodSpec::default();
        assert!(should_run(&spec, &node("a", &[], &[])));
        assert!(!should_run(
            &spec,
            &node("a", &[], &[("dedicated", "NoSchedule")])
        ));
        assert!(should_run(
            &spec,
            &node("a", &[], &[("dedicated", "PreferNoSchedule")])
        ));
        assert!(should_run(
            &spec,
            &node(
                "a",
                &[],
                &[("node.kubernetes.io/unschedulable", "NoSchedule")]
            )
        ));
        assert!(should_run(
            &spec,
            &node("a", &[], &[("node.kubernetes.io/not-ready", "NoExecute")])
        ));
        let tolerant = PodSpec {
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(should_run(
            &tolerant,
            &node("a", &[], &[("dedicated", "NoSchedule")])
        ));
    }

    #[test]
    fn node_selector_and_affinity_restrict_nodes_and_pins_are_found() {
        let mut spec = PodSpec {
            node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
            ..Default::default()
        };
        assert!(should_run(&spec, &node("a", &[("disk", "ssd")], &[])));
        assert!(!should_run(&spec, &node("b", &[("disk", "hdd")], &[])));
        pin_to_node(&mut spec, "a");
        assert_eq!(target_node(&spec), Some("a".into()));
        assert!(node_matches(&spec, &node("a", &[("disk", "ssd")], &[])));
        assert!(!node_matches(&spec, &node("c", &[("disk", "ssd")], &[])));
        let gt = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "cpus".into(),
                operator: "Gt".into(),
                values: Some(vec!["4".into()]),
            }]),
            match_fields: None,
        };
        assert!(term_matches(&gt, &node("x", &[("cpus", "8")], &[])));
        assert!(!term_matches(&gt, &node("x", &[("cpus", "2")], &[])));
        assert!(!term_matches(
            &NodeSelectorTerm::default(),
            &node("x", &[], &[])
        ));
    }
}
