//! The scheduler's view of the cluster, updated incrementally.
//!
//! Per node: its parsed [`NodeInfo`], the sum of requests of the pods on it
//! (exact and non-zero) and their number. Per pod: its parsed [`PodInfo`]
//! and node. Two indices make the pod-to-pod plugins cost what matches, not
//! what exists: pods by namespace and label (`key=value` → pods), and the
//! existing pods' affinity terms grouped by identical term (term → pods per
//! node), so that "does any existing pod's anti-affinity forbid this pod"
//! looks at a few distinct terms rather than every pod.
//!
//! Invariants: every pod in the cache counts on exactly one node slot; a
//! node removed while pods still point at it stays as a "ghost" slot
//! (never scheduled onto, not counted as a node) until its last pod goes;
//! pods that finished (`Succeeded`/`Failed`) or are unbound are not kept.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::SchedulerError;
use super::affinity::{AffinityTerm, Namespaces};
use super::info::{NodeInfo, PodInfo, PodKey};
use super::labels::Selector;
use super::resources::Resources;

pub type PodId = u32;

/// A pod in the cache and the node it is on (or assumed on).
#[derive(Debug)]
pub struct PodEntry {
    pub info: PodInfo,
    pub node: String,
}

/// One node and what its pods request.
#[derive(Debug, Default)]
pub struct NodeSlot {
    pub name: String,
    /// `None` for a ghost (deleted node that still has pods).
    pub info: Option<NodeInfo>,
    pub requested: Resources,
    pub non_zero_cpu: u64,
    pub non_zero_memory: u64,
    pub pods: HashSet<PodId>,
}

#[derive(Debug, Default)]
struct NsIndex {
    all: HashSet<PodId>,
    by_label: HashMap<String, HashMap<String, HashSet<PodId>>>,
}

/// Counts of existing pods' terms, per node name.
pub type TermCounts = HashMap<String, u32>;

/// The cluster as the scheduler sees it. See the module docs.
#[derive(Debug, Default)]
pub struct Cache {
    pub(super) slots: Vec<NodeSlot>,
    slot_of: HashMap<String, usize>,
    live_nodes: usize,
    pods: Vec<Option<PodEntry>>,
    free: Vec<PodId>,
    pod_of: HashMap<PodKey, PodId>,
    ns: HashMap<String, NsIndex>,
    /// Existing pods' required anti-affinity terms.
    pub(super) anti_groups: HashMap<AffinityTerm, TermCounts>,
    /// Existing pods' terms that score the incoming pod (InterPodAffinity
    /// symmetry): preferred affinity (+weight), preferred anti-affinity
    /// (-weight), required affinity (+1, hardPodAffinityWeight).
    pub(super) score_groups: HashMap<(AffinityTerm, i64), TermCounts>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Nodes (not counting ghosts).
    pub fn node_count(&self) -> usize {
        self.live_nodes
    }

    pub fn pod_count(&self) -> usize {
        self.pod_of.len()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.slot_of
            .get(name)
            .and_then(|i| self.slots.get(*i))
            .and_then(|s| s.info.as_ref())
    }

    /// The node a pod is on (or assumed on).
    pub fn pod_node(&self, key: &PodKey) -> Option<&str> {
        self.pod_of
            .get(key)
            .and_then(|id| self.entry(*id))
            .map(|e| e.node.as_str())
    }

    /// Names of the pods on a node, sorted.
    pub fn pods_on(&self, node: &str) -> Vec<PodKey> {
        let mut v: Vec<PodKey> = self
            .slot_of
            .get(node)
            .and_then(|i| self.slots.get(*i))
            .into_iter()
            .flat_map(|s| s.pods.iter())
            .filter_map(|id| self.entry(*id))
            .map(|e| e.info.key.clone())
            .collect();
        v.sort();
        v
    }

