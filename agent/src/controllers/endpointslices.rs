//! The EndpointSlice controller (discovery.k8s.io/v1): the same pods as
//! [`super::endpoints`], split into slices, as kube-controller-manager's
//! endpointslice controller does.
//!
//! Guarantees:
//! - Slices of a service carry `kubernetes.io/service-name: <service>` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//!   (only slices with both are touched), an owner reference to the service
//!   (so the garbage collector removes them too), `addressType: IPv4`.
//! - One endpoint per selected pod with an IPv4 address that is not in a
//!   terminal phase: `conditions.serving` = pod Ready, `terminating` = has a
//!   deletionTimestamp, `ready` = serving and not terminating
//!   (`publishNotReadyAddresses`: ready and serving always), with `nodeName`
//!   and `targetRef`.
//! - Pods resolving to the same ports share slices; at most
//!   [`MAX_ENDPOINTS_PER_SLICE`] endpoints per slice (configurable).
//! - Churn is minimal: an endpoint stays in the slice it is in, changes are
//!   written in place, new endpoints fill slices with room before a new slice
//!   is created, emptied slices are deleted, and a slice whose content is
//!   unchanged is never written. A service with no endpoints keeps one empty
//!   placeholder slice, as Kubernetes does.
//! - A service without a selector is left alone; a deleted service's slices
//!   are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::endpoints::{
    Membership, endpoint_labels, endpoint_ports, pod_ip, pod_ready, pod_terminal, selected_pods,
    store_err, target_ref,
};
use super::gc::{is_terminating, time_value, uid};
use super::selectors::{labels, service_selector};
use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::api::defaults::new_uid;
use crate::store::{Datastore, EventType, Key, StoreError, WatchEvent, resource_version};

const NAME: &str = "endpointslice";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The EndpointSlice controller.
#[derive(Debug)]
pub struct EndpointSliceController {
    membership: Membership,
    max_per_slice: usize,
}

impl Default for EndpointSliceController {
    fn default() -> Self {
        EndpointSliceController::new(MAX_ENDPOINTS_PER_SLICE)
    }
}

/// Desired endpoints of one port set, by pod uid (or address).
type Group = (Vec<Value>, BTreeMap<String, Value>);

fn endpoint_key(ep: &Value) -> String {
    ep.pointer("/targetRef/uid")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ep.pointer("/addresses/0").map(Value::to_string))
        .unwrap_or_default()
}

fn ports_key(slice: &Value) -> String {
    slice
        .get("ports")
        .cloned()
        .unwrap_or_else(|| json!([]))
        .to_string()
}

fn managed_by(slice: &Value, service: &str) -> bool {
    let l = labels(slice);
    let get = |k: &str| l.and_then(|l| l.get(k)).and_then(Value::as_str);
    get(SERVICE_NAME_LABEL) == Some(service) && get(MANAGED_BY_LABEL) == Some(MANAGED_BY)
}

/// Every desired endpoint of a service, grouped by port set.
pub fn desired_endpoints(service: &Value, pods: &[&Value]) -> BTreeMap<String, Group> {
    let publish = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let has_ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let svc_name = service.pointer("/metadata/name").and_then(Value::as_str);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod_ip(pod).filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) else {
            continue;
        };
        if pod_terminal(pod) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        if has_ports && ports.is_empty() {
            continue;
        }
        let terminating = is_terminating(pod);
        let serving = publish || pod_ready(pod);
        let ready = publish || (serving && !terminating);
        let mut ep = Map::new();
        ep.insert("addresses".into(), json!([ip]));
        ep.insert(
            "conditions".into(),
            json!({"ready": ready, "serving": serving, "terminating": terminating}),
        );
        if let Some(h) = pod.pointer("/spec/hostname").and_then(Value::as_str)
            && pod.pointer("/spec/subdomain").and_then(Value::as_str) == svc_name
        {
            ep.insert("hostname".into(), json!(h));
        }
        if let Some(n) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            ep.insert("nodeName".into(), json!(n));
        }
        ep.insert("targetRef".into(), target_ref(pod));
        let ep = Value::Object(ep);
        let g = groups
            .entry(Value::Array(ports.clone()).to_string())
            .or_insert_with(|| (ports, BTreeMap::new()));
        g.1.insert(endpoint_key(&ep), ep);
    }
    groups
}

/// One slice as it should be after this reconcile.
#[derive(Debug)]
struct Planned {
    /// The stored slice (None: to create).
    current: Option<Value>,
    ports: Vec<Value>,
    endpoints: Vec<Value>,
}

