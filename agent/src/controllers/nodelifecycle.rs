//! Node lifecycle: taints from the `Ready` condition, eviction of pods
//! that do not tolerate a node's NoExecute taints, as
//! kube-controller-manager's node lifecycle controller and taint manager.
//!
//! The membership layer (gossip) writes each Node's `Ready` condition; this
//! controller only reads it:
//! - Ready=True: the `node.kubernetes.io/unreachable` and
//!   `node.kubernetes.io/not-ready` taints this controller manages are
//!   removed.
//! - Ready=Unknown: `unreachable` with NoSchedule and NoExecute;
//!   Ready=False: `not-ready` with both effects. Each gets `timeAdded`.
//! - No Ready condition at all: nothing is done (the node has not reported
//!   yet; never evict on missing data).
//!
//! On a node whose Ready is not True every non-terminal pod with a True
//! `Ready` condition gets it set to False (`MarkPodsNotReady`), so Endpoints
//! drop it at once.
//!
//! Eviction (every NoExecute taint, counted from its `timeAdded`, which is
//! set here when missing): a pod is deleted (gracefully, as the API does) at
//! the earliest deadline over the taints: a tolerated taint's deadline is
//! `timeAdded + tolerationSeconds` (none: tolerated forever); an
//! untolerated `unreachable`/`not-ready` taint's is `timeAdded + grace`
//! (herd's default 5 s, [`DEFAULT_EVICTION_GRACE`], where Kubernetes'
//! DefaultTolerationSeconds admission uses 300 s); any other untolerated
//! taint evicts at once. DaemonSet pods (controller owner kind DaemonSet)
//! and static pods' mirrors tolerate the `unreachable`/`not-ready` taints.
//! The reconcile asks to run again at the next deadline: no polling.
//!
//! A pod already terminating on an unreachable node (Ready=Unknown) cannot
//! be finished by its kubelet: once its deletionTimestamp has passed it is
//! removed from the store (the kubelet kills its containers when it comes
//! back and sees the pod gone).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::endpoints::{pod_ready, pod_terminal, store_err};
use super::gc::{Propagation, delete_object, is_terminating, time_at, time_value, uid};
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{Datastore, Key, StoreError, WatchEvent, resource_version, update_with};

const NAME: &str = "nodelifecycle";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Time a pod without a matching toleration stays on an unreachable or
/// not-ready node.
pub const DEFAULT_EVICTION_GRACE: Duration = Duration::from_secs(5);
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The node's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    Unknown,
    /// No Ready condition reported yet.
    Unreported,
}

pub fn readiness(node: &Value) -> Readiness {
    let cond = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    match cond.and_then(|c| c.get("status")).and_then(Value::as_str) {
        None => Readiness::Unreported,
        Some("True") => Readiness::Ready,
        Some("False") => Readiness::NotReady,
        Some(_) => Readiness::Unknown,
    }
}

fn managed(taint: &Value) -> bool {
    matches!(
        taint.get("key").and_then(Value::as_str),
        Some(TAINT_UNREACHABLE | TAINT_NOT_READY)
    )
}

/// The node's taints after this pass; `None` when nothing changes.
pub fn desired_taints(node: &Value, now: Timestamp) -> Option<Vec<Value>> {
    let current: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let want_key = match readiness(node) {
        Readiness::Ready => None,
        Readiness::NotReady => Some(TAINT_NOT_READY),
        Readiness::Unknown => Some(TAINT_UNREACHABLE),
        Readiness::Unreported => return fix_time_added(current, now),
    };
    let mut out: Vec<Value> = current
        .iter()
        .filter(|t| {
            !managed(t)
                || (want_key.is_some()
                    && t.get("key").and_then(Value::as_str) == want_key
                    && matches!(
                        t.get("effect").and_then(Value::as_str),
                        Some("NoSchedule" | "NoExecute")
                    ))
        })
        .cloned()
        .collect();
    if let Some(k) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            let present = out.iter().any(|t| {
                t.get("key").and_then(Value::as_str) == Some(k)
                    && t.get("effect").and_then(Value::as_str) == Some(effect)
            });
            if !present {
                out.push(json!({"key": k, "effect": effect, "timeAdded": time_value(now)}));
            }
        }
    }
    let fixed = fix_time_added(out.clone(), now).unwrap_or(out);
    (fixed != current).then_some(fixed)
}

/// Sets `timeAdded` on NoExecute taints without one (deadlines count from
/// it).
fn fix_time_added(mut taints: Vec<Value>, now: Timestamp) -> Option<Vec<Value>> {
    let mut changed = false;
    for t in &mut taints {
        if t.get("effect").and_then(Value::as_str) == Some("NoExecute")
            && t.get("timeAdded").is_none_or(Value::is_null)
            && let Some(o) = t.as_object_mut()
        {
            o.insert("timeAdded".into(), time_value(now));
            changed = true;
        }
    }
    changed.then_some(taints)
}

