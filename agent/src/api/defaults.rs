//! Defaulting, as the API server does on create (k8s
//! `pkg/apis/core/v1/defaults.go` plus the registry's create hooks).
//!
//! Guarantees: [`apply_defaults`] only fills unset fields, so it is
//! idempotent and never overrides what the user wrote. [`on_create`] sets
//! the system fields (namespace, uid, creationTimestamp, generated name) and
//! a new Pod's status (phase Pending, QoS class). Invalid values (bad
//! quantities, …) are left for validation to report.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, Lifecycle, LifecycleHandler, NamespaceStatus, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodStatus, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::manifest::Object;
use super::quantity;

mod network;
mod workloads;

pub use network::{DEFAULT_AFFINITY_TIMEOUT, service_ip_families};
pub use workloads::{JOB_CONTROLLER_UID, JOB_NAME};

/// `defaultMode` of configMap/secret/projected/downwardAPI volumes (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// Fills the spec defaults the API server fills. Idempotent.
pub fn apply_defaults(obj: &mut Object) {
    match obj {
        Object::Pod(pod) => {
            if let Some(spec) = pod.spec.as_mut() {
                default_pod_spec(spec);
            }
        }
        Object::Secret(s) => {
            if s.type_.as_deref().is_none_or(str::is_empty) {
                s.type_ = Some("Opaque".to_string());
            }
        }
        Object::Deployment(d) => workloads::deployment(d),
        Object::ReplicaSet(r) => workloads::replica_set(r),
        Object::DaemonSet(d) => workloads::daemon_set(d),
        Object::Job(j) => workloads::job(j),
        Object::Service(s) => network::service(s),
        Object::Endpoints(e) => network::endpoints(e),
        Object::EndpointSlice(e) => network::endpoint_slice(e),
        Object::ConfigMap(_)
        | Object::Namespace(_)
        | Object::Node(_)
        | Object::ServiceAccount(_)
        | Object::Lease(_) => {}
    }
}

/// Kinds whose `metadata.generation` the API server maintains (1 on
/// create, +1 on every spec change).
pub fn has_generation(resource: super::Resource) -> bool {
    use super::Resource as R;
    matches!(
        resource,
        R::Pods | R::Deployments | R::ReplicaSets | R::DaemonSets | R::Jobs
    )
}

/// The system fields of a new object, then [`apply_defaults`].
///
/// `namespace` is the request's namespace (from the URL); a namespaced
/// object without one lands in `default`, a cluster-scoped one never has
/// one. A name is generated from `generateName` when `name` is empty.
pub fn on_create(obj: &mut Object, namespace: Option<&str>, now: Timestamp) {
    let namespaced = obj.resource().namespaced();
    let generation = has_generation(obj.resource());
    let meta = obj.meta_mut();
    meta.namespace = if namespaced {
        Some(
            namespace
                .map(str::to_string)
                .or_else(|| meta.namespace.take().filter(|n| !n.is_empty()))
                .unwrap_or_else(|| "default".to_string()),
        )
    } else {
        None
    };
    if meta.name.as_deref().is_none_or(str::is_empty)
        && let Some(prefix) = meta.generate_name.as_deref().filter(|p| !p.is_empty())
    {
        meta.name = Some(format!("{prefix}{}", random_suffix()));
    }
    meta.uid = Some(new_uid());
    meta.creation_timestamp = Some(Time(now));
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.resource_version = None;
    meta.generation = if generation { Some(1) } else { None };
    apply_defaults(obj);
    match obj {
        Object::Pod(pod) => {
            let qos = pod.spec.as_ref().map(qos_class).unwrap_or("BestEffort");
            pod.status = Some(PodStatus {
                phase: Some("Pending".to_string()),
                qos_class: Some(qos.to_string()),
                ..Default::default()
            });
        }
        Object::Namespace(ns) => {
            ns.status = Some(NamespaceStatus {
                phase: Some("Active".to_string()),
                ..Default::default()
            });
        }
        Object::Job(j) => workloads::job_selector(j),
        Object::Service(s) => service_ip_families(s),
        _ => {}
    }
}

