//! The Endpoints controller: for every Service with a selector, an
//! Endpoints object of the same name listing the selected pods, as
//! kube-controller-manager's endpoints controller does.
//!
//! Guarantees:
//! - A selected pod with an IP, not in a terminal phase and not
//!   terminating is listed in `addresses` when its `Ready` condition is
//!   True, else in `notReadyAddresses` (`publishNotReadyAddresses`: all in
//!   `addresses`, terminating ones included), with `nodeName` and a
//!   `targetRef` to the pod.
//! - Ports come from the Service's `targetPort`: a number, or a container
//!   port's name (matched with the protocol); a pod without that named port
//!   is left out of that port. Pods resolving to the same ports share one
//!   subset; addresses and subsets are sorted, so the same inputs always
//!   give the same object.
//! - Written only when subsets or labels differ from what is stored: an
//!   unchanged service or pod never bumps the resourceVersion.
//! - A Service without a selector is left alone (its Endpoints are the
//!   user's); a deleted Service's Endpoints are deleted.
//! - A pod event reconciles only the services of its namespace that select
//!   it now or listed it last time ([`Membership`]): relabelled pods leave
//!   the services they no longer match.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::gc::{is_terminating, time_value, uid};
use super::selectors::{labels, map_matches, service_selector};
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::api::defaults::new_uid;
use crate::store::{Datastore, EventType, Key, StoreError, WatchEvent, resource_version};

const NAME: &str = "endpoints";
/// Label put on the endpoints of a headless service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

pub(crate) fn store_err(
    controller: &'static str,
    key: &Key,
    source: StoreError,
) -> ControllerError {
    ControllerError::Store {
        controller,
        key: super::runner::key_label(key),
        source,
    }
}

/// Which pods each service listed last time (by name), so that a pod that
/// stops matching still wakes the services that listed it.
#[derive(Debug, Default)]
pub struct Membership {
    members: Mutex<HashMap<Key, BTreeSet<String>>>,
}

impl Membership {
    pub fn set(&self, service: &Key, pods: BTreeSet<String>) {
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if pods.is_empty() {
            m.remove(service);
        } else {
            m.insert(service.clone(), pods);
        }
    }

    fn listed(&self, service: &Key, pod: &str) -> bool {
        let m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        m.get(service).is_some_and(|s| s.contains(pod))
    }

    /// The services (keys) a pod event concerns.
    pub fn services_for_pod(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        let Some(ns) = event.key.namespace.as_deref() else {
            return Vec::new();
        };
        let services = match store.list(Resource::Services, Some(ns)) {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(namespace = ns, "endpoints: list services: {e}");
                return Vec::new();
            }
        };
        let pod_labels = labels(&event.object);
        services
            .iter()
            .filter_map(|s| {
                let name = s.pointer("/metadata/name")?.as_str()?;
                let key = Key::namespaced(Resource::Services, ns, name);
                let selects = service_selector(s).is_some_and(|sel| map_matches(sel, pod_labels));
                (selects || self.listed(&key, &event.key.name)).then_some(key)
            })
            .collect()
    }
}

/// The pod's `Ready` condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

pub fn pod_ip(pod: &Value) -> Option<&str> {
    pod.pointer("/status/podIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn protocol(port: &Value) -> &str {
    port.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
}

/// The pod port a service port's `targetPort` names (`None`: the pod has
/// no container port of that name and protocol).
pub fn resolve_target_port(service_port: &Value, pod: &Value) -> Option<i64> {
    let port = service_port.get("port").and_then(Value::as_i64)?;
    match service_port.get("targetPort") {
        None | Some(Value::Null) => Some(port),
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n > 0).or(Some(port)),
        Some(Value::String(s)) => {
            if let Ok(n) = s.parse::<i64>() {
                return Some(n);
            }
            let proto = protocol(service_port);
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(|c| c.get("ports").and_then(Value::as_array))
                .flatten()
                .find(|p| {
                    p.get("name").and_then(Value::as_str) == Some(s.as_str())
                        && protocol(p) == proto
                })
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        Some(_) => None,
    }
}

/// The endpoint ports of one pod for a service, sorted.
pub fn endpoint_ports(service: &Value, pod: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|sp| {
            let port = resolve_target_port(sp, pod)?;
            let mut p = Map::new();
            if let Some(n) = sp
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                p.insert("name".into(), json!(n));
            }
            p.insert("port".into(), json!(port));
            p.insert("protocol".into(), json!(protocol(sp)));
            if let Some(a) = sp.get("appProtocol").and_then(Value::as_str) {
                p.insert("appProtocol".into(), json!(a));
            }
            Some(Value::Object(p))
        })
        .collect();
    out.sort_by_key(|p| p.to_string());
    out
}