/// `v1.Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (te, tk) = (s(toleration, "effect"), s(toleration, "key"));
    if !te.is_empty() && te != s(taint, "effect") {
        return false;
    }
    if !tk.is_empty() && tk != s(taint, "key") {
        return false;
    }
    match toleration.get("operator").and_then(Value::as_str) {
        Some("Exists") => true,
        None | Some("Equal") | Some("") => s(toleration, "value") == s(taint, "value"),
        Some(_) => false,
    }
}

fn tolerates_conditions(pod: &Value) -> bool {
    let ds_owned = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("kind").and_then(Value::as_str) == Some("DaemonSet")
            })
        });
    let mirror = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .is_some();
    ds_owned || mirror
}

/// When the pod must leave a node with these NoExecute taints (`None`:
/// never).
pub fn eviction_deadline(
    pod: &Value,
    taints: &[&Value],
    grace: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let tolerations: Vec<&Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut deadline: Option<Timestamp> = None;
    for taint in taints {
        let added = time_at(taint, "/timeAdded").unwrap_or(now);
        let matching: Vec<&&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let at = if matching.is_empty() {
            if !managed(taint) {
                Some(now.min(added))
            } else if tolerates_conditions(pod) {
                None
            } else {
                added.checked_add(grace).ok()
            }
        } else {
            matching
                .iter()
                .filter_map(|t| t.get("tolerationSeconds").and_then(Value::as_i64))
                .min()
                .map(|s| {
                    added
                        .checked_add(SignedDuration::from_secs(s.max(0)))
                        .unwrap_or(Timestamp::MAX)
                })
        };
        deadline = match (deadline, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    deadline
}

/// The node lifecycle controller.
#[derive(Debug)]
pub struct NodeLifecycleController {
    grace: Duration,
}

impl Default for NodeLifecycleController {
    fn default() -> Self {
        NodeLifecycleController::new(DEFAULT_EVICTION_GRACE)
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl NodeLifecycleController {
    /// `grace`: how long pods without a matching toleration stay on an
    /// unreachable or not-ready node.
    pub fn new(grace: Duration) -> NodeLifecycleController {
        NodeLifecycleController { grace }
    }

    /// Sets the pod's Ready condition to False.
    fn mark_not_ready(
        &self,
        store: &dyn Datastore,
        key: &Key,
        want: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let r = update_with(store, key, |mut cur| {
            if uid(&cur) != Some(want) || !pod_ready(&cur) {
                return Ok(None);
            }
            if let Some(cs) = cur
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                for c in cs {
                    if c.get("type").and_then(Value::as_str) == Some("Ready") {
                        c["status"] = json!("False");
                        c["lastTransitionTime"] = time_value(now);
                    }
                }
            }
            Ok(Some(cur))
        });
        match r {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Pods on the node: marks, evicts, force-deletes; returns the delay
    /// until the next deadline.
    fn handle_pods(
        &self,
        store: &dyn Datastore,
        node: &Value,
        node_name: &str,
        now: Timestamp,
    ) -> Result<Option<Duration>, StoreError> {
        let state = readiness(node);
        let taints: Vec<&Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute"))
                    .collect()
            })
            .unwrap_or_default();
        let not_ready = matches!(state, Readiness::NotReady | Readiness::Unknown);
        if taints.is_empty() && !not_ready {
            return Ok(None);
        }
        let (pods, _) = store.list(Resource::Pods, None)?;
        let mut next: Option<Duration> = None;
        for pod in pods
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node_name))
        {
            let (Some(ns), Some(name), Some(pod_uid)) = (
                pod.pointer("/metadata/namespace").and_then(Value::as_str),
                pod.pointer("/metadata/name").and_then(Value::as_str),
                uid(pod),
            ) else {
                continue;
            };
            let key = Key::namespaced(Resource::Pods, ns, name);
            if is_terminating(pod) {
                if state == Readiness::Unknown
                    && let Some(at) = time_at(pod, "/metadata/deletionTimestamp")
                {
                    if at <= now {
                        match store.delete(&key, resource_version(pod)) {
                            Ok(_) | Err(StoreError::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    } else {
                        next = earliest(next, until(now, at));
                    }
                }
                continue;
            }
            if not_ready && !pod_terminal(pod) && pod_ready(pod) {
                self.mark_not_ready(store, &key, pod_uid, now)?;
            }
            let Some(at) = eviction_deadline(pod, &taints, self.grace, now) else {
                continue;
            };
            if at > now {
                next = earliest(next, until(now, at));
                continue;
            }
            tracing::info!(pod = %format!("{ns}/{name}"), node = node_name, "evicting pod from tainted node");
            delete_object(store, &key, Some(pod_uid), Propagation::Background, now)?;
            if state == Readiness::Unknown
                && let Ok(p) = store.get(&key)
                && uid(&p) == Some(pod_uid)
                && let Some(at) = time_at(&p, "/metadata/deletionTimestamp")
            {
                next = earliest(next, until(now, at));
            }
        }
        Ok(next)
    }
}

impl Controller for NodeLifecycleController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::Nodes, Resource::Pods]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        match event.key.resource {
            Resource::Nodes => vec![event.key.clone()],
            Resource::Pods => {
                let Some(node) = event
                    .object
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                else {
                    return Vec::new();
                };
                let key = Key::cluster(Resource::Nodes, node);
                let Ok(n) = store.get(&key) else {
                    return Vec::new();
                };
                let has_no_execute = n
                    .pointer("/spec/taints")
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter()
                            .any(|t| t.get("effect").and_then(Value::as_str) == Some("NoExecute"))
                    });
                let unready = matches!(readiness(&n), Readiness::NotReady | Readiness::Unknown);
                if has_no_execute || unready {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        let all = Key::cluster(Resource::Nodes, "*");
        let (items, _) = store
            .list(Resource::Nodes, None)
            .map_err(|e| store_err(NAME, &all, e))?;
        let names: BTreeSet<&str> = items
            .iter()
            .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        Ok(names
            .into_iter()
            .map(|n| Key::cluster(Resource::Nodes, n))
            .collect())
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let err = |e| store_err(NAME, key, e);
        let mut node = match store.get(key) {
            Ok(n) => n,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        if let Some(taints) = desired_taints(&node, now) {
            let rv = resource_version(&node);
            let mut next = node.clone();
            next["spec"]["taints"] = Value::Array(taints);
            if next["spec"]["taints"].as_array().is_some_and(Vec::is_empty)
                && let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.remove("taints");
            }
            node = store.update(key, next, rv).map_err(err)?;
        }
        self.handle_pods(store, &node, &key.name, now).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn node(status: Option<&str>, taints: Value) -> Value {
        let conds = status.map_or(json!([]), |s| json!([{"type": "Ready", "status": s}]));
        json!({"metadata": {"name": "n"}, "spec": {"taints": taints}, "status": {"conditions": conds}})
    }

    #[test]
    fn taints_follow_ready() {
        let n = node(
            Some("Unknown"),
            json!([{"key": "user", "effect": "NoSchedule"}]),
        );
        let ts = desired_taints(&n, t(0)).unwrap();
        assert_eq!(ts.len(), 3);
        assert!(
            ts.iter()
                .any(|x| x["key"] == TAINT_UNREACHABLE && x["effect"] == "NoExecute")
        );
        let n = node(Some("Unknown"), Value::Array(ts.clone()));
        assert_eq!(desired_taints(&n, t(5)), None, "stable, timeAdded kept");
        let n = node(Some("False"), Value::Array(ts.clone()));
        let ts2 = desired_taints(&n, t(5)).unwrap();
        assert!(ts2.iter().all(|x| x["key"] != TAINT_UNREACHABLE));
        assert_eq!(
            ts2.iter().filter(|x| x["key"] == TAINT_NOT_READY).count(),
            2
        );
        let n = node(Some("True"), Value::Array(ts));
        assert_eq!(
            desired_taints(&n, t(5)).unwrap(),
            vec![json!({"key": "user", "effect": "NoSchedule"})]
        );
        assert_eq!(desired_taints(&node(None, json!([])), t(0)), None);
    }

    #[test]
    fn toleration_matching() {
        let taint = json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute"});
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(tolerates(
            &json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": "x", "operator": "Exists"}),
            &taint
        ));
        assert!(tolerates(
            &json!({"key": "k", "value": "v"}),
            &json!({"key": "k", "value": "v", "effect": "NoExecute"})
        ));
        assert!(!tolerates(
            &json!({"key": "k", "value": "w"}),
            &json!({"key": "k", "value": "v", "effect": "NoExecute"})
        ));
    }

    #[test]
    fn deadlines() {
        let taint =
            json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": time_value(t(0))});
        let grace = Duration::from_secs(5);
        let d = |pod: Value| eviction_deadline(&pod, &[&taint], grace, t(1));
        assert_eq!(d(json!({})), Some(t(5)));
        let tol = |secs: Value| {
            json!({"spec": {"tolerations": [
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}]}})
        };
        assert_eq!(d(tol(json!(30))), Some(t(30)));
        assert_eq!(d(tol(Value::Null)), None);
        assert_eq!(
            d(
                json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet", "controller": true}]}})
            ),
            None
        );
        let other =
            json!({"key": "dedicated", "effect": "NoExecute", "timeAdded": time_value(t(0))});
        assert_eq!(
            eviction_deadline(&json!({}), &[&other], grace, t(1)),
            Some(t(0))
        );
    }
}
