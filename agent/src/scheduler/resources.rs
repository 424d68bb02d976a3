//! Resource amounts: what a pod requests and what a node can allocate,
//! computed as kube-scheduler does.
//!
//! Pod requests follow component-helpers' `resource.PodRequests`: the sum
//! of the regular containers plus sidecars (init containers with
//! `restartPolicy: Always`), at least the largest single init container
//! (plus the sidecars started before it), pod-level `spec.resources`
//! requests override the container sum for the resources they name, and
//! `spec.overhead` is added. The "non-zero" variant (used for scoring only,
//! as in NodeResourcesFit/BalancedAllocation) counts a container without a
//! CPU or memory request as 100m / 200Mi.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::SchedulerError;
use crate::api::quantity;

/// Default CPU request for scoring when a container sets none (millicores).
pub const DEFAULT_MILLI_CPU: u64 = 100;
/// Default memory request for scoring when a container sets none (bytes).
pub const DEFAULT_MEMORY: u64 = 200 * 1024 * 1024;
/// kubelet's default `maxPods`, used when a node states no `pods` amount.
pub const DEFAULT_MAX_PODS: u64 = 110;

/// An amount of each resource; CPU in millicores, the rest in units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: u64,
    pub memory: u64,
    pub ephemeral_storage: u64,
    /// Extended and hugepages resources (`nvidia.com/gpu`, `hugepages-2Mi`).
    pub scalar: BTreeMap<String, u64>,
}

impl Resources {
    /// Parses a `ResourceList`; `pods` is returned apart.
    pub fn from_list(
        list: &BTreeMap<String, Quantity>,
        what: &str,
    ) -> Result<(Resources, Option<u64>), SchedulerError> {
        let mut r = Resources::default();
        let mut pods = None;
        for (name, q) in list {
            let bad = |e: quantity::QuantityError| SchedulerError::Quantity {
                what: what.to_string(),
                resource: name.clone(),
                value: q.0.clone(),
                reason: e.to_string(),
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity::cpu_millis(&q.0).map_err(bad)?,
                "memory" => r.memory = quantity::bytes(&q.0).map_err(bad)?,
                "ephemeral-storage" => r.ephemeral_storage = quantity::bytes(&q.0).map_err(bad)?,
                "pods" => pods = Some(quantity::bytes(&q.0).map_err(bad)?),
                other => {
                    r.scalar
                        .insert(other.to_string(), quantity::bytes(&q.0).map_err(bad)?);
                }
            }
        }
        Ok((r, pods))
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
                if *e == 0 {
                    self.scalar.remove(k);
                }
            }
        }
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// What a pod asks for: exact requests (filtering) and the non-zero CPU
/// and memory (scoring).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub exact: Resources,
    pub non_zero_cpu: u64,
    pub non_zero_memory: u64,
}

fn container_requests(c: &Container, pod: &str) -> Result<Resources, SchedulerError> {
    match c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        Some(list) => Ok(Resources::from_list(list, &format!("pod {pod} container {}", c.name))?.0),
        None => Ok(Resources::default()),
    }
}

fn non_zero(mut r: Resources) -> Resources {
    if r.milli_cpu == 0 {
        r.milli_cpu = DEFAULT_MILLI_CPU;
    }
    if r.memory == 0 {
        r.memory = DEFAULT_MEMORY;
    }
    r
}

fn aggregate(pod: &Pod, name: &str, non_zero_defaults: bool) -> Result<Resources, SchedulerError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Resources::default());
    };
    let req = |c: &Container| -> Result<Resources, SchedulerError> {
        let r = container_requests(c, name)?;
        Ok(if non_zero_defaults { non_zero(r) } else { r })
    };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&req(c)?);
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = req(c)?;
        let effective = if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            sidecars.clone()
        } else {
            let mut t = r;
            t.add(&sidecars);
            t
        };
        init_max.max(&effective);
    }
    reqs.max(&init_max);
    if let Some(list) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let (pod_level, _) = Resources::from_list(list, &format!("pod {name}"))?;
        if list.contains_key("cpu") {
            reqs.milli_cpu = pod_level.milli_cpu;
        }
        if list.contains_key("memory") {
            reqs.memory = pod_level.memory;
        }
    }
    if let Some(list) = spec.overhead.as_ref() {
        reqs.add(&Resources::from_list(list, &format!("pod {name} overhead"))?.0);
    }
    Ok(reqs)
}

impl PodRequests {
    pub fn of(pod: &Pod, name: &str) -> Result<PodRequests, SchedulerError> {
        let exact = aggregate(pod, name, false)?;
        let nz = aggregate(pod, name, true)?;
        Ok(PodRequests {
            exact,
            non_zero_cpu: nz.milli_cpu,
            non_zero_memory: nz.memory,
        })
    }
}

/// What a node can hold: `status.allocatable`, else `status.capacity`.
pub fn node_allocatable(node: &Node, name: &str) -> Result<(Resources, u64), SchedulerError> {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    match list {
        Some(l) => {
            let (r, pods) = Resources::from_list(l, &format!("node {name}"))?;
            Ok((r, pods.unwrap_or(DEFAULT_MAX_PODS)))
        }
        None => Ok((Resources::default(), DEFAULT_MAX_PODS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn init_containers_take_the_max_and_sidecars_add() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [c("a", "100m", "1Mi"), c("b", "200m", "1Mi")],
            "initContainers": [c("i1", "1", "1Mi"), c("i2", "50m", "10Mi")],
        }}));
        let r = PodRequests::of(&p, "p").unwrap();
        assert_eq!((r.exact.milli_cpu, r.exact.memory), (1000, 10 << 20));

        // A sidecar adds to the regular sum and to init containers after it.
        let mut side = c("s", "500m", "4Mi");
        side["restartPolicy"] = json!("Always");
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [c("a", "100m", "1Mi")],
            "initContainers": [side, c("i", "800m", "1Mi")],
        }}));
        let r = PodRequests::of(&p, "p").unwrap();
        // regular: 100m + 500m = 600m; init: 800m + 500m = 1300m.
        assert_eq!(r.exact.milli_cpu, 1300);
        assert_eq!(r.exact.memory, 5 << 20);
    }

    #[test]
    fn overhead_pod_level_and_non_zero() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a"}, c("b", "100m", "1Mi")],
            "overhead": {"cpu": "10m"},
            "resources": {"requests": {"memory": "64Mi"}},
        }}));
        let r = PodRequests::of(&p, "p").unwrap();
        assert_eq!(r.exact.milli_cpu, 110);
        assert_eq!(r.exact.memory, 64 << 20);
        assert_eq!(r.non_zero_cpu, 210);
        let bad = pod(json!({"spec": {"containers": [
            {"name": "x", "resources": {"requests": {"cpu": "oops"}}}]}}));
        assert!(matches!(
            PodRequests::of(&bad, "p"),
            Err(SchedulerError::Quantity { .. })
        ));
    }
}
