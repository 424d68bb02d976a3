//! Container environment, as the kubelet builds it.
//!
//! [`container_env`] follows `makeEnvironmentVariables`: `envFrom` sources
//! first (keys in sorted order, prefixed, keys that are not valid variable
//! names skipped), then `env` in order, each literal value `$(VAR)`-expanded
//! against what came before. A later variable of the same name replaces the
//! earlier one in place. A missing ConfigMap/Secret or key that is not
//! `optional` is an [`EnvError`] whose message is the kubelet's (the worker
//! reports it as `CreateContainerConfigError`).
//!
//! [`expand`] is apimachinery's `expansion.Expand`: `$$` is a literal `$`,
//! `$(NAME)` is replaced when `NAME` is known and kept literally otherwise.
//!
//! Not done: Service link variables (there are no Services yet).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};

use crate::api::{Resource, quantity};
use crate::store::{Datastore, Key, StoreError};

/// Where ConfigMaps and Secrets come from (the store, or a test's map).
pub trait ObjectSource {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String>;
}

fn get_decoded<T: serde::de::DeserializeOwned>(
    store: &dyn Datastore,
    resource: Resource,
    ns: &str,
    name: &str,
) -> Result<Option<T>, String> {
    match store.get(&Key::namespaced(resource, ns, name)) {
        Ok(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("{} {ns}/{name}: {e}", resource.kind())),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl ObjectSource for dyn Datastore {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        get_decoded(self, Resource::ConfigMaps, ns, name)
    }
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        get_decoded(self, Resource::Secrets, ns, name)
    }
}

/// Any concrete store (`&LocalStore` coerces to `&dyn ObjectSource`).
impl<T: Datastore> ObjectSource for T {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        get_decoded(self, Resource::ConfigMaps, ns, name)
    }
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        get_decoded(self, Resource::Secrets, ns, name)
    }
}

/// A `&dyn Datastore` as an [`ObjectSource`] (a `&dyn Datastore` cannot
/// coerce to `&dyn ObjectSource` itself): `&StoreObjects(&*arc)`.
#[derive(Debug, Clone, Copy)]
pub struct StoreObjects<'a>(pub &'a dyn Datastore);

impl ObjectSource for StoreObjects<'_> {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        get_decoded(self.0, Resource::ConfigMaps, ns, name)
    }
    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        get_decoded(self.0, Resource::Secrets, ns, name)
    }
}

/// What the environment needs beyond the pod itself.
pub struct EnvContext<'a> {
    pub objects: &'a dyn ObjectSource,
    pub node_name: &'a str,
    pub pod_ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    /// Node allocatable CPU: the value of `limits.cpu` when unset.
    pub node_cpu_millis: u64,
    /// Node allocatable memory: the value of `limits.memory` when unset.
    pub node_memory_bytes: u64,
}

impl std::fmt::Debug for EnvContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvContext")
            .field("node_name", &self.node_name)
            .field("pod_ip", &self.pod_ip)
            .field("host_ip", &self.host_ip)
            .finish_non_exhaustive()
    }
}

/// Why a container's environment could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { namespace: String, name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource: {0}")]
    Resource(String),
    #[error("container {container} of resourceFieldRef not found in pod")]
    NoContainer { container: String },
    #[error("invalid quantity {value:?} for {what}: {reason}")]
    Quantity {
        what: String,
        value: String,
        reason: quantity::QuantityError,
    },
    #[error("reading {kind} {namespace}/{name}: {reason}")]
    Source {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("env var {name}: valueFrom names no source")]
    EmptySource { name: String },
}

/// `expansion.Expand` with a lookup in `vars`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(end) => {
                        let name = &rest[1..end];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        end + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$` followed by any other character: both kept.
                    let ch_len = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..ch_len]);
                    ch_len
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// Expands against an ordered environment (the last value of a name wins).
pub fn expand_env(input: &str, env: &[(String, String)]) -> String {
    expand(input, |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

/// `validation.IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || "-._".contains(c) => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

/// A Secret's data as strings, `stringData` over `data`.
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        m.insert(k.clone(), v.clone().into_bytes());
    }
    m
}

/// A ConfigMap's `data` and `binaryData`.
pub fn config_map_data(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = c
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in c.data.iter().flatten() {
        m.insert(k.clone(), v.clone().into_bytes());
    }
    m
}

fn get_config_map(ctx: &EnvContext, ns: &str, name: &str) -> Result<Option<ConfigMap>, EnvError> {
    ctx.objects
        .config_map(ns, name)
        .map_err(|reason| EnvError::Source {
            kind: "configmap",
            namespace: ns.to_string(),
            name: name.to_string(),
            reason,
        })
}

fn get_secret(ctx: &EnvContext, ns: &str, name: &str) -> Result<Option<Secret>, EnvError> {
    ctx.objects
        .secret(ns, name)
        .map_err(|reason| EnvError::Source {
            kind: "secret",
            namespace: ns.to_string(),
            name: name.to_string(),
            reason,
        })
}