impl EndpointSliceController {
    pub fn new(max_per_slice: usize) -> EndpointSliceController {
        EndpointSliceController {
            membership: Membership::default(),
            max_per_slice: max_per_slice.max(1),
        }
    }

    /// Keeps endpoints where they are, fills slices with room, then adds
    /// new slices. Returns the slices to keep or create and those to
    /// delete.
    fn plan(
        &self,
        existing: Vec<Value>,
        mut desired: BTreeMap<String, Group>,
    ) -> (Vec<Planned>, Vec<Value>) {
        let mut keep: Vec<Planned> = Vec::new();
        let mut delete = Vec::new();
        for slice in existing {
            let Some((ports, eps)) = desired.get_mut(&ports_key(&slice)) else {
                delete.push(slice);
                continue;
            };
            let endpoints: Vec<Value> = slice
                .get("endpoints")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|e| eps.remove(&endpoint_key(e)))
                .take(self.max_per_slice)
                .collect();
            keep.push(Planned {
                current: Some(slice),
                ports: ports.clone(),
                endpoints,
            });
        }
        for (_, (ports, eps)) in desired {
            let mut rest = eps.into_values();
            for p in keep.iter_mut().filter(|p| p.ports == ports) {
                while p.endpoints.len() < self.max_per_slice {
                    let Some(e) = rest.next() else { break };
                    p.endpoints.push(e);
                }
            }
            let rest: Vec<Value> = rest.collect();
            for chunk in rest.chunks(self.max_per_slice) {
                keep.push(Planned {
                    current: None,
                    ports: ports.clone(),
                    endpoints: chunk.to_vec(),
                });
            }
        }
        let (full, empty): (Vec<Planned>, Vec<Planned>) =
            keep.into_iter().partition(|p| !p.endpoints.is_empty());
        let mut keep = full;
        let mut empty = empty.into_iter().filter_map(|p| p.current);
        if keep.is_empty() {
            // The placeholder: one slice without endpoints or ports.
            let current = empty
                .next()
                .or_else(|| (!delete.is_empty()).then(|| delete.remove(0)));
            keep.push(Planned {
                current,
                ports: Vec::new(),
                endpoints: Vec::new(),
            });
        }
        delete.extend(empty);
        (keep, delete)
    }
}

fn slice_meta(service: &Value) -> (Map<String, Value>, Value) {
    let mut l = endpoint_labels(service);
    let name = service
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    l.insert(SERVICE_NAME_LABEL.into(), name.clone());
    l.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name,
        "uid": uid(service), "controller": true, "blockOwnerDeletion": true}]);
    (l, owner)
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

