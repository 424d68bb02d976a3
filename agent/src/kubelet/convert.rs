//! Pod → runtime configs.
//!
//! Translates Kubernetes objects into herd-runtime's CRI-shaped types, with
//! the kubelet's rules:
//! - resources: regular containers and sidecars (init containers with
//!   `restartPolicy: Always`) go to `containers`, plain init containers to
//!   `init_containers`; quantities are parsed exactly, a bad one is an error
//!   naming the container;
//! - DNS: `ClusterFirst`/`ClusterFirstWithHostNet` (there is no cluster
//!   DNS yet) and `Default` use the node's resolv.conf values, `None` only
//!   `spec.dnsConfig`; `dnsConfig` nameservers and searches are appended
//!   without duplicates, options merged by name (the later value wins);
//! - hostname: `spec.hostname` or the pod name, truncated to 63 characters
//!   (`subdomain` is ignored: no cluster DNS);
//! - `/dev/shm` is always 64 MiB (as containerd/CRI-O);
//! - security context: the container's fields override the pod's;
//!   `fsGroup` is added to the supplemental groups;
//! - `command`/`args` are `$(VAR)`-expanded against the container's env.
//!
//! Not done: the termination message file (`terminationMessagePath`) is not
//! mounted; `Localhost` seccomp profiles are passed as written (relative to
//! the runtime's working directory, not a seccomp root).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use herd_runtime::types::{
    ContainerConfig, ContainerResources, DnsConfig, HostAlias, LogLimits, Mount, NamespaceOptions,
    PodSandboxConfig, QosClass, SeccompProfile, SecurityContext,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::env::expand_env;
use crate::api::quantity::{self, QuantityError};

/// The node's defaults for every sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxOptions {
    pub dns_nameservers: Vec<String>,
    pub dns_searches: Vec<String>,
    pub dns_options: Vec<String>,
    pub default_pids_limit: Option<i64>,
}

/// `/dev/shm` size of every pod.
pub const SHM_SIZE_BYTES: u64 = 64 << 20;

/// Longest hostname the kubelet sets.
const HOSTNAME_MAX: usize = 63;

/// Why a pod cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("pod has no spec")]
    NoSpec,
    #[error("container {container}: {field} {value:?}: {reason}")]
    Quantity {
        container: String,
        field: String,
        value: String,
        reason: QuantityError,
    },
    #[error("container {container}: no image")]
    NoImage { container: String },
    #[error("container {container}: {field} {value} is out of range")]
    Id {
        container: String,
        field: &'static str,
        value: i64,
    },
    #[error("hostAliases: invalid ip {0:?}")]
    HostAliasIp(String),
    #[error("unsupported dnsPolicy {0:?}")]
    DnsPolicy(String),
    #[error("container {container}: unsupported seccomp profile type {kind:?}")]
    Seccomp { container: String, kind: String },
}

fn spec(pod: &Pod) -> Result<&PodSpec, ConvertError> {
    pod.spec.as_ref().ok_or(ConvertError::NoSpec)
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Requests and limits of one container.
pub fn container_resources(c: &Container) -> Result<ContainerResources, ConvertError> {
    let res = c.resources.as_ref();
    let get = |limits: bool, key: &str| -> Option<&String> {
        let m = if limits {
            res.and_then(|r| r.limits.as_ref())
        } else {
            res.and_then(|r| r.requests.as_ref())
        };
        m.and_then(|m| m.get(key)).map(|q| &q.0)
    };
    let parse = |limits: bool, key: &str, cpu: bool| -> Result<Option<u64>, ConvertError> {
        let Some(s) = get(limits, key) else {
            return Ok(None);
        };
        let v = if cpu {
            quantity::cpu_millis(s)
        } else {
            quantity::bytes(s)
        };
        v.map(Some).map_err(|reason| ConvertError::Quantity {
            container: c.name.clone(),
            field: format!(
                "resources.{}.{key}",
                if limits { "limits" } else { "requests" }
            ),
            value: s.clone(),
            reason,
        })
    };
    Ok(ContainerResources {
        cpu_request_millis: parse(false, "cpu", true)?,
        cpu_limit_millis: parse(true, "cpu", true)?,
        memory_request_bytes: parse(false, "memory", false)?,
        memory_limit_bytes: parse(true, "memory", false)?,
    })
}

/// Resources of (containers + sidecars, plain init containers).
fn pod_resources(
    spec: &PodSpec,
) -> Result<(Vec<ContainerResources>, Vec<ContainerResources>), ConvertError> {
    let mut containers = Vec::new();
    let mut init = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            containers.push(container_resources(c)?);
        } else {
            init.push(container_resources(c)?);
        }
    }
    for c in &spec.containers {
        containers.push(container_resources(c)?);
    }
    Ok((containers, init))
}

