//! InterPodAffinity (kube-scheduler plugin of that name): required pod
//! affinity and anti-affinity (filter), preferred ones (score).
//!
//! Filter, as the plugin's PreFilter/Filter: a node fails when
//! - an existing pod's required anti-affinity term matches the incoming pod
//!   and the node is in that pod's topology domain ("node(s) didn't satisfy
//!   existing pods anti-affinity rules");
//! - a pod matching one of the incoming pod's anti-affinity terms is in the
//!   node's domain ("node(s) didn't match pod anti-affinity rules");
//! - the node lacks a topology key of the incoming pod's affinity terms, or
//!   no pod matching all of them is in its domains, unless no pod anywhere
//!   matches them and the pod matches its own terms (the first of a group)
//!   ("node(s) didn't match pod affinity rules").
//!
//! Score: incoming preferred terms (+/- weight per matching pod in the
//! node's domain), and, symmetrically, existing pods' preferred terms and
//! required affinity terms (weight 1) that match the incoming pod;
//! normalised min-max to 0-100.
//!
//! A term's namespaces are `namespaces`, all of them with an empty
//! `namespaceSelector`, else the pod's own. A `namespaceSelector` with
//! requirements is rejected (typed error): namespace labels are not cached.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::PodAffinityTerm;

use super::SchedulerError;
use super::cache::Cache;
use super::info::{NodeInfo, PodInfo};
use super::labels::{Labels, Selector};

/// The namespaces a term looks at (sorted, deduplicated).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespaces {
    All,
    Only(Vec<String>),
}

impl Namespaces {
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(v) => v.iter().any(|n| n == ns),
        }
    }
}

/// A parsed pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityTerm {
    pub namespaces: Namespaces,
    pub selector: Selector,
    pub topology_key: String,
}

impl AffinityTerm {
    pub fn parse(
        t: &PodAffinityTerm,
        own_ns: &str,
        own_labels: &Labels,
    ) -> Result<AffinityTerm, SchedulerError> {
        let mut list: Vec<String> = t.namespaces.clone().unwrap_or_default();
        let namespaces = match &t.namespace_selector {
            Some(sel)
                if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty()) =>
            {
                Namespaces::All
            }
            Some(_) => {
                return Err(SchedulerError::InvalidPod {
                    reason: "a namespaceSelector with requirements is not supported".into(),
                });
            }
            None => {
                if list.is_empty() {
                    list.push(own_ns.to_string());
                }
                list.sort();
                list.dedup();
                Namespaces::Only(list)
            }
        };
        if t.topology_key.is_empty() {
            return Err(SchedulerError::InvalidPod {
                reason: "a pod affinity term has an empty topologyKey".into(),
            });
        }
        let selector = Selector::parse(t.label_selector.as_ref())?
            .with_label_keys(
                t.match_label_keys.as_deref().unwrap_or_default(),
                own_labels,
                false,
            )
            .with_label_keys(
                t.mismatch_label_keys.as_deref().unwrap_or_default(),
                own_labels,
                true,
            );
        Ok(AffinityTerm {
            namespaces,
            selector,
            topology_key: t.topology_key.clone(),
        })
    }

    pub fn matches_pod(&self, pod: &PodInfo) -> bool {
        self.namespaces.contains(&pod.key.namespace) && self.selector.matches(&pod.labels)
    }
}

/// Topology domains: key → values.
pub type Domains = HashMap<String, HashSet<String>>;

fn in_domains(d: &Domains, node: &NodeInfo) -> bool {
    d.iter()
        .any(|(k, vs)| node.labels.get(k).is_some_and(|v| vs.contains(v)))
}

fn add_domain(d: &mut Domains, key: &str, node: Option<&NodeInfo>) {
    if let Some(v) = node.and_then(|n| n.labels.get(key)) {
        d.entry(key.to_string()).or_default().insert(v.clone());
    }
}

/// What the filter needs, computed once per incoming pod.
#[derive(Debug, Default)]
pub struct AffinityFilter {
    existing_anti: Domains,
    anti: Domains,
    affinity: Domains,
    affinity_keys: Vec<String>,
    /// No pod matches the affinity terms and the pod matches its own.
    first_of_group: bool,
}

