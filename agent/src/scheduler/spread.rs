//! PodTopologySpread (kube-scheduler plugin of that name).
//!
//! Filter (`whenUnsatisfiable: DoNotSchedule`): the pods matching a
//! constraint's selector (same namespace) are counted per topology domain
//! over the eligible nodes (those with every constraint's key, passing the
//! pod's node affinity unless `nodeAffinityPolicy: Ignore`, and tolerated
//! taints only with `nodeTaintsPolicy: Honor`); a node passes when
//! `count(its domain) + (1 if the pod matches its own selector) - min` is at
//! most `maxSkew`, where `min` is the smallest domain count, or 0 while
//! fewer than `minDomains` domains exist. A node without the key fails
//! with "(missing required label)".
//!
//! Score (`ScheduleAnyway`): per constraint `count * log(domains + 2) +
//! maxSkew - 1`, summed; fewer matching pods is better; normalised as the
//! plugin does (`100 * (max + min - s) / max`). Nodes without the keys
//! score 0.
//!
//! System default (kube-scheduler's `defaultingType: System`): a pod
//! without constraints whose controller is a ReplicaSet,
//! ReplicationController or StatefulSet gets `maxSkew: 3` over
//! `kubernetes.io/hostname`, ScheduleAnyway, selecting pods with all of its
//! labels (its siblings: the controller's selector is a subset of them).
//! kube-scheduler's second default, `maxSkew: 5` over
//! `topology.kubernetes.io/zone`, is left out: herd nodes carry no zone
//! label by default, and a missing key would zero the hostname score.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::SchedulerError;
use super::affinity::Namespaces;
use super::cache::Cache;
use super::info::{NodeInfo, PodInfo};
use super::labels::{Labels, Selector, tolerated_by};

pub const REASON_SKEW: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// A parsed topology spread constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// DoNotSchedule.
    pub hard: bool,
    pub selector: Selector,
    pub min_domains: Option<i64>,
    pub honor_node_affinity: bool,
    pub honor_taints: bool,
}

impl SpreadConstraint {
    /// The system default hostname constraint for a pod with `labels`.
    pub fn system_default_hostname(labels: &Labels) -> SpreadConstraint {
        SpreadConstraint {
            max_skew: 3,
            topology_key: "kubernetes.io/hostname".into(),
            hard: false,
            selector: Selector::everything().with_label_keys(
                &labels.keys().cloned().collect::<Vec<_>>(),
                labels,
                false,
            ),
            min_domains: None,
            honor_node_affinity: true,
            honor_taints: false,
        }
    }

    pub fn parse(
        c: &TopologySpreadConstraint,
        own_labels: &Labels,
    ) -> Result<SpreadConstraint, SchedulerError> {
        let invalid = |reason: String| SchedulerError::InvalidPod { reason };
        if c.max_skew < 1 {
            return Err(invalid(format!(
                "topology spread maxSkew {} must be at least 1",
                c.max_skew
            )));
        }
        if c.topology_key.is_empty() {
            return Err(invalid(
                "topology spread constraint has an empty topologyKey".into(),
            ));
        }
        let hard = match c.when_unsatisfiable.as_str() {
            "DoNotSchedule" => true,
            "ScheduleAnyway" => false,
            other => {
                return Err(invalid(format!(
                    "{other:?} is not a valid whenUnsatisfiable"
                )));
            }
        };
        let policy = |p: Option<&str>, default: bool| match p {
            None => Ok(default),
            Some("Honor") => Ok(true),
            Some("Ignore") => Ok(false),
            Some(other) => Err(invalid(format!(
                "{other:?} is not a valid node inclusion policy"
            ))),
        };
        Ok(SpreadConstraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            hard,
            selector: Selector::parse(c.label_selector.as_ref())?.with_label_keys(
                c.match_label_keys.as_deref().unwrap_or_default(),
                own_labels,
                false,
            ),
            min_domains: c.min_domains.map(i64::from).filter(|_| hard),
            honor_node_affinity: policy(c.node_affinity_policy.as_deref(), true)?,
            honor_taints: policy(c.node_taints_policy.as_deref(), false)?,
        })
    }
}

#[derive(Debug)]
struct Counted {
    key: String,
    max_skew: i64,
    counts: HashMap<String, i64>,
    min: i64,
    self_match: i64,
    weight: f64,
}

