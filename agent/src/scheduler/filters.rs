//! The per-node filters that need no cluster-wide state, in
//! kube-scheduler's default order: NodeUnschedulable, NodeName,
//! TaintToleration, NodeAffinity, NodeResourcesFit. (PodTopologySpread and
//! InterPodAffinity, which count other pods, live in `spread` and
//! `affinity` and run after these.)
//!
//! Each returns the reasons a node fails, worded as kube-scheduler words
//! them, so that the unschedulable message reads the same.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Taint;

use super::cache::NodeSlot;
use super::info::{NodeInfo, PodInfo, TAINT_UNSCHEDULABLE};
use super::labels::tolerated_by;

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// A failure reason: a fixed phrase, or one naming a taint or resource.
pub type Reason = Cow<'static, str>;

/// NodeUnschedulable: `spec.unschedulable` unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
pub fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    if !node.unschedulable {
        return None;
    }
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: None,
    };
    (!tolerated_by(&pod.tolerations, &taint)).then_some(Cow::Borrowed(REASON_UNSCHEDULABLE))
}

/// NodeName: `spec.nodeName`, when set, must be this node.
pub fn node_name(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    match &pod.node_name {
        Some(n) if *n != node.name => Some(Cow::Borrowed(REASON_NODE_NAME)),
        _ => None,
    }
}

/// TaintToleration: the first NoSchedule/NoExecute taint the pod does not
/// tolerate.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    node.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated_by(&pod.tolerations, t))
        .map(|t| {
            Cow::Owned(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ))
        })
}

/// NodeAffinity: nodeSelector and required node affinity terms.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    (!pod.node_affinity_matches(node)).then_some(Cow::Borrowed(REASON_NODE_AFFINITY))
}

/// NodeResourcesFit: every insufficient resource (several reasons may
/// come from one node, as in kube-scheduler).
pub fn resources_fit(pod: &PodInfo, node: &NodeInfo, slot: &NodeSlot, out: &mut Vec<Reason>) {
    if slot.pods.len() as u64 + 1 > node.allowed_pods {
        out.push(Cow::Borrowed(REASON_TOO_MANY_PODS));
    }
    let want = &pod.requests.exact;
    if want.is_zero() {
        return;
    }
    let have = &node.allocatable;
    let used = &slot.requested;
    let short = |want: u64, have: u64, used: u64| want > 0 && want > have.saturating_sub(used);
    if short(want.milli_cpu, have.milli_cpu, used.milli_cpu) {
        out.push(Cow::Borrowed("Insufficient cpu"));
    }
    if short(want.memory, have.memory, used.memory) {
        out.push(Cow::Borrowed("Insufficient memory"));
    }
    if short(
        want.ephemeral_storage,
        have.ephemeral_storage,
        used.ephemeral_storage,
    ) {
        out.push(Cow::Borrowed("Insufficient ephemeral-storage"));
    }
    for (name, w) in &want.scalar {
        let h = have.scalar.get(name).copied().unwrap_or(0);
        let u = used.scalar.get(name).copied().unwrap_or(0);
        if short(*w, h, u) {
            out.push(Cow::Owned(format!("Insufficient {name}")));
        }
    }
}

/// The stateless filters in order; stops at the first that fails, as
/// kube-scheduler's framework does.
pub fn run(pod: &PodInfo, node: &NodeInfo, slot: &NodeSlot, out: &mut Vec<Reason>) {
    for f in [
        node_unschedulable,
        node_name,
        taint_toleration,
        node_affinity,
    ] {
        if let Some(r) = f(pod, node) {
            out.push(r);
            return;
        }
    }
    resources_fit(pod, node, slot, out);
}
