//! One scheduling cycle: filter, score, pick, assume.
//!
//! Nodes are visited round robin from where the previous pod stopped, and
//! the search stops once enough feasible nodes are found
//! (`percentageOfNodesToScore`, adaptive as in kube-scheduler: 50% at 100
//! nodes, minus 1% per 125 nodes, at least 5% and at least 100 nodes); a
//! pod that fits nowhere has visited every node, so its message accounts
//! for all of them. Scores are the default plugins' with their default
//! weights; ties are broken by a seeded generator (deterministic for a
//! given seed and sequence of calls). A pod that is placed is assumed in
//! the cache at once, so the next pod of a batch sees it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use super::affinity::{self, AffinityFilter, AffinityScore};
use super::cache::Cache;
use super::filters::{self, Reason};
use super::info::{PodInfo, PodKey};
use super::scores::{self, default_normalize};
use super::spread::{self, SpreadFilter, SpreadScore};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Percentage of nodes to find feasible before scoring; 0 = adaptive.
    pub percentage_of_nodes_to_score: u32,
    /// Seed of the tie-breaking generator.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            percentage_of_nodes_to_score: 0,
            seed: 0x005e_ed0f_4e4d,
        }
    }
}

/// Why a pod fits no node: counts per reason (kube-scheduler's FitError),
/// or the reason the pod itself is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
    /// Set when the pod could not be read (bad quantity, bad selector).
    pub invalid: Option<String>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.invalid {
            return write!(f, "pod cannot be scheduled: {e}");
        }
        if self.nodes == 0 {
            return write!(f, "no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        )
    }
}

/// SplitMix64: small, seeded, good enough to break ties.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The scheduling algorithm over a [`Cache`].
#[derive(Debug)]
pub struct Scheduler {
    cache: Cache,
    config: Config,
    rng: Rng,
    next_start: usize,
}

/// One result of [`Scheduler::schedule_batch`].
pub type Placement = (PodKey, Result<String, Unschedulable>);