/// The container's environment, in the kubelet's order.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    ctx: &EnvContext,
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let data = if let Some(r) = &from.config_map_ref {
            match get_config_map(ctx, ns, &r.name)? {
                Some(cm) => config_map_data(&cm),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(EnvError::ConfigMapNotFound {
                        namespace: ns.to_string(),
                        name: r.name.clone(),
                    });
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match get_secret(ctx, ns, &r.name)? {
                Some(s) => secret_data(&s),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(EnvError::SecretNotFound {
                        namespace: ns.to_string(),
                        name: r.name.clone(),
                    });
                }
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if !is_env_var_name(&name) {
                tracing::debug!(var = %name, "skipping invalid environment variable name");
                continue;
            }
            set(&mut env, name, String::from_utf8_lossy(&v).into_owned());
        }
    }
    for var in c.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand_env(var.value.as_deref().unwrap_or(""), &env),
            Some(src) => {
                if let Some(r) = &src.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    let cm = match get_config_map(ctx, ns, &r.name)? {
                        Some(cm) => cm,
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapNotFound {
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                            });
                        }
                    };
                    match config_map_data(&cm).remove(&r.key) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKey {
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    }
                } else if let Some(r) = &src.secret_key_ref {
                    let optional = r.optional == Some(true);
                    let s = match get_secret(ctx, ns, &r.name)? {
                        Some(s) => s,
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretNotFound {
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                            });
                        }
                    };
                    match secret_data(&s).remove(&r.key) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKey {
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    }
                } else if let Some(f) = &src.field_ref {
                    env_field(pod, f, ctx)?
                } else if let Some(r) = &src.resource_field_ref {
                    resource_field(pod, Some(c), r, ctx.node_cpu_millis, ctx.node_memory_bytes)?
                } else {
                    return Err(EnvError::EmptySource {
                        name: var.name.clone(),
                    });
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `key` of `metadata.labels['key']`-style paths.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(field)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// A `fieldRef` valid both for env and downward API volumes.
pub fn metadata_field(pod: &Pod, f: &ObjectFieldSelector) -> Result<Option<String>, EnvError> {
    let m = &pod.metadata;
    let path = f.field_path.as_str();
    if let Some(k) = subscript(path, "metadata.labels") {
        return Ok(Some(
            m.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default(),
        ));
    }
    if let Some(k) = subscript(path, "metadata.annotations") {
        return Ok(Some(
            m.annotations
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default(),
        ));
    }
    Ok(match path {
        "metadata.name" => Some(m.name.clone().unwrap_or_default()),
        "metadata.namespace" => Some(m.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Some(m.uid.clone().unwrap_or_default()),
        _ => None,
    })
}

fn env_field(pod: &Pod, f: &ObjectFieldSelector, ctx: &EnvContext) -> Result<String, EnvError> {
    if let Some(v) = metadata_field(pod, f)? {
        return Ok(v);
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let pod_ips = || -> Vec<String> {
        let from_status: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.clone())
            .collect();
        if !from_status.is_empty() {
            from_status
        } else {
            ctx.pod_ip
                .map(|i| i.to_string())
                .or_else(|| status.and_then(|s| s.pod_ip.clone()))
                .into_iter()
                .collect()
        }
    };
    let host_ip = || {
        ctx.host_ip
            .map(|i| i.to_string())
            .or_else(|| status.and_then(|s| s.host_ip.clone()))
            .unwrap_or_default()
    };
    Ok(match f.field_path.as_str() {
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node_name.to_string()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => ctx
            .pod_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| pod_ips().into_iter().next().unwrap_or_default()),
        "status.podIPs" => pod_ips().join(","),
        "status.hostIP" => host_ip(),
        "status.hostIPs" => {
            let ips: Vec<String> = status
                .and_then(|s| s.host_ips.as_ref())
                .into_iter()
                .flatten()
                .map(|p| p.ip.clone())
                .collect();
            if ips.is_empty() {
                host_ip()
            } else {
                ips.join(",")
            }
        }
        other => return Err(EnvError::FieldPath(other.to_string())),
    })
}

/// `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) with its
/// divisor, rounded up as the kubelet does; unset limits are the node's.
/// `c` is the referring container, used when `containerName` is empty.
pub fn resource_field(
    pod: &Pod,
    c: Option<&Container>,
    r: &ResourceFieldSelector,
    node_cpu_millis: u64,
    node_memory_bytes: u64,
) -> Result<String, EnvError> {
    let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|x| x.name == name)
            .ok_or_else(|| EnvError::NoContainer {
                container: name.to_string(),
            })?,
        None => c.ok_or_else(|| EnvError::NoContainer {
            container: String::new(),
        })?,
    };
    let q = |what: &str, s: &str, cpu: bool| -> Result<i128, EnvError> {
        let p = quantity::parse(s).map_err(|reason| EnvError::Quantity {
            what: what.to_string(),
            value: s.to_string(),
            reason,
        })?;
        Ok(if cpu { p.milli() } else { p.value() })
    };
    let res = target.resources.as_ref();
    let get = |which: &str, key: &str| -> Option<String> {
        let m = match which {
            "limits" => res.and_then(|r| r.limits.as_ref()),
            _ => res.and_then(|r| r.requests.as_ref()),
        };
        m.and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    let (which, key) = r
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError::Resource(r.resource.clone()))?;
    let cpu = match key {
        "cpu" => true,
        "memory" | "ephemeral-storage" => false,
        _ => return Err(EnvError::Resource(r.resource.clone())),
    };
    if which != "limits" && which != "requests" {
        return Err(EnvError::Resource(r.resource.clone()));
    }
    let node = if cpu {
        i128::from(node_cpu_millis)
    } else {
        i128::from(node_memory_bytes)
    };
    let value = match get(which, key) {
        Some(s) => q(&r.resource, &s, cpu)?,
        None if which == "limits" => node,
        // An unset request defaults to the limit (API defaulting), else 0.
        None => match get("limits", key) {
            Some(s) => q(&r.resource, &s, cpu)?,
            None => 0,
        },
    };
    let divisor = match &r.divisor {
        Some(d) => q("divisor", &d.0, cpu)?,
        None if cpu => 1000,
        None => 1,
    };
    let divisor = if divisor <= 0 {
        if cpu { 1000 } else { 1 }
    } else {
        divisor
    };
    let mut out = value / divisor + i128::from(value % divisor != 0);
    // The kubelet reports at least 1 for a CPU value that rounds to 0.
    if cpu && value > 0 && out == 0 {
        out = 1;
    }
    Ok(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub(crate) struct Objects {
        pub cms: HashMap<String, ConfigMap>,
        pub secrets: HashMap<String, Secret>,
    }
    impl ObjectSource for Objects {
        fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok(self.cms.get(name).cloned())
        }
        fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, String> {
            Ok(self.secrets.get(name).cloned())
        }
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn ctx(o: &Objects) -> EnvContext<'_> {
        EnvContext {
            objects: o,
            node_name: "node1",
            pod_ip: Some("10.1.0.5".parse().unwrap()),
            host_ip: Some("192.168.1.2".parse().unwrap()),
            node_cpu_millis: 2000,
            node_memory_bytes: 4 << 30,
        }
    }

    #[test]
    fn expansion_follows_kubelet_rules() {
        let env = vec![
            ("A".to_string(), "x".to_string()),
            ("B".to_string(), "y".to_string()),
        ];
        let cases = [
            ("$(A)", "x"),
            ("pre-$(A)-$(B)", "pre-x-y"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$x"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("trailing$", "trailing$"),
            ("$", "$"),
            ("", ""),
            ("é$(A)é", "éxé"),
            ("$é", "$é"),
            ("$()", "$()"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_env(input, &env), want, "{input}");
        }
    }

    #[test]
    fn env_order_refs_and_expansion() {
        let mut o = Objects::default();
        o.cms.insert(
            "cm".into(),
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "cm"},
                "data": {"K": "v1", "bad key": "skip", "other": "o"}
            }))
            .unwrap(),
        );
        o.secrets.insert(
            "s".into(),
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s"}, "data": {"pw": "aHVudGVyMg=="}
            }))
            .unwrap(),
        );
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "c", "image": "i",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"},
                            {"configMapRef": {"name": "gone", "optional": true}}],
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-$(P_K)-$(NOPE)"},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "CMK", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "K"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "x", "optional": true}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "CPUREQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "A", "value": "again"}
                ]
            }]}
        }));
        let env = container_env(&p, &p.spec.as_ref().unwrap().containers[0], &ctx(&o)).unwrap();
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("P_K", "v1"),
                ("P_other", "o"),
                ("A", "again"),
                ("B", "a-v1-$(NOPE)"),
                ("PW", "hunter2"),
                ("CMK", "v1"),
                ("NAME", "web"),
                ("NS", "ns1"),
                ("UID", "u-1"),
                ("APP", "web"),
                ("NODE", "node1"),
                ("IP", "10.1.0.5"),
                ("HOST", "192.168.1.2"),
                ("MEM", "64"),
                ("CPU", "2"),
                ("CPUREQ", "250"),
            ]
        );
    }

    #[test]
    fn missing_sources_name_what_is_missing() {
        let o = Objects::default();
        let cases = [
            (
                serde_json::json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}),
                "configmap \"cm\" not found",
            ),
            (
                serde_json::json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
                "secret \"s\" not found",
            ),
            (
                serde_json::json!({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}),
                "unsupported fieldPath: spec.bogus",
            ),
        ];
        for (var, want) in cases {
            let p = pod(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": {"containers": [{"name": "c", "env": [var]}]}
            }));
            let e =
                container_env(&p, &p.spec.as_ref().unwrap().containers[0], &ctx(&o)).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let mut o = Objects::default();
        o.cms.insert(
            "cm".into(),
            serde_json::from_value(serde_json::json!({"metadata": {"name": "cm"}})).unwrap(),
        );
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]}
        }));
        let e = container_env(&p, &p.spec.as_ref().unwrap().containers[0], &ctx(&o)).unwrap_err();
        assert_eq!(e.to_string(), "couldn't find key k in ConfigMap ns/cm");
    }

    #[test]
    fn env_var_names() {
        for ok in ["A", "a_b", ".x", "-y", "A1"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1A", "a b", "a=b"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }
}
