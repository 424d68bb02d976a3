//! Kubernetes' QoS class and OOM score rules, reproduced exactly.
//!
//! - [`qos_class`] is `ComputePodQOS` (pkg/apis/core/helper/qos): requests
//!   and limits are summed per resource over all containers, only values
//!   greater than zero count, a request that is unset defaults to the limit
//!   (what API defaulting does before the kubelet sees a pod). Guaranteed
//!   needs cpu and memory limits on every container and the summed requests
//!   equal to the summed limits; BestEffort has no request and no limit at
//!   all; everything else is Burstable.
//! - [`oom_score_adj`] is `GetContainerOOMScoreAdjust` (pkg/kubelet/qos).

use crate::types::{ContainerResources, QosClass};

/// OOM score adjustment of Guaranteed containers (kubelet's
/// `guaranteedOOMScoreAdj`).
pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// OOM score adjustment of BestEffort containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// A container's effective (cpu, memory) requests: unset defaults to the
/// limit, as the API server's defaulting does.
pub(crate) fn effective_requests(c: &ContainerResources) -> (Option<u64>, Option<u64>) {
    (
        c.cpu_request_millis.or(c.cpu_limit_millis),
        c.memory_request_bytes.or(c.memory_limit_bytes),
    )
}

fn positive(v: Option<u64>) -> Option<u64> {
    v.filter(|&x| x > 0)
}

/// The pod's QoS class from all its containers (init containers included).
pub fn qos_class(containers: &[ContainerResources]) -> QosClass {
    let mut req_cpu: Option<u128> = None;
    let mut req_mem: Option<u128> = None;
    let mut lim_cpu: Option<u128> = None;
    let mut lim_mem: Option<u128> = None;
    let mut guaranteed = true;
    let add = |acc: &mut Option<u128>, v: Option<u64>| {
        if let Some(v) = positive(v) {
            *acc = Some(acc.unwrap_or(0) + u128::from(v));
        }
    };
    for c in containers {
        let (rc, rm) = effective_requests(c);
        add(&mut req_cpu, rc);
        add(&mut req_mem, rm);
        add(&mut lim_cpu, c.cpu_limit_millis);
        add(&mut lim_mem, c.memory_limit_bytes);
        if positive(c.cpu_limit_millis).is_none() || positive(c.memory_limit_bytes).is_none() {
            guaranteed = false;
        }
    }
    let requests = [req_cpu, req_mem];
    let limits = [lim_cpu, lim_mem];
    let count = |m: &[Option<u128>; 2]| m.iter().filter(|v| v.is_some()).count();
    if count(&requests) == 0 && count(&limits) == 0 {
        return QosClass::BestEffort;
    }
    if guaranteed {
        // Every requested resource must have an equal limit.
        for (req, lim) in requests.iter().zip(limits.iter()) {
            if req.is_some() && req != lim {
                guaranteed = false;
            }
        }
    }
    if guaranteed && count(&requests) == count(&limits) {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The `oom_score_adj` for a container of a pod of class `qos`.
///
/// Burstable: `1000 - 1000 * memory_request / node_memory_capacity`, raised
/// to 3 (`1000 + guaranteedOOMScoreAdj`, so a Guaranteed pod using all
/// memory still scores lower) and lowered to 999 (so Burstable survives
/// before BestEffort). The memory request defaults to nothing (0) when
/// unset; a zero capacity (unknown) gives 999.
pub fn oom_score_adj(qos: QosClass, memory_request: Option<u64>, node_memory_capacity: u64) -> i32 {
    match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let min = 1000 + GUARANTEED_OOM_SCORE_ADJ;
            if node_memory_capacity == 0 {
                return BEST_EFFORT_OOM_SCORE_ADJ - 1;
            }
            let req = u128::from(memory_request.unwrap_or(0));
            let share = (1000 * req) / u128::from(node_memory_capacity);
            // share > 1000 when the request exceeds capacity: clamp first.
            let adj = 1000 - i64::try_from(share.min(2000)).unwrap_or(2000);
            if adj < i64::from(min) {
                min
            } else if adj == i64::from(BEST_EFFORT_OOM_SCORE_ADJ) {
                BEST_EFFORT_OOM_SCORE_ADJ - 1
            } else {
                // adj is in [3, 999] here.
                i32::try_from(adj).unwrap_or(min)
            }
        }
    }
}
