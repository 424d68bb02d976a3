//! The pending pods, as kube-scheduler's scheduling queue keeps them:
//! active (to try now, FIFO), backing off (failed: retried after 1 s
//! doubling to 10 s by default), unschedulable (parked until the cluster
//! changes in a way that may help, or at the latest after a flush interval,
//! 5 minutes by default), or in flight (being scheduled or bound).
//!
//! Invariants: each pod is in exactly one state; `active` holds exactly the
//! keys in the Active state; timers are a heap with lazy deletion (an entry
//! counts only if the pod's generation still matches), so finding the next
//! wake-up is O(log n) per change, never a scan.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::info::PodKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    InFlight,
    Backoff,
    Unschedulable,
}

#[derive(Debug)]
pub struct Pending {
    /// The pod as last seen in the store.
    pub object: Value,
    pub state: State,
    pub attempts: u32,
    /// The pod has required pod affinity (a new pod may make it fit).
    pub wants_pods: bool,
    /// The PodScheduled=False message last written.
    pub written_message: Option<String>,
    generation: u64,
    parked_at: Option<Instant>,
}

/// Backoff and flush settings.
#[derive(Debug, Clone)]
pub struct Timing {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub unschedulable_flush: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_flush: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
pub struct Queue {
    pods: HashMap<PodKey, Pending>,
    active: VecDeque<PodKey>,
    parked: HashSet<PodKey>,
    timers: BinaryHeap<Reverse<(Instant, u64, PodKey)>>,
    timing: Timing,
    next_generation: u64,
}

impl Queue {
    pub fn new(timing: Timing) -> Queue {
        Queue {
            timing,
            ..Queue::default()
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn get(&self, key: &PodKey) -> Option<&Pending> {
        self.pods.get(key)
    }

    /// Pods parked as unschedulable.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn activate(&mut self, key: &PodKey) {
        let g = self.bump();
        if let Some(p) = self.pods.get_mut(key)
            && p.state != State::Active
        {
            p.state = State::Active;
            p.generation = g;
            self.active.push_back(key.clone());
            self.parked.remove(key);
        }
    }

    /// A pending pod was seen (added or updated in the store). New pods
    /// become active; a parked pod whose spec changed is retried.
    pub fn upsert(&mut self, key: PodKey, object: Value, wants_pods: bool) {
        match self.pods.get_mut(&key) {
            Some(p) => {
                let spec_changed = p.object.get("spec") != object.get("spec")
                    || p.object.pointer("/metadata/labels") != object.pointer("/metadata/labels");
                p.object = object;
                p.wants_pods = wants_pods;
                if spec_changed && p.state == State::Unschedulable {
                    self.activate(&key);
                }
            }
            None => {
                let g = self.bump();
                self.pods.insert(
                    key.clone(),
                    Pending {
                        object,
                        state: State::Active,
                        attempts: 0,
                        wants_pods,
                        written_message: None,
                        generation: g,
                        parked_at: None,
                    },
                );
                self.active.push_back(key);
            }
        }
    }

    pub fn remove(&mut self, key: &PodKey) -> Option<Pending> {
        // A stale key left in `active` is skipped by `pop_batch`.
        self.parked.remove(key);
        self.pods.remove(key)
    }

    /// Up to `n` active pods, marked in flight.
    pub fn pop_batch(&mut self, n: usize) -> Vec<(PodKey, Value)> {
        let mut out = Vec::with_capacity(n.min(self.active.len()));
        while out.len() < n {
            let Some(key) = self.active.pop_front() else {
                break;
            };
            if let Some(p) = self.pods.get_mut(&key)
                && p.state == State::Active
            {
                p.state = State::InFlight;
                p.attempts += 1;
                out.push((key, p.object.clone()));
            }
        }
        out
    }

    /// Try again now (binding conflict: the pod changed under us).
    pub fn retry_now(&mut self, key: &PodKey, object: Option<Value>) {
        if let Some(p) = self.pods.get_mut(key)
            && let Some(o) = object
        {
            p.object = o;
        }
        self.activate(key);
    }

    /// Retry after the pod's backoff (an error that may pass).
    pub fn back_off(&mut self, key: &PodKey, now: Instant) {
        let g = self.bump();
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        let until = now + backoff(&self.timing, p.attempts);
        p.state = State::Backoff;
        p.generation = g;
        self.timers.push(Reverse((until, g, key.clone())));
    }

    /// Park a pod that fits nowhere until the cluster changes.
    pub fn park(&mut self, key: &PodKey, object: Value, message: String, now: Instant) {
        let g = self.bump();
        let flush = self.timing.unschedulable_flush;
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        p.object = object;
        p.written_message = Some(message);
        p.state = State::Unschedulable;
        p.generation = g;
        p.parked_at = Some(now);
        self.parked.insert(key.clone());
        self.timers.push(Reverse((now + flush, g, key.clone())));
    }

    /// The cluster changed: parked pods go back, after their backoff
    /// (`only_wanting_pods`: just those with required pod affinity).
    pub fn unpark(&mut self, now: Instant, only_wanting_pods: bool) {
        let keys: Vec<PodKey> = self
            .parked
            .iter()
            .filter(|k| {
                self.pods
                    .get(*k)
                    .is_some_and(|p| !only_wanting_pods || p.wants_pods)
            })
            .cloned()
            .collect();
        for k in keys {
            let Some(p) = self.pods.get(&k) else {
                continue;
            };
            let ready_at = p.parked_at.unwrap_or(now) + backoff(&self.timing, p.attempts);
            if ready_at <= now {
                self.activate(&k);
            } else {
                let g = self.bump();
                if let Some(p) = self.pods.get_mut(&k) {
                    p.state = State::Backoff;
                    p.generation = g;
                }
                self.parked.remove(&k);
                self.timers.push(Reverse((ready_at, g, k)));
            }
        }
    }

    /// When the next timer fires.
    pub fn next_wakeup(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, g, key))) = self.timers.peek() {
            if self.pods.get(key).is_some_and(|p| p.generation == *g) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires due timers: backoffs end, long-parked pods are flushed.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, g, key))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.pods.get(&key).is_some_and(|p| p.generation == g) {
                self.activate(&key);
            }
        }
    }
}

