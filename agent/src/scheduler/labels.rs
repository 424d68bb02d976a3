//! Label and field matching: label selectors (pod affinity, topology
//! spread), node selector terms (NodeAffinity) and tolerations
//! (TaintToleration, NodeUnschedulable).
//!
//! Semantics follow apimachinery's `labels.Selector` and
//! component-helpers' `nodeaffinity`: a nil label selector selects nothing,
//! an empty one everything; an empty node selector term selects nothing;
//! `Gt`/`Lt` compare integers and fail on a missing or non-integer label.
//! Unknown operators are rejected when parsing (a typed error), never
//! silently ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::SchedulerError;

pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl Req {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
            Req::Gt(k, n) => int_label(labels, k).is_some_and(|v| v > *n),
            Req::Lt(k, n) => int_label(labels, k).is_some_and(|v| v < *n),
        }
    }
}

fn int_label(labels: &Labels, key: &str) -> Option<i64> {
    labels.get(key).and_then(|v| v.parse().ok())
}

/// A parsed label selector; `None` requirements means "selects nothing".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    reqs: Option<Vec<Req>>,
}

impl Selector {
    pub fn nothing() -> Selector {
        Selector { reqs: None }
    }

    pub fn everything() -> Selector {
        Selector {
            reqs: Some(Vec::new()),
        }
    }

    /// `metav1.LabelSelectorAsSelector` (nil → nothing).
    pub fn parse(sel: Option<&LabelSelector>) -> Result<Selector, SchedulerError> {
        let Some(sel) = sel else {
            return Ok(Selector::nothing());
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Req::In(k.clone(), vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Req::In(e.key.clone(), values),
                "NotIn" => Req::NotIn(e.key.clone(), values),
                "Exists" => Req::Exists(e.key.clone()),
                "DoesNotExist" => Req::DoesNotExist(e.key.clone()),
                op => return Err(bad_operator(op, &e.key)),
            });
        }
        reqs.sort();
        Ok(Selector { reqs: Some(reqs) })
    }

    /// Adds `key In (value)` (matchLabelKeys) or `key NotIn (value)`
    /// (mismatchLabelKeys) for each key the pod carries.
    pub fn with_label_keys(mut self, keys: &[String], own: &Labels, negate: bool) -> Selector {
        if let Some(reqs) = self.reqs.as_mut() {
            for k in keys {
                if let Some(v) = own.get(k) {
                    reqs.push(if negate {
                        Req::NotIn(k.clone(), vec![v.clone()])
                    } else {
                        Req::In(k.clone(), vec![v.clone()])
                    });
                }
            }
            reqs.sort();
        }
        self
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs
            .as_ref()
            .is_some_and(|r| r.iter().all(|q| q.matches(labels)))
    }

    pub fn selects_nothing(&self) -> bool {
        self.reqs.is_none()
    }

    /// The equality requirements (`key`, allowed values) usable to look
    /// candidates up in a label index.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.reqs.iter().flatten().filter_map(|r| match r {
            Req::In(k, vs) => Some((k.as_str(), vs.as_slice())),
            _ => None,
        })
    }
}

fn bad_operator(op: &str, key: &str) -> SchedulerError {
    SchedulerError::InvalidPod {
        reason: format!("{op:?} is not a valid selector operator (key {key:?})"),
    }
}

/// One node selector term: label requirements and `metadata.name` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    labels: Vec<Req>,
    names: Vec<(bool, Vec<String>)>,
}

impl NodeTerm {
    pub fn parse(term: &NodeSelectorTerm) -> Result<NodeTerm, SchedulerError> {
        let mut labels = Vec::new();
        for e in term.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let int = |vs: &[String]| -> Result<i64, SchedulerError> {
                match vs {
                    [v] => v.parse().map_err(|_| SchedulerError::InvalidPod {
                        reason: format!("{v:?} is not an integer (key {:?})", e.key),
                    }),
                    _ => Err(SchedulerError::InvalidPod {
                        reason: format!("{} needs exactly one value (key {:?})", e.operator, e.key),
                    }),
                }
            };
            labels.push(match e.operator.as_str() {
                "In" => Req::In(e.key.clone(), values),
                "NotIn" => Req::NotIn(e.key.clone(), values),
                "Exists" => Req::Exists(e.key.clone()),
                "DoesNotExist" => Req::DoesNotExist(e.key.clone()),
                "Gt" => Req::Gt(e.key.clone(), int(&values)?),
                "Lt" => Req::Lt(e.key.clone(), int(&values)?),
                op => return Err(bad_operator(op, &e.key)),
            });
        }
        let mut names = Vec::new();
        for f in term.match_fields.iter().flatten() {
            if f.key != "metadata.name" {
                return Err(SchedulerError::InvalidPod {
                    reason: format!("{:?} is not a supported node field selector", f.key),
                });
            }
            let values = f.values.clone().unwrap_or_default();
            names.push(match f.operator.as_str() {
                "In" => (true, values),
                "NotIn" => (false, values),
                op => return Err(bad_operator(op, &f.key)),
            });
        }
        Ok(NodeTerm { labels, names })
    }

    /// An empty term selects nothing.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        if self.labels.is_empty() && self.names.is_empty() {
            return false;
        }
        self.labels.iter().all(|r| r.matches(labels))
            && self
                .names
                .iter()
                .all(|(is_in, vs)| vs.iter().any(|v| v == name) == *is_in)
    }
}