/// A random RFC 4122 version 4 UUID, lowercase hex with dashes.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// apimachinery's `utilrand.String(5)`: no vowels, no confusable digits.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Go's zero value means "unset": `None`, `""` and `0` all get defaulted.
trait Unset {
    fn is_unset(&self) -> bool;
}
impl Unset for String {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}
impl Unset for i32 {
    fn is_unset(&self) -> bool {
        *self == 0
    }
}
impl Unset for i64 {
    fn is_unset(&self) -> bool {
        false
    }
}
impl Unset for bool {
    fn is_unset(&self) -> bool {
        false
    }
}
impl Unset for PodSecurityContext {
    fn is_unset(&self) -> bool {
        false
    }
}

fn set<T: Unset>(field: &mut Option<T>, value: T) {
    if field.as_ref().is_none_or(Unset::is_unset) {
        *field = Some(value);
    }
}

fn default_pod_spec(spec: &mut PodSpec) {
    set(&mut spec.restart_policy, "Always".to_string());
    set(&mut spec.termination_grace_period_seconds, 30);
    set(&mut spec.dns_policy, "ClusterFirst".to_string());
    set(&mut spec.scheduler_name, "default-scheduler".to_string());
    set(&mut spec.security_context, PodSecurityContext::default());
    set(&mut spec.enable_service_links, true);
    let host_network = spec.host_network == Some(true);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

/// `Always` for `:latest` or an untagged, undigested image, else
/// `IfNotPresent` (k8s `SetDefaults_Container`).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let image = c.image.as_deref().unwrap_or("");
        c.image_pull_policy = Some(default_pull_policy(image).to_string());
    }
    set(
        &mut c.termination_message_path,
        "/dev/termination-log".to_string(),
    );
    set(&mut c.termination_message_policy, "File".to_string());
    for p in c.ports.iter_mut().flatten() {
        set(&mut p.protocol, "TCP".to_string());
        if host_network && p.host_port.is_none_or(|h| h == 0) {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(Lifecycle {
        post_start,
        pre_stop,
        ..
    }) = c.lifecycle.as_mut()
    {
        for h in [post_start.as_mut(), pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            default_handler(h);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_field_ref(f);
        }
    }
    if let Some(r) = c.resources.as_mut()
        && let Some(limits) = r.limits.as_ref()
        && !limits.is_empty()
    {
        let requests = r.requests.get_or_insert_with(BTreeMap::new);
        for (k, v) in limits {
            requests.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

fn default_field_ref(f: &mut ObjectFieldSelector) {
    if f.api_version.as_deref().is_none_or(str::is_empty) {
        f.api_version = Some("v1".to_string());
    }
}

fn default_http_get(h: &mut HTTPGetAction) {
    set(&mut h.path, "/".to_string());
    set(&mut h.scheme, "HTTP".to_string());
}

fn default_probe(p: &mut Probe) {
    set(&mut p.timeout_seconds, 1);
    set(&mut p.period_seconds, 10);
    set(&mut p.success_threshold, 1);
    set(&mut p.failure_threshold, 3);
    if let Some(h) = p.http_get.as_mut() {
        default_http_get(h);
    }
}

fn default_handler(h: &mut LifecycleHandler) {
    if let Some(g) = h.http_get.as_mut() {
        default_http_get(g);
    }
}

fn default_volume(v: &mut Volume) {
    if let Some(c) = v.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(p) = v.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_MODE);
        for src in p.sources.iter_mut().flatten() {
            if let Some(d) = src.downward_api.as_mut() {
                for item in d.items.iter_mut().flatten() {
                    if let Some(f) = item.field_ref.as_mut() {
                        default_field_ref(f);
                    }
                }
            }
        }
    }
    if let Some(d) = v.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_MODE);
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = item.field_ref.as_mut() {
                default_field_ref(f);
            }
        }
    }
    if let Some(h) = v.host_path.as_mut()
        && h.type_.is_none()
    {
        h.type_ = Some(String::new());
    }
}

