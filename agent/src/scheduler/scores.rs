//! The per-node scores that need no cluster-wide state, each 0-100 after
//! normalising, and the default plugin weights.
//!
//! - NodeResourcesFit, LeastAllocated strategy (weight 1): mean over CPU
//!   and memory of `(allocatable - requested) * 100 / allocatable`, with
//!   non-zero requests (100m / 200Mi for containers that set none).
//! - NodeResourcesBalancedAllocation (weight 1): `(1 - std) * 100` of the
//!   CPU and memory fractions requested (exact requests, pod included).
//! - NodeAffinity (weight 2): sum of matching preferred terms' weights,
//!   scaled so the best node gets 100.
//! - TaintToleration (weight 3): untolerated PreferNoSchedule taints,
//!   reversed so the node with the most gets 0.
//! - InterPodAffinity (weight 2) and PodTopologySpread (weight 2) are in
//!   `affinity` and `spread`.

use super::cache::NodeSlot;
use super::info::{NodeInfo, PodInfo};
use super::labels::tolerates;

pub const WEIGHT_FIT: i64 = 1;
pub const WEIGHT_BALANCED: i64 = 1;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_TAINT: i64 = 3;
pub const WEIGHT_INTER_POD: i64 = 2;
pub const WEIGHT_SPREAD: i64 = 2;

pub const MAX_SCORE: i64 = 100;

fn least_requested(requested: u64, capacity: u64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    ((capacity - requested) as i64 * MAX_SCORE) / capacity as i64
}

/// LeastAllocated.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo, slot: &NodeSlot) -> i64 {
    let cpu = least_requested(
        slot.non_zero_cpu + pod.requests.non_zero_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = least_requested(
        slot.non_zero_memory + pod.requests.non_zero_memory,
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// BalancedAllocation; `None` when the pod requests neither CPU nor
/// memory (the plugin skips such pods).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo, slot: &NodeSlot) -> Option<i64> {
    let want = &pod.requests.exact;
    if want.milli_cpu == 0 && want.memory == 0 {
        return None;
    }
    let mut fractions = Vec::with_capacity(2);
    for (req, alloc) in [
        (
            slot.requested.milli_cpu + want.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (slot.requested.memory + want.memory, node.allocatable.memory),
    ] {
        if alloc > 0 {
            fractions.push((req as f64 / alloc as f64).min(1.0));
        }
    }
    let std = match fractions.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        _ => 0.0,
    };
    Some(((1.0 - std) * MAX_SCORE as f64) as i64)
}

/// Preferred node affinity, raw (sum of weights).
pub fn node_affinity_raw(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_node_terms
        .iter()
        .filter(|(_, t)| t.matches(&node.name, &node.labels))
        .map(|(w, _)| *w)
        .sum()
}

/// Untolerated PreferNoSchedule taints, raw count.
pub fn taint_raw(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| {
            !pod.tolerations.iter().any(|tol| {
                matches!(
                    tol.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                ) && tolerates(tol, t)
            })
        })
        .count() as i64
}

/// kube-scheduler's `DefaultNormalizeScore`: scale so the maximum is 100
/// (reversed: the maximum gets 0); all equal to 0 → 0 (reversed: 100).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_SCORE * *s / max;
        *s = if reverse { MAX_SCORE - v } else { v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        assert_eq!(least_requested(250, 1000), 75);
        assert_eq!(least_requested(2000, 1000), 0);
        assert_eq!(least_requested(1, 0), 0);
    }
}
