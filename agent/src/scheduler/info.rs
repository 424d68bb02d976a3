//! What the scheduler keeps of a Pod and of a Node: parsed once, when the
//! object enters the cache or the queue, so that scheduling never touches
//! JSON or quantity strings.
//!
//! A node whose `Ready` condition is not `True` is given the
//! `node.kubernetes.io/not-ready:NoSchedule` taint (if it does not carry it
//! or the `unreachable` one already), as the node lifecycle controller
//! would: TaintToleration then keeps pods off it unless they tolerate it.

use std::fmt;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

use super::SchedulerError;
use super::affinity::AffinityTerm;
use super::labels::{Labels, NodeTerm};
use super::resources::{PodRequests, Resources, node_allocatable};
use super::spread::SpreadConstraint;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// `namespace/name` of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn of(pod: &Pod) -> PodKey {
        PodKey {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod, as the filters and scores see it.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub key: PodKey,
    pub labels: Labels,
    pub node_name: Option<String>,
    pub requests: PodRequests,
    pub node_selector: Labels,
    /// `None`: no required node affinity; `Some(terms)`: one must match.
    pub required_node_terms: Option<Vec<NodeTerm>>,
    pub preferred_node_terms: Vec<(i64, NodeTerm)>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Vec<AffinityTerm>,
    pub anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i64, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i64, AffinityTerm)>,
    pub spread: Vec<SpreadConstraint>,
}

/// Whether kube-scheduler's system default spreading applies: the pod's
/// controller is a ReplicaSet, ReplicationController or StatefulSet.
fn has_spreading_owner(pod: &Pod) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && matches!(
                o.kind.as_str(),
                "ReplicaSet" | "ReplicationController" | "StatefulSet"
            )
    })
}

impl PodInfo {
    pub fn parse(pod: &Pod) -> Result<PodInfo, SchedulerError> {
        let key = PodKey::of(pod);
        let name = key.to_string();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let requests = PodRequests::of(pod, &name)?;
        let spec = pod.spec.as_ref();
        let node_name = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let node_selector = spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default();
        let tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
        let aff = spec.and_then(|s| s.affinity.as_ref());
        let node_aff = aff.and_then(|a| a.node_affinity.as_ref());
        let required_node_terms = match node_aff.and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
            Some(sel) => Some(
                sel.node_selector_terms
                    .iter()
                    .map(NodeTerm::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let preferred_node_terms = node_aff
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|p| Ok((i64::from(p.weight), NodeTerm::parse(&p.preference)?)))
            .collect::<Result<Vec<_>, SchedulerError>>()?;
        let ns = key.namespace.as_str();
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<_>>| -> Result<Vec<AffinityTerm>, SchedulerError> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::parse(t, ns, &labels))
                .collect()
        };
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        Ok((
                            i64::from(w.weight),
                            AffinityTerm::parse(&w.pod_affinity_term, ns, &labels)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, SchedulerError>>()
            };
        let affinity = required(pa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }))?;
        let anti_affinity = required(paa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }))?;
        let preferred_affinity = preferred(pa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }))?;
        let preferred_anti_affinity = preferred(paa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }))?;
        let mut spread = spec
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .into_iter()
            .flatten()
            .map(|c| SpreadConstraint::parse(c, &labels))
            .collect::<Result<Vec<_>, _>>()?;
        if spread.is_empty() && has_spreading_owner(pod) && !labels.is_empty() {
            spread.push(SpreadConstraint::system_default_hostname(&labels));
        }
        Ok(PodInfo {
            key,
            labels,
            node_name,
            requests,
            node_selector,
            required_node_terms,
            preferred_node_terms,
            tolerations,
            affinity,
            anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            spread,
        })
    }

    /// nodeSelector and required node affinity (the NodeAffinity filter).
    pub fn node_affinity_matches(&self, node: &NodeInfo) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && self
                .required_node_terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(&node.name, &node.labels)))
    }
}

/// A node, as the filters and scores see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub allocatable: Resources,
    pub allowed_pods: u64,
    /// Including the synthesized not-ready taint.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
}

impl NodeInfo {
    pub fn parse(node: &Node) -> Result<NodeInfo, SchedulerError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(SchedulerError::InvalidNode {
                name,
                reason: "metadata.name is empty".into(),
            });
        }
        let (allocatable, allowed_pods) = node_allocatable(node, &name)?;
        let spec = node.spec.as_ref();
        let mut taints: Vec<Taint> = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        for t in &mut taints {
            // Only key, value and effect matter; dropping timeAdded keeps
            // equality meaningful across heartbeats.
            t.time_added = None;
        }
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if !ready
            && !taints
                .iter()
                .any(|t| t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
        {
            taints.push(Taint {
                key: TAINT_NOT_READY.into(),
                value: None,
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
        Ok(NodeInfo {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            name,
            allocatable,
            allowed_pods,
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready,
        })
    }
}