/// `v1.Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

pub fn tolerated_by(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSelectorRequirement;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(!Selector::parse(None).unwrap().matches(&l));
        assert!(
            Selector::parse(Some(&LabelSelector::default()))
                .unwrap()
                .matches(&l)
        );
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["fe", "be"]),
                expr("x", "NotIn", &["1"]),
                expr("app", "Exists", &[]),
                expr("gone", "DoesNotExist", &[]),
            ]),
        };
        let s = Selector::parse(Some(&sel)).unwrap();
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert_eq!(s.equalities().count(), 2);
        let bad = LabelSelector {
            match_expressions: Some(vec![expr("a", "Gt", &["1"])]),
            ..Default::default()
        };
        assert!(Selector::parse(Some(&bad)).is_err());
        let own = labels(&[("hash", "abc")]);
        let s2 = Selector::everything().with_label_keys(&["hash".into()], &own, false);
        assert!(s2.matches(&own) && !s2.matches(&l));
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn node_terms() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        let term = |e: Vec<NodeSelectorRequirement>, f: Vec<NodeSelectorRequirement>| {
            NodeTerm::parse(&NodeSelectorTerm {
                match_expressions: Some(e),
                match_fields: Some(f),
            })
            .unwrap()
        };
        assert!(!term(vec![], vec![]).matches("n1", &l));
        assert!(term(vec![req("cores", "Gt", &["4"])], vec![]).matches("n1", &l));
        assert!(!term(vec![req("cores", "Lt", &["4"])], vec![]).matches("n1", &l));
        assert!(!term(vec![req("missing", "Gt", &["4"])], vec![]).matches("n1", &l));
        assert!(term(vec![req("missing", "NotIn", &["4"])], vec![]).matches("n1", &l));
        assert!(!term(vec![req("zone", "DoesNotExist", &[])], vec![]).matches("n1", &l));
        assert!(term(vec![], vec![req("metadata.name", "In", &["n1"])]).matches("n1", &l));
        assert!(!term(vec![], vec![req("metadata.name", "NotIn", &["n1"])]).matches("n1", &l));
        let bad = NodeSelectorTerm {
            match_expressions: Some(vec![req("cores", "Gt", &["x"])]),
            match_fields: None,
        };
        assert!(NodeTerm::parse(&bad).is_err());
        let bad_field = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.uid", "In", &["x"])]),
        };
        assert!(NodeTerm::parse(&bad_field).is_err());
    }

    #[test]
    fn tolerations() {
        let taint = |k: &str, v: &str, e: &str| Taint {
            key: k.into(),
            value: Some(v.into()),
            effect: e.into(),
            time_added: None,
        };
        let tol = |k: Option<&str>, op: &str, v: Option<&str>, e: Option<&str>| Toleration {
            key: k.map(Into::into),
            operator: Some(op.into()),
            value: v.map(Into::into),
            effect: e.map(Into::into),
            toleration_seconds: None,
        };
        let t = taint("gpu", "yes", "NoSchedule");
        assert!(tolerates(&tol(Some("gpu"), "Equal", Some("yes"), None), &t));
        assert!(!tolerates(&tol(Some("gpu"), "Equal", Some("no"), None), &t));
        assert!(tolerates(
            &tol(Some("gpu"), "Exists", None, Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("gpu"), "Exists", None, Some("NoExecute")),
            &t
        ));
        assert!(tolerates(&tol(None, "Exists", None, None), &t));
        assert!(!tolerates(&tol(Some("other"), "Exists", None, None), &t));
    }
}