fn backoff(t: &Timing, attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(20);
    t.initial_backoff
        .saturating_mul(1u32 << shift)
        .min(t.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: &str) -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: n.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_park_and_unpark() {
        let mut q = Queue::new(Timing::default());
        q.upsert(key("a"), json!({"spec": {"x": 1}}), false);
        q.upsert(key("b"), json!({"spec": {}}), true);
        let batch = q.pop_batch(10);
        assert_eq!(batch.len(), 2);
        assert!(!q.has_active());
        let now = Instant::now();
        q.back_off(&key("a"), now);
        q.park(&key("b"), json!({"spec": {}}), "0/1".into(), now);
        assert_eq!(q.next_wakeup(), Some(now + Duration::from_secs(1)));
        q.tick(now + Duration::from_millis(999));
        assert!(!q.has_active());
        q.tick(now + Duration::from_secs(1));
        assert_eq!(q.pop_batch(10)[0].0, key("a"));
        // Parked b: a pod change for pods-wanting pods; retried after its
        // backoff (1 s after parking).
        q.unpark(now + Duration::from_secs(2), true);
        assert_eq!(q.pop_batch(10)[0].0, key("b"));
        assert_eq!(q.get(&key("b")).map(|p| p.attempts), Some(2));
        // A spec change of a parked pod retries it at once.
        q.park(&key("b"), json!({"spec": {}}), "0/1".into(), now);
        q.upsert(key("b"), json!({"spec": {"y": 1}}), true);
        assert!(q.has_active());
        assert_eq!(backoff(&q.timing, 5), Duration::from_secs(10));
        assert!(q.remove(&key("b")).is_some());
        assert!(q.pop_batch(10).is_empty());
    }
}