pub fn target_ref(pod: &Value) -> Value {
    let m = |p: &str| pod.pointer(p).cloned().unwrap_or(Value::Null);
    json!({"kind": "Pod", "namespace": m("/metadata/namespace"),
           "name": m("/metadata/name"), "uid": m("/metadata/uid")})
}

/// Labels of a service's endpoints: the service's, plus the headless mark.
pub fn endpoint_labels(service: &Value) -> Map<String, Value> {
    let mut l = labels(service).cloned().unwrap_or_default();
    if service.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
        l.insert(HEADLESS_LABEL.into(), json!(""));
    } else {
        l.remove(HEADLESS_LABEL);
    }
    l
}

/// The selected pods a service's endpoints consider (any readiness).
pub fn selected_pods<'a>(service: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let Some(sel) = service_selector(service) else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| map_matches(sel, labels(p)))
        .collect()
}

/// The `subsets` of a service's Endpoints.
pub fn desired_subsets(service: &Value, pods: &[&Value]) -> Vec<Value> {
    let publish = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let svc_name = service.pointer("/metadata/name").and_then(Value::as_str);
    type Group = (Vec<Value>, BTreeMap<String, Value>, BTreeMap<String, Value>);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let has_ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    for pod in pods {
        let Some(ip) = pod_ip(pod) else { continue };
        if pod_terminal(pod) || (is_terminating(pod) && !publish) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        if has_ports && ports.is_empty() {
            continue;
        }
        let mut addr = Map::new();
        addr.insert("ip".into(), json!(ip));
        if let Some(h) = pod.pointer("/spec/hostname").and_then(Value::as_str)
            && pod.pointer("/spec/subdomain").and_then(Value::as_str) == svc_name
        {
            addr.insert("hostname".into(), json!(h));
        }
        if let Some(n) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            addr.insert("nodeName".into(), json!(n));
        }
        addr.insert("targetRef".into(), target_ref(pod));
        let g = groups
            .entry(Value::Array(ports.clone()).to_string())
            .or_insert_with(|| (ports, BTreeMap::new(), BTreeMap::new()));
        let sort_key = format!("{ip}/{}", uid(pod).unwrap_or_default());
        if publish || pod_ready(pod) {
            g.1.insert(sort_key, Value::Object(addr));
        } else {
            g.2.insert(sort_key, Value::Object(addr));
        }
    }
    groups
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut s = Map::new();
            if !ready.is_empty() {
                s.insert(
                    "addresses".into(),
                    Value::Array(ready.into_values().collect()),
                );
            }
            if !not_ready.is_empty() {
                s.insert(
                    "notReadyAddresses".into(),
                    Value::Array(not_ready.into_values().collect()),
                );
            }
            if !ports.is_empty() {
                s.insert("ports".into(), Value::Array(ports));
            }
            Value::Object(s)
        })
        .collect()
}

/// The Endpoints controller.
#[derive(Debug, Default)]
pub struct EndpointsController {
    membership: Membership,
}

impl EndpointsController {
    pub fn new() -> EndpointsController {
        EndpointsController::default()
    }
}