/// The pod's QoS class (containers and init containers; a quantity that
/// does not parse counts as unset: validation rejects such pods earlier).
pub fn qos_class(pod: &Pod) -> QosClass {
    let all: Vec<ContainerResources> = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .map(|c| container_resources(c).unwrap_or_default())
        .collect();
    herd_runtime::cgroups::qos_class(&all)
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

fn option_name(o: &str) -> &str {
    o.split_once(':').map_or(o, |(n, _)| n)
}

fn dns_config(spec: &PodSpec, opts: &SandboxOptions) -> Result<DnsConfig, ConvertError> {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut dns = match policy {
        "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" => DnsConfig {
            nameservers: opts.dns_nameservers.clone(),
            searches: opts.dns_searches.clone(),
            options: opts.dns_options.clone(),
        },
        "None" => DnsConfig::default(),
        other => return Err(ConvertError::DnsPolicy(other.to_string())),
    };
    if let Some(cfg) = &spec.dns_config {
        push_unique(
            &mut dns.nameservers,
            cfg.nameservers.iter().flatten().cloned(),
        );
        push_unique(&mut dns.searches, cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            let rendered = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            match dns.options.iter_mut().find(|x| option_name(x) == name) {
                Some(slot) => *slot = rendered,
                None => dns.options.push(rendered),
            }
        }
    }
    Ok(dns)
}

/// The kubelet's hostname truncation: 63 characters, no trailing `-`/`.`.
fn truncate_hostname(name: &str) -> String {
    if name.len() <= HOSTNAME_MAX {
        return name.to_string();
    }
    let mut end = HOSTNAME_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.']).to_string()
}

/// Everything the runtime needs to create the pod's sandbox.
pub fn sandbox_config(pod: &Pod, opts: &SandboxOptions) -> Result<PodSandboxConfig, ConvertError> {
    let spec = spec(pod)?;
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let hostname = truncate_hostname(spec.hostname.as_deref().unwrap_or(&name));
    let (containers, init_containers) = pod_resources(spec)?;
    let mut host_aliases = Vec::new();
    for a in spec.host_aliases.iter().flatten() {
        let ip: IpAddr =
            a.ip.parse()
                .map_err(|_| ConvertError::HostAliasIp(a.ip.clone()))?;
        host_aliases.push(HostAlias {
            ip,
            hostnames: a.hostnames.clone().unwrap_or_default(),
        });
    }
    let sysctls: BTreeMap<String, String> = spec
        .security_context
        .iter()
        .flat_map(|s| s.sysctls.iter().flatten())
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    Ok(PodSandboxConfig {
        uid: meta.uid.clone().unwrap_or_default(),
        name,
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        hostname,
        namespaces: NamespaceOptions {
            host_network: spec.host_network == Some(true),
            host_pid: spec.host_pid == Some(true),
            host_ipc: spec.host_ipc == Some(true),
            share_process_namespace: spec.share_process_namespace == Some(true),
        },
        containers,
        init_containers,
        pids_limit: opts.default_pids_limit,
        shm_size_bytes: SHM_SIZE_BYTES,
        dns: dns_config(spec, opts)?,
        host_aliases,
        sysctls,
        pod_ip: None,
    })
}

fn id(container: &str, field: &'static str, v: i64) -> Result<u32, ConvertError> {
    u32::try_from(v).map_err(|_| ConvertError::Id {
        container: container.to_string(),
        field,
        value: v,
    })
}

fn security(pod: &Pod, c: &Container) -> Result<SecurityContext, ConvertError> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let name = c.name.as_str();
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
        .map(|v| id(name, "runAsUser", v))
        .transpose()?;
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group))
        .map(|v| id(name, "runAsGroup", v))
        .transpose()?;
    let run_as_non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let mut supplemental_groups = Vec::new();
    for g in psc
        .iter()
        .flat_map(|s| s.supplemental_groups.iter().flatten())
    {
        supplemental_groups.push(id(name, "supplementalGroups", *g)?);
    }
    if let Some(g) = psc.and_then(|s| s.fs_group) {
        let g = id(name, "fsGroup", g)?;
        if !supplemental_groups.contains(&g) {
            supplemental_groups.push(g);
        }
    }
    let profile = csc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(psc.and_then(|s| s.seccomp_profile.as_ref()));
    let seccomp = match profile {
        None => SeccompProfile::RuntimeDefault,
        Some(p) => match p.type_.as_str() {
            "RuntimeDefault" => SeccompProfile::RuntimeDefault,
            "Unconfined" => SeccompProfile::Unconfined,
            "Localhost" => SeccompProfile::Localhost(PathBuf::from(
                p.localhost_profile.clone().unwrap_or_default(),
            )),
            other => {
                return Err(ConvertError::Seccomp {
                    container: name.to_string(),
                    kind: other.to_string(),
                });
            }
        },
    };
    let caps = csc.and_then(|s| s.capabilities.as_ref());
    Ok(SecurityContext {
        run_as_user,
        run_as_group,
        run_as_non_root,
        supplemental_groups,
        privileged: csc.and_then(|s| s.privileged) == Some(true),
        read_only_root_filesystem: csc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        allow_privilege_escalation: csc.and_then(|s| s.allow_privilege_escalation),
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        seccomp,
    })
}