    /// Requests summed over a node's pods.
    pub fn requested(&self, node: &str) -> Option<&Resources> {
        self.slot_of
            .get(node)
            .and_then(|i| self.slots.get(*i))
            .map(|s| &s.requested)
    }

    pub(super) fn entry(&self, id: PodId) -> Option<&PodEntry> {
        self.pods.get(id as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, name: &str) -> &mut NodeSlot {
        let i = match self.slot_of.get(name) {
            Some(i) => *i,
            None => {
                self.slots.push(NodeSlot {
                    name: name.to_string(),
                    ..NodeSlot::default()
                });
                let i = self.slots.len() - 1;
                self.slot_of.insert(name.to_string(), i);
                i
            }
        };
        // `i` indexes `slots`: taken from `slot_of`, which mirrors it.
        &mut self.slots[i]
    }

    /// Adds or replaces a node; returns whether anything the scheduler
    /// looks at changed (a heartbeat alone does not).
    pub fn upsert_node(&mut self, node: &Node) -> Result<bool, SchedulerError> {
        let info = NodeInfo::parse(node)?;
        let name = info.name.clone();
        let slot = self.slot_mut(&name);
        if slot.info.as_ref() == Some(&info) {
            return Ok(false);
        }
        let was_live = slot.info.replace(info).is_some();
        if !was_live {
            self.live_nodes += 1;
        }
        Ok(true)
    }

    /// Removes a node; its pods stay (on a ghost slot) until removed.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(&i) = self.slot_of.get(name) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        if slot.info.take().is_none() {
            return false;
        }
        self.live_nodes -= 1;
        if slot.pods.is_empty() {
            self.drop_slot(i);
        }
        true
    }

    fn drop_slot(&mut self, i: usize) {
        if i >= self.slots.len() {
            return;
        }
        let slot = self.slots.swap_remove(i);
        self.slot_of.remove(&slot.name);
        // The slot moved into `i` (if any) must be re-pointed.
        if let Some(moved) = self.slots.get(i) {
            self.slot_of.insert(moved.name.clone(), i);
        }
    }

    /// Adds, moves or removes a pod according to its current state: bound
    /// and not finished → counted on its node; otherwise not kept.
    pub fn upsert_pod(&mut self, pod: &Pod) -> Result<(), SchedulerError> {
        let key = PodKey::of(pod);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        match node {
            Some(node) if !finished => {
                let info = PodInfo::parse(pod)?;
                let node = node.to_string();
                self.remove_pod(&key);
                self.insert(info, node);
            }
            _ => {
                self.remove_pod(&key);
            }
        }
        Ok(())
    }

    /// Counts a pod on a node before the binding is stored (kube-scheduler's
    /// "assume"); replaces any earlier entry for the pod.
    pub fn assume(&mut self, info: PodInfo, node: &str) {
        self.remove_pod(&info.key.clone());
        self.insert(info, node.to_string());
    }

    fn insert(&mut self, info: PodInfo, node: String) {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.pods.push(None);
                (self.pods.len() - 1) as PodId
            }
        };
        let slot = self.slot_mut(&node);
        slot.requested.add(&info.requests.exact);
        slot.non_zero_cpu += info.requests.non_zero_cpu;
        slot.non_zero_memory += info.requests.non_zero_memory;
        slot.pods.insert(id);
        let ns = self.ns.entry(info.key.namespace.clone()).or_default();
        ns.all.insert(id);
        for (k, v) in &info.labels {
            ns.by_label
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(id);
        }
        for t in &info.anti_affinity {
            *self
                .anti_groups
                .entry(t.clone())
                .or_default()
                .entry(node.clone())
                .or_default() += 1;
        }
        for (t, w) in score_terms(&info) {
            *self
                .score_groups
                .entry((t.clone(), w))
                .or_default()
                .entry(node.clone())
                .or_default() += 1;
        }
        self.pod_of.insert(info.key.clone(), id);
        if let Some(p) = self.pods.get_mut(id as usize) {
            *p = Some(PodEntry { info, node });
        }
    }

    /// Forgets a pod (deleted, finished, or an assumption undone).
    pub fn remove_pod(&mut self, key: &PodKey) -> bool {
        let Some(id) = self.pod_of.remove(key) else {
            return false;
        };
        let Some(PodEntry { info, node }) = self.pods.get_mut(id as usize).and_then(Option::take)
        else {
            return false;
        };
        self.free.push(id);
        if let Some(&i) = self.slot_of.get(&node)
            && let Some(slot) = self.slots.get_mut(i)
        {
            slot.requested.sub(&info.requests.exact);
            slot.non_zero_cpu = slot.non_zero_cpu.saturating_sub(info.requests.non_zero_cpu);
            slot.non_zero_memory = slot
                .non_zero_memory
                .saturating_sub(info.requests.non_zero_memory);
            slot.pods.remove(&id);
            if slot.info.is_none() && slot.pods.is_empty() {
                self.drop_slot(i);
            }
        }
        if let Some(ns) = self.ns.get_mut(&info.key.namespace) {
            ns.all.remove(&id);
            for (k, v) in &info.labels {
                if let Some(values) = ns.by_label.get_mut(k) {
                    if let Some(set) = values.get_mut(v) {
                        set.remove(&id);
                        if set.is_empty() {
                            values.remove(v);
                        }
                    }
                    if values.is_empty() {
                        ns.by_label.remove(k);
                    }
                }
            }
            if ns.all.is_empty() {
                self.ns.remove(&info.key.namespace);
            }
        }
        for t in &info.anti_affinity {
            decrement(&mut self.anti_groups, t, &node);
        }
        for (t, w) in score_terms(&info) {
            decrement(&mut self.score_groups, &(t.clone(), w), &node);
        }
        true
    }

    /// Calls `f` for every pod in `namespaces` whose labels `selector`
    /// matches, looking candidates up by the selector's most selective
    /// equality when it has one.
    pub fn for_each_matching(
        &self,
        namespaces: &Namespaces,
        selector: &Selector,
        mut f: impl FnMut(&PodEntry),
    ) {
        if selector.selects_nothing() {
            return;
        }
        let mut visit = |ns: &NsIndex| {
            let best = selector
                .equalities()
                .map(|(k, vs)| {
                    let sets: Vec<&HashSet<PodId>> = vs
                        .iter()
                        .filter_map(|v| ns.by_label.get(k).and_then(|m| m.get(v)))
                        .collect();
                    let n: usize = sets.iter().map(|s| s.len()).sum();
                    (n, sets)
                })
                .min_by_key(|(n, _)| *n);
            let sets = match best {
                Some((_, sets)) => sets,
                None => vec![&ns.all],
            };
            for id in sets.into_iter().flatten() {
                if let Some(e) = self.entry(*id)
                    && selector.matches(&e.info.labels)
                {
                    f(e);
                }
            }
        };
        match namespaces {
            Namespaces::All => self.ns.values().for_each(&mut visit),
            Namespaces::Only(list) => list
                .iter()
                .filter_map(|n| self.ns.get(n))
                .for_each(&mut visit),
        }
    }
}

fn score_terms(info: &PodInfo) -> impl Iterator<Item = (&AffinityTerm, i64)> {
    info.affinity
        .iter()
        .map(|t| (t, 1))
        .chain(info.preferred_affinity.iter().map(|(w, t)| (t, *w)))
        .chain(info.preferred_anti_affinity.iter().map(|(w, t)| (t, -*w)))
}

fn decrement<K: std::hash::Hash + Eq>(groups: &mut HashMap<K, TermCounts>, k: &K, node: &str) {
    if let Some(per_node) = groups.get_mut(k) {
        if let Some(c) = per_node.get_mut(node) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                per_node.remove(node);
            }
        }
        if per_node.is_empty() {
            groups.remove(k);
        }
    }
}