fn positive(q: &Quantity) -> Option<i128> {
    quantity::parse(&q.0)
        .ok()
        .map(|p| p.milli())
        .filter(|m| *m > 0)
}

/// The Pod's QoS class (k8s `GetPodQOS`): from cpu and memory requests and
/// limits of every container and init container, after defaulting.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let Some(r) = c.resources.as_ref() else {
            guaranteed = false;
            continue;
        };
        for (k, q) in r.requests.iter().flatten() {
            if let ("cpu" | "memory", Some(m)) = (k.as_str(), positive(q)) {
                *requests.entry(k.as_str()).or_default() += m;
            }
        }
        let mut found = 0;
        for (k, q) in r.limits.iter().flatten() {
            if let ("cpu" | "memory", Some(m)) = (k.as_str(), positive(q)) {
                found += 1;
                *limits.entry(k.as_str()).or_default() += m;
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
        && requests.len() == limits.len()
    {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::manifest::decode;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Object {
        decode(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn pod_defaults_match_api_server() {
        let mut o = pod(
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "busybox",
            "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}],
            "volumes": [{"name": "v", "configMap": {"name": "x"}}, {"name": "h", "hostPath": {"path": "/x"}}]}),
        );
        apply_defaults(&mut o);
        let once = o.clone();
        apply_defaults(&mut o);
        assert_eq!(o, once, "idempotent");
        let v = o.to_value();
        let s = &v["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["ports"][0]["hostPort"], 80);
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        assert_eq!(s["volumes"][0]["configMap"]["defaultMode"], 420);
        assert_eq!(s["volumes"][1]["hostPath"]["type"], "");
    }

    #[test]
    fn pull_policy_by_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("reg:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("reg:5000/b@sha256:ab"), "IfNotPresent");
    }

    #[test]
    fn on_create_sets_system_fields() {
        let mut o = decode(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-"},
            "spec": {"containers": [{"name": "c", "image": "i:1",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}))
        .unwrap();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        on_create(&mut o, None, now);
        let m = o.meta();
        assert_eq!(m.namespace.as_deref(), Some("default"));
        let name = m.name.as_deref().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        let uid = m.uid.as_deref().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_eq!(m.creation_timestamp, Some(Time(now)));
        let Object::Pod(p) = &o else { unreachable!() };
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(st.qos_class.as_deref(), Some("Guaranteed"));

        let mut ns = decode(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}}),
        )
        .unwrap();
        on_create(&mut ns, Some("z"), now);
        assert_eq!(ns.namespace(), None);

        let mut s =
            decode(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}))
                .unwrap();
        on_create(&mut s, Some("team"), now);
        assert_eq!(s.namespace(), Some("team"));
        assert_eq!(s.to_value()["type"], "Opaque");
    }

    #[test]
    fn qos_classes() {
        let q = |spec: serde_json::Value| {
            let Object::Pod(p) = pod(spec) else {
                unreachable!()
            };
            qos_class(p.spec.as_ref().unwrap())
        };
        assert_eq!(
            q(json!({"containers": [{"name": "c", "image": "i"}]})),
            "BestEffort"
        );
        assert_eq!(
            q(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]})
            ),
            "Burstable"
        );
        assert_eq!(
            q(json!({"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "1", "memory": "1"}, "limits": {"cpu": "1", "memory": "1"}}}]})),
            "Guaranteed"
        );
        assert_eq!(
            q(json!({"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "1", "memory": "1"}, "limits": {"cpu": "2", "memory": "1"}}}]})),
            "Burstable"
        );
    }
}