/// Why a node failed the filter.
pub const REASON_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const REASON_ANTI: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";

impl AffinityFilter {
    pub fn new(cache: &Cache, pod: &PodInfo) -> AffinityFilter {
        let mut f = AffinityFilter::default();
        for (term, per_node) in &cache.anti_groups {
            if term.matches_pod(pod) {
                for node in per_node.keys() {
                    add_domain(&mut f.existing_anti, &term.topology_key, cache.node(node));
                }
            }
        }
        for term in &pod.anti_affinity {
            cache.for_each_matching(&term.namespaces, &term.selector, |e| {
                if e.info.key != pod.key {
                    add_domain(&mut f.anti, &term.topology_key, cache.node(&e.node));
                }
            });
        }
        if let Some((first, rest)) = pod.affinity.split_first() {
            let mut any = false;
            cache.for_each_matching(&first.namespaces, &first.selector, |e| {
                if e.info.key != pod.key && rest.iter().all(|t| t.matches_pod(&e.info)) {
                    any = true;
                    for t in &pod.affinity {
                        add_domain(&mut f.affinity, &t.topology_key, cache.node(&e.node));
                    }
                }
            });
            f.first_of_group = !any && pod.affinity.iter().all(|t| t.matches_pod(pod));
            f.affinity_keys = pod
                .affinity
                .iter()
                .map(|t| t.topology_key.clone())
                .collect();
        }
        f
    }

    /// In the plugin's order: affinity, anti-affinity, existing pods'
    /// anti-affinity.
    pub fn check(&self, node: &NodeInfo) -> Result<(), &'static str> {
        if !self.affinity_keys.is_empty() {
            if !self
                .affinity_keys
                .iter()
                .all(|k| node.labels.contains_key(k))
            {
                return Err(REASON_AFFINITY);
            }
            let all_present = self.affinity_keys.iter().all(|k| {
                node.labels
                    .get(k)
                    .is_some_and(|v| self.affinity.get(k).is_some_and(|s| s.contains(v)))
            });
            if !all_present && !self.first_of_group {
                return Err(REASON_AFFINITY);
            }
        }
        if in_domains(&self.anti, node) {
            return Err(REASON_ANTI);
        }
        if in_domains(&self.existing_anti, node) {
            return Err(REASON_EXISTING_ANTI);
        }
        Ok(())
    }
}

/// Preferred affinity scores per topology domain.
#[derive(Debug, Default)]
pub struct AffinityScore {
    by_domain: HashMap<String, HashMap<String, i64>>,
}

impl AffinityScore {
    pub fn new(cache: &Cache, pod: &PodInfo) -> AffinityScore {
        let mut s = AffinityScore::default();
        let mut add = |key: &str, node: Option<&NodeInfo>, w: i64| {
            if let Some(v) = node.and_then(|n| n.labels.get(key)) {
                *s.by_domain
                    .entry(key.to_string())
                    .or_default()
                    .entry(v.clone())
                    .or_default() += w;
            }
        };
        let incoming = pod
            .preferred_affinity
            .iter()
            .map(|(w, t)| (*w, t))
            .chain(pod.preferred_anti_affinity.iter().map(|(w, t)| (-*w, t)));
        for (w, term) in incoming {
            cache.for_each_matching(&term.namespaces, &term.selector, |e| {
                if e.info.key != pod.key {
                    add(&term.topology_key, cache.node(&e.node), w);
                }
            });
        }
        for ((term, w), per_node) in &cache.score_groups {
            if term.matches_pod(pod) {
                for (node, count) in per_node {
                    add(&term.topology_key, cache.node(node), w * i64::from(*count));
                }
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    pub fn raw(&self, node: &NodeInfo) -> i64 {
        self.by_domain
            .iter()
            .filter_map(|(k, m)| node.labels.get(k).and_then(|v| m.get(v)))
            .sum()
    }
}

/// Min-max normalisation to 0-100 (all 0 when every node scores alike).
pub fn normalize(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 { 100 * (*s - min) / diff } else { 0 };
    }
}