impl Controller for EndpointSliceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> &'static [Resource] {
        &[Resource::Services, Resource::Pods, Resource::EndpointSlices]
    }

    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key> {
        let k = &event.key;
        match k.resource {
            Resource::Services => vec![k.clone()],
            Resource::Pods => self.membership.services_for_pod(store, event),
            Resource::EndpointSlices if event.kind == EventType::Deleted => {
                let l = labels(&event.object);
                let get = |k: &str| l.and_then(|l| l.get(k)).and_then(Value::as_str);
                match (get(SERVICE_NAME_LABEL), get(MANAGED_BY_LABEL), &k.namespace) {
                    (Some(svc), Some(MANAGED_BY), Some(ns)) => {
                        vec![Key::namespaced(Resource::Services, ns, svc)]
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError> {
        let all = Key::cluster(Resource::Services, "*");
        let (items, _) = store
            .list(Resource::Services, None)
            .map_err(|e| store_err(NAME, &all, e))?;
        let mut keys = BTreeSet::new();
        for i in items {
            let ns = i.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = i.pointer("/metadata/name").and_then(Value::as_str);
            if let (Some(ns), Some(name)) = (ns, name) {
                keys.insert(Key::namespaced(Resource::Services, ns, name));
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
        let (slices, _) = store
            .list(Resource::EndpointSlices, Some(ns))
            .map_err(err)?;
        let existing: Vec<Value> = slices
            .into_iter()
            .filter(|s| managed_by(s, &key.name))
            .collect();
        let service = match store.get(key) {
            Ok(s) => s,
            Err(StoreError::NotFound { .. }) => {
                self.membership.set(key, BTreeSet::new());
                for s in existing {
                    delete_slice(store, ns, &s).map_err(err)?;
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
        let (keep, delete) = self.plan(existing, desired_endpoints(&service, &selected));
        let (slice_labels, owner) = slice_meta(&service);
        for p in keep {
            let ports = Value::Array(p.ports);
            let endpoints = Value::Array(p.endpoints);
            match p.current {
                Some(cur) => {
                    let same = cur.get("endpoints").unwrap_or(&json!([])) == &endpoints
                        && cur.get("ports").unwrap_or(&json!([])) == &ports
                        && labels(&cur) == Some(&slice_labels)
                        && cur.pointer("/metadata/ownerReferences") == Some(&owner);
                    if same {
                        continue;
                    }
                    let name = cur.pointer("/metadata/name").and_then(Value::as_str);
                    let skey = Key::namespaced(Resource::EndpointSlices, ns, name.unwrap_or(""));
                    let rv = resource_version(&cur);
                    let mut next = cur.clone();
                    next["endpoints"] = endpoints;
                    next["ports"] = ports;
                    next["metadata"]["labels"] = Value::Object(slice_labels.clone());
                    next["metadata"]["ownerReferences"] = owner.clone();
                    store.update(&skey, next, rv).map_err(err)?;
                }
                None => {
                    let prefix: String = key.name.chars().take(57).collect();
                    for _ in 0..8 {
                        let name = format!("{prefix}-{}", random_suffix());
                        let skey = Key::namespaced(Resource::EndpointSlices, ns, &name);
                        let obj = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                            "metadata": {"name": name, "namespace": ns, "generateName": format!("{prefix}-"),
                                "labels": slice_labels, "ownerReferences": owner,
                                "uid": new_uid(), "creationTimestamp": time_value(now)},
                            "addressType": "IPv4", "endpoints": endpoints, "ports": ports});
                        match store.create(&skey, obj) {
                            Ok(_) => break,
                            Err(StoreError::AlreadyExists { .. }) => continue,
                            Err(e) => return Err(err(e)),
                        }
                    }
                }
            }
        }
        for s in delete {
            delete_slice(store, ns, &s).map_err(err)?;
        }
        Ok(None)
    }
}

fn delete_slice(store: &dyn Datastore, ns: &str, slice: &Value) -> Result<(), StoreError> {
    let name = slice.pointer("/metadata/name").and_then(Value::as_str);
    let skey = Key::namespaced(Resource::EndpointSlices, ns, name.unwrap_or(""));
    match store.delete(&skey, resource_version(slice)) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(uid: &str) -> Value {
        json!({"addresses": ["10.0.0.1"], "targetRef": {"uid": uid}})
    }

    fn group(uids: &[&str]) -> BTreeMap<String, Group> {
        let eps = uids.iter().map(|u| (u.to_string(), ep(u))).collect();
        BTreeMap::from([(json!([]).to_string(), (Vec::new(), eps))])
    }

    #[test]
    fn plan_keeps_endpoints_in_place_and_fills_before_creating() {
        let c = EndpointSliceController::new(3);
        let s1 = json!({"metadata": {"name": "s1"}, "ports": [], "endpoints": [ep("a"), ep("b")]});
        let s2 = json!({"metadata": {"name": "s2"}, "ports": [], "endpoints": [ep("x")]});
        let (keep, delete) = c.plan(vec![s1, s2], group(&["a", "b", "c", "d", "e"]));
        assert!(delete.is_empty(), "s2 lost x but is refilled, not replaced");
        assert_eq!(keep.len(), 2);
        let uids = |p: &Planned| -> Vec<String> { p.endpoints.iter().map(endpoint_key).collect() };
        assert_eq!(uids(&keep[0]), ["a", "b", "c"]);
        assert_eq!(keep[1].current.as_ref().unwrap()["metadata"]["name"], "s2");
        assert_eq!(uids(&keep[1]), ["d", "e"]);
    }

    #[test]
    fn plan_keeps_one_placeholder() {
        let c = EndpointSliceController::new(100);
        let s1 =
            json!({"metadata": {"name": "s1"}, "ports": [{"port": 1}], "endpoints": [ep("a")]});
        let s2 =
            json!({"metadata": {"name": "s2"}, "ports": [{"port": 1}], "endpoints": [ep("b")]});
        let (keep, delete) = c.plan(vec![s1, s2], BTreeMap::new());
        assert_eq!(keep.len(), 1);
        assert!(keep[0].endpoints.is_empty() && keep[0].ports.is_empty());
        assert_eq!(delete.len(), 1);
        let (keep, delete) = c.plan(Vec::new(), BTreeMap::new());
        assert!(keep[0].current.is_none() && delete.is_empty());
    }
}