fn subsets_of(endpoints: &Value) -> &[Value] {
    endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::Services, Resource::Pods, Resource::Endpoints]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        let k = &event.key;
        match k.resource {
            Resource::Services => vec![k.clone()],
            Resource::Pods => self.membership.services_for_pod(store, event),
            Resource::Endpoints if event.kind == EventType::Deleted => {
                let ns = k.namespace.as_deref().unwrap_or_default();
                vec![Key::namespaced(Resource::Services, ns, &k.name)]
            }
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        let all = Key::cluster(Resource::Services, "*");
        let mut keys = BTreeSet::new();
        for r in [Resource::Services, Resource::Endpoints] {
            let (items, _) = store.list(r, None).map_err(|e| store_err(NAME, &all, e))?;
            for i in items {
                if r == Resource::Endpoints
                    && i.pointer("/metadata/annotations")
                        .and_then(|a| a.get(LEADER_ANNOTATION))
                        .is_some()
                {
                    continue;
                }
                let ns = i.pointer("/metadata/namespace").and_then(Value::as_str);
                let name = i.pointer("/metadata/name").and_then(Value::as_str);
                if let (Some(ns), Some(name)) = (ns, name) {
                    keys.insert(Key::namespaced(Resource::Services, ns, name));
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let err = |e| store_err(NAME, key, e);
        let ns = key.namespace.as_deref().unwrap_or("default");
        let ep_key = Key::namespaced(Resource::Endpoints, ns, &key.name);
        let existing = match store.get(&ep_key) {
            Ok(e) => Some(e),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(err(e)),
        };
        let service = match store.get(key) {
            Ok(s) => s,
            Err(StoreError::NotFound { .. }) => {
                self.membership.set(key, BTreeSet::new());
                if let Some(ep) = existing {
                    match store.delete(&ep_key, resource_version(&ep)) {
                        Ok(_) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(err(e)),
                    }
                }
                return Ok(None);
            }
            Err(e) => return Err(err(e)),
        };
        if service_selector(&service).is_none() {
            self.membership.set(key, BTreeSet::new());
            return Ok(None);
        }
        let (pods, _) = store.list(Resource::Pods, Some(ns)).map_err(err)?;
        let selected = selected_pods(&service, &pods);
        self.membership.set(
            key,
            selected
                .iter()
                .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
        );
        let subsets = desired_subsets(&service, &selected);
        let ep_labels = endpoint_labels(&service);
        let next = match existing {
            Some(cur) => {
                let same_labels = labels(&cur).cloned().unwrap_or_default() == ep_labels;
                if same_labels && subsets_of(&cur) == subsets.as_slice() {
                    return Ok(None);
                }
                let rv = resource_version(&cur);
                let mut next = cur;
                if let Some(o) = next.as_object_mut() {
                    if subsets.is_empty() {
                        o.remove("subsets");
                    } else {
                        o.insert("subsets".into(), Value::Array(subsets));
                    }
                }
                if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("labels".into(), Value::Object(ep_labels));
                }
                store.update(&ep_key, next, rv).map_err(err)?;
                return Ok(None);
            }
            None => {
                let mut o = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": key.name, "namespace": ns, "labels": ep_labels,
                                 "uid": new_uid(), "creationTimestamp": time_value(now)}});
                if !subsets.is_empty() {
                    o["subsets"] = Value::Array(subsets);
                }
                o
            }
        };
        match store.create(&ep_key, next) {
            Ok(_) => Ok(None),
            // Created meanwhile: the next event reconciles again.
            Err(StoreError::AlreadyExists { .. }) => Ok(Some(Duration::ZERO)),
            Err(e) => Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_ports_resolve_by_number_and_name() {
        let pod = json!({"spec": {"containers": [{"ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]}});
        let p = |sp: Value| resolve_target_port(&sp, &pod);
        assert_eq!(p(json!({"port": 80})), Some(80));
        assert_eq!(p(json!({"port": 80, "targetPort": 9000})), Some(9000));
        assert_eq!(p(json!({"port": 80, "targetPort": "9001"})), Some(9001));
        assert_eq!(p(json!({"port": 80, "targetPort": "http"})), Some(8080));
        assert_eq!(p(json!({"port": 53, "targetPort": "dns"})), None);
        assert_eq!(
            p(json!({"port": 53, "protocol": "UDP", "targetPort": "dns"})),
            Some(5353)
        );
        assert_eq!(p(json!({"port": 80, "targetPort": "nope"})), None);
        assert_eq!(p(json!({"targetPort": 1})), None);
    }

    #[test]
    fn subsets_split_ready_and_group_by_ports() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"},
            "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}});
        let pod = |name: &str, ip: &str, ready: bool, port: i64| {
            json!({"metadata": {"name": name, "namespace": "d", "uid": name},
                "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "http", "containerPort": port}]}]},
                "status": {"podIP": ip, "phase": "Running", "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
        };
        let pods = [
            pod("a", "10.0.0.2", true, 8080),
            pod("b", "10.0.0.1", false, 8080),
            pod("c", "10.0.0.3", true, 9090),
        ];
        let refs: Vec<&Value> = pods.iter().collect();
        let s = desired_subsets(&svc, &refs);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["ports"][0]["port"], 8080);
        assert_eq!(s[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(s[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(s[0]["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(s[1]["addresses"][0]["ip"], "10.0.0.3");
        assert_eq!(s[1]["ports"][0]["port"], 9090);
        let mut headless = svc.clone();
        headless["spec"]["clusterIP"] = json!("None");
        assert!(endpoint_labels(&headless).contains_key(HEADLESS_LABEL));
    }
}