fn eligible(pod: &PodInfo, c: &SpreadConstraint, keys: &[&str], node: &NodeInfo) -> bool {
    keys.iter().all(|k| node.labels.contains_key(*k))
        && (!c.honor_node_affinity || pod.node_affinity_matches(node))
        && (!c.honor_taints
            || node.taints.iter().all(|t| {
                !(t.effect == "NoSchedule" || t.effect == "NoExecute")
                    || tolerated_by(&pod.tolerations, t)
            }))
}

fn count(cache: &Cache, pod: &PodInfo, cs: &[&SpreadConstraint]) -> Vec<Counted> {
    let keys: Vec<&str> = cs.iter().map(|c| c.topology_key.as_str()).collect();
    let ns = Namespaces::Only(vec![pod.key.namespace.clone()]);
    let mut out = Vec::with_capacity(cs.len());
    for c in cs {
        let mut counts: HashMap<String, i64> = HashMap::new();
        let mut nodes: HashSet<&str> = HashSet::new();
        for slot in &cache.slots {
            if let Some(n) = slot.info.as_ref()
                && eligible(pod, c, &keys, n)
                && let Some(v) = n.labels.get(&c.topology_key)
            {
                counts.entry(v.clone()).or_insert(0);
                nodes.insert(n.name.as_str());
            }
        }
        cache.for_each_matching(&ns, &c.selector, |e| {
            if e.info.key != pod.key
                && nodes.contains(e.node.as_str())
                && let Some(v) = cache
                    .node(&e.node)
                    .and_then(|n| n.labels.get(&c.topology_key))
                && let Some(n) = counts.get_mut(v)
            {
                *n += 1;
            }
        });
        let mut min = counts.values().copied().min().unwrap_or(0);
        if c.min_domains.is_some_and(|m| (counts.len() as i64) < m) {
            min = 0;
        }
        let weight = ((counts.len() + 2) as f64).ln();
        out.push(Counted {
            key: c.topology_key.clone(),
            max_skew: c.max_skew,
            counts,
            min,
            self_match: i64::from(c.selector.matches(&pod.labels)),
            weight,
        });
    }
    out
}

/// The DoNotSchedule constraints' counts for one incoming pod.
#[derive(Debug)]
pub struct SpreadFilter {
    counted: Vec<Counted>,
}

impl SpreadFilter {
    pub fn new(cache: &Cache, pod: &PodInfo) -> Option<SpreadFilter> {
        let hard: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).collect();
        (!hard.is_empty()).then(|| SpreadFilter {
            counted: count(cache, pod, &hard),
        })
    }

    pub fn check(&self, node: &NodeInfo) -> Result<(), &'static str> {
        for c in &self.counted {
            let Some(v) = node.labels.get(&c.key) else {
                return Err(REASON_MISSING_LABEL);
            };
            let n = c.counts.get(v).copied().unwrap_or(0);
            if n + c.self_match - c.min > c.max_skew {
                return Err(REASON_SKEW);
            }
        }
        Ok(())
    }
}

/// The ScheduleAnyway constraints' counts for one incoming pod.
#[derive(Debug)]
pub struct SpreadScore {
    counted: Vec<Counted>,
}

impl SpreadScore {
    pub fn new(cache: &Cache, pod: &PodInfo) -> Option<SpreadScore> {
        let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
        (!soft.is_empty()).then(|| SpreadScore {
            counted: count(cache, pod, &soft),
        })
    }

    /// `None` for a node without every key (scores 0 after normalising).
    pub fn raw(&self, node: &NodeInfo) -> Option<i64> {
        let mut s = 0.0;
        for c in &self.counted {
            let v = node.labels.get(&c.key)?;
            let n = c.counts.get(v).copied().unwrap_or(0);
            s += n as f64 * c.weight + (c.max_skew - 1) as f64;
        }
        Some(s.round() as i64)
    }
}

/// The plugin's NormalizeScore; `None` entries become 0.
pub fn normalize(raw: &[Option<i64>]) -> Vec<i64> {
    let present = raw.iter().flatten();
    let min = present.clone().min().copied().unwrap_or(0);
    let max = present.max().copied().unwrap_or(0);
    raw.iter()
        .map(|r| match r {
            None => 0,
            Some(_) if max == 0 => 100,
            Some(s) => 100 * (max + min - s) / max,
        })
        .collect()
}