/// Everything the runtime needs to create one container; `env` and
/// `mounts` come from [`super::env::container_env`] and
/// [`super::volumes::container_mounts`].
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
) -> Result<ContainerConfig, ConvertError> {
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ConvertError::NoImage {
            container: c.name.clone(),
        })?;
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| expand_env(s, &env)).collect()
    };
    let command = expand_all(&c.command);
    let args = expand_all(&c.args);
    Ok(ContainerConfig {
        name: c.name.clone(),
        attempt,
        image,
        command,
        args,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        resources: container_resources(c)?,
        security: security(pod, c)?,
        tty: c.tty == Some(true),
        stdin: c.stdin == Some(true),
        log: LogLimits::default(),
        env,
        mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn opts() -> SandboxOptions {
        SandboxOptions {
            dns_nameservers: vec!["192.168.1.1".into()],
            dns_searches: vec!["lan".into()],
            dns_options: vec!["ndots:1".into()],
            default_pids_limit: Some(1024),
        }
    }

    #[test]
    fn sandbox_follows_kubelet_rules() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {
                "hostNetwork": true, "shareProcessNamespace": true,
                "initContainers": [
                    {"name": "init", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
                ],
                "containers": [{"name": "c", "resources": {"requests": {"memory": "64Mi"}}}],
                "dnsConfig": {"nameservers": ["192.168.1.1", "9.9.9.9"], "searches": ["x"],
                              "options": [{"name": "ndots", "value": "5"}, {"name": "edns0"}]},
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a", "b"]}],
                "securityContext": {"sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}]}
            }
        }));
        let s = sandbox_config(&p, &opts()).unwrap();
        assert_eq!(
            (s.uid.as_str(), s.name.as_str(), s.namespace.as_str()),
            ("u1", "web", "ns")
        );
        assert_eq!(s.hostname, "web");
        assert!(s.namespaces.host_network && s.namespaces.share_process_namespace);
        assert!(!s.namespaces.host_pid);
        assert_eq!(s.containers.len(), 2);
        assert_eq!(s.containers[0].cpu_request_millis, Some(100));
        assert_eq!(s.containers[1].memory_request_bytes, Some(64 << 20));
        assert_eq!(s.init_containers.len(), 1);
        assert_eq!(s.init_containers[0].memory_limit_bytes, Some(1 << 30));
        assert_eq!(s.pids_limit, Some(1024));
        assert_eq!(s.shm_size_bytes, 64 << 20);
        assert_eq!(s.dns.nameservers, vec!["192.168.1.1", "9.9.9.9"]);
        assert_eq!(s.dns.searches, vec!["lan", "x"]);
        assert_eq!(s.dns.options, vec!["ndots:5", "edns0"]);
        assert_eq!(s.host_aliases[0].hostnames, vec!["a", "b"]);
        assert_eq!(
            s.sysctls.get("net.ipv4.ip_forward").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn dns_policy_none_uses_only_dns_config() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"hostname": "h", "dnsPolicy": "None", "containers": [{"name": "c"}],
                     "dnsConfig": {"nameservers": ["1.1.1.1"]}}
        }));
        let s = sandbox_config(&p, &opts()).unwrap();
        assert_eq!(s.hostname, "h");
        assert_eq!(s.dns.nameservers, vec!["1.1.1.1"]);
        assert!(s.dns.searches.is_empty() && s.dns.options.is_empty());
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let p = pod(serde_json::json!({"metadata": {"name": long}, "spec": {"containers": []}}));
        assert_eq!(
            sandbox_config(&p, &opts()).unwrap().hostname,
            "a".repeat(62)
        );
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let p = pod(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "lots"}}}]}}));
        let e = sandbox_config(&p, &opts()).unwrap_err();
        assert!(
            matches!(e, ConvertError::Quantity { ref container, .. } if container == "c"),
            "{e}"
        );
        let p = pod(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [], "hostAliases": [{"ip": "nope"}]}}));
        assert_eq!(
            sandbox_config(&p, &opts()).unwrap_err(),
            ConvertError::HostAliasIp("nope".into())
        );
        let p = pod(serde_json::json!({"metadata": {"name": "p"}}));
        assert_eq!(
            sandbox_config(&p, &opts()).unwrap_err(),
            ConvertError::NoSpec
        );
        let p = pod(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": -1}}]}}));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert!(matches!(
            container_config(&p, c, 0, vec![], vec![]),
            Err(ConvertError::Id { .. })
        ));
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert!(matches!(
            container_config(&p, c, 0, vec![], vec![]),
            Err(ConvertError::NoImage { .. })
        ));
    }

    #[test]
    fn container_merges_security_and_expands_args() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                                    "supplementalGroups": [4000], "runAsNonRoot": true,
                                    "seccompProfile": {"type": "Unconfined"}},
                "containers": [{
                    "name": "c", "image": "busybox", "workingDir": "/w", "tty": true,
                    "command": ["sh", "-c", "echo $(MSG) $$(MSG) $(NONE)"], "args": ["$(MSG)"],
                    "securityContext": {"runAsUser": 1001, "readOnlyRootFilesystem": true,
                                        "allowPrivilegeEscalation": false,
                                        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}
                }]
            }
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = vec![("MSG".to_string(), "hi".to_string())];
        let cfg = container_config(&p, c, 3, env.clone(), vec![]).unwrap();
        assert_eq!(cfg.command, vec!["sh", "-c", "echo hi $(MSG) $(NONE)"]);
        assert_eq!(cfg.args, vec!["hi"]);
        assert_eq!(cfg.env, env);
        assert_eq!(cfg.attempt, 3);
        assert_eq!(cfg.working_dir.as_deref(), Some("/w"));
        assert!(cfg.tty && !cfg.stdin);
        let s = &cfg.security;
        assert_eq!((s.run_as_user, s.run_as_group), (Some(1001), Some(3000)));
        assert!(s.run_as_non_root && s.read_only_root_filesystem && !s.privileged);
        assert_eq!(s.supplemental_groups, vec![4000, 2000]);
        assert_eq!(s.allow_privilege_escalation, Some(false));
        assert_eq!(s.capabilities_add, vec!["NET_ADMIN"]);
        assert_eq!(s.capabilities_drop, vec!["ALL"]);
        assert_eq!(s.seccomp, SeccompProfile::Unconfined);
        assert_eq!(cfg.log, LogLimits::default());
    }

    #[test]
    fn qos_counts_init_containers() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        );
        assert_eq!(qos_class(&p), QosClass::BestEffort);
        let g = serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        let p = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "resources": g}]}}));
        assert_eq!(qos_class(&p), QosClass::Guaranteed);
        let p = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "c", "resources": g}]}}));
        assert_eq!(qos_class(&p), QosClass::Burstable);
    }
}