impl Scheduler {
    pub fn new(config: Config) -> Scheduler {
        Scheduler {
            cache: Cache::new(),
            rng: Rng(config.seed),
            config,
            next_start: 0,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn cache_mut(&mut self) -> &mut Cache {
        &mut self.cache
    }

    /// kube-scheduler's `numFeasibleNodesToFind`.
    pub fn nodes_to_find(&self, all: usize) -> usize {
        const MIN_NODES: usize = 100;
        if all < MIN_NODES || self.config.percentage_of_nodes_to_score >= 100 {
            return all;
        }
        let pct = match self.config.percentage_of_nodes_to_score {
            0 => (50 - (all / 125) as i64).max(5) as usize,
            p => p as usize,
        };
        (all * pct / 100).max(MIN_NODES)
    }

    /// Places pods one after the other, each seeing the ones before.
    pub fn schedule_batch(&mut self, pods: &[Pod]) -> Vec<Placement> {
        pods.iter()
            .map(|p| (PodKey::of(p), self.schedule(p)))
            .collect()
    }

    /// Picks a node for one pod and assumes the pod there.
    pub fn schedule(&mut self, pod: &Pod) -> Result<String, Unschedulable> {
        let info = PodInfo::parse(pod).map_err(|e| Unschedulable {
            nodes: self.cache.node_count(),
            reasons: BTreeMap::new(),
            invalid: Some(e.to_string()),
        })?;
        let node = self.place(&info)?;
        self.cache.assume(info, &node);
        Ok(node)
    }

    fn place(&mut self, pod: &PodInfo) -> Result<String, Unschedulable> {
        let live = self.cache.node_count();
        let slots = self.cache.slots.len();
        if live == 0 || slots == 0 {
            return Err(Unschedulable {
                nodes: 0,
                reasons: BTreeMap::new(),
                invalid: None,
            });
        }
        let to_find = self.nodes_to_find(live);
        let cache = &self.cache;
        let aff = AffinityFilter::new(cache, pod);
        let spread_filter = SpreadFilter::new(cache, pod);
        let mut feasible: Vec<usize> = Vec::with_capacity(to_find.min(live));
        let mut reasons: HashMap<Reason, usize> = HashMap::new();
        let mut buf: Vec<Reason> = Vec::new();
        let start = self.next_start % slots;
        let mut visited = 0;
        for off in 0..slots {
            visited = off + 1;
            let i = (start + off) % slots;
            let Some(slot) = cache.slots.get(i) else {
                continue;
            };
            let Some(node) = slot.info.as_ref() else {
                continue;
            };
            buf.clear();
            filters::run(pod, node, slot, &mut buf);
            if buf.is_empty()
                && let Some(Err(r)) = spread_filter.as_ref().map(|s| s.check(node))
            {
                buf.push(Reason::Borrowed(r));
            }
            if buf.is_empty()
                && let Err(r) = aff.check(node)
            {
                buf.push(Reason::Borrowed(r));
            }
            if buf.is_empty() {
                feasible.push(i);
                if feasible.len() >= to_find {
                    break;
                }
            } else {
                for r in buf.drain(..) {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
        self.next_start = (start + visited) % slots;
        if feasible.is_empty() {
            return Err(Unschedulable {
                nodes: live,
                reasons: reasons
                    .into_iter()
                    .map(|(r, n)| (r.into_owned(), n))
                    .collect(),
                invalid: None,
            });
        }
        let best = if feasible.len() == 1 {
            feasible[0]
        } else {
            let totals = self.score(pod, &feasible);
            let mut best = (i64::MIN, feasible[0]);
            let mut ties = 0u64;
            for (score, i) in totals.into_iter().zip(feasible.iter().copied()) {
                if score > best.0 {
                    best = (score, i);
                    ties = 1;
                } else if score == best.0 {
                    ties += 1;
                    if self.rng.next().is_multiple_of(ties) {
                        best.1 = i;
                    }
                }
            }
            best.1
        };
        Ok(self
            .cache
            .slots
            .get(best)
            .map(|s| s.name.clone())
            .unwrap_or_default())
    }

    /// Weighted sum of the normalised plugin scores, per feasible slot.
    fn score(&self, pod: &PodInfo, feasible: &[usize]) -> Vec<i64> {
        let cache = &self.cache;
        let nodes: Vec<_> = feasible
            .iter()
            .filter_map(|i| cache.slots.get(*i))
            .filter_map(|s| s.info.as_ref().map(|n| (n, s)))
            .collect();
        let mut total: Vec<i64> = nodes
            .iter()
            .map(|(n, s)| {
                scores::WEIGHT_FIT * scores::least_allocated(pod, n, s)
                    + scores::WEIGHT_BALANCED * scores::balanced_allocation(pod, n, s).unwrap_or(0)
            })
            .collect();
        let mut add = |part: Vec<i64>, weight: i64| {
            for (t, p) in total.iter_mut().zip(part) {
                *t += weight * p;
            }
        };
        if !pod.preferred_node_terms.is_empty() {
            let mut raw: Vec<i64> = nodes
                .iter()
                .map(|(n, _)| scores::node_affinity_raw(pod, n))
                .collect();
            default_normalize(&mut raw, false);
            add(raw, scores::WEIGHT_NODE_AFFINITY);
        }
        let mut raw: Vec<i64> = nodes
            .iter()
            .map(|(n, _)| scores::taint_raw(pod, n))
            .collect();
        default_normalize(&mut raw, true);
        add(raw, scores::WEIGHT_TAINT);
        let inter = AffinityScore::new(cache, pod);
        if !inter.is_empty() {
            let mut raw: Vec<i64> = nodes.iter().map(|(n, _)| inter.raw(n)).collect();
            affinity::normalize(&mut raw);
            add(raw, scores::WEIGHT_INTER_POD);
        }
        if let Some(sp) = SpreadScore::new(cache, pod) {
            let raw: Vec<Option<i64>> = nodes.iter().map(|(n, _)| sp.raw(n)).collect();
            add(spread::normalize(&raw), scores::WEIGHT_SPREAD);
        }
        total
    }
}
