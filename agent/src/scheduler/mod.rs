//! The scheduler: binds pending pods to nodes (runs on the Raft leader).
//!
//! The algorithm follows kube-scheduler's default profile, plugin by
//! plugin (each file names the plugins it implements): filters
//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
//! NodeResourcesFit, PodTopologySpread, InterPodAffinity; scores
//! NodeResourcesFit (LeastAllocated), NodeResourcesBalancedAllocation,
//! NodeAffinity, TaintToleration, InterPodAffinity, PodTopologySpread with
//! the default weights. Not implemented: preemption, NodePorts,
//! volume plugins, ImageLocality, the system default spread constraints,
//! non-empty `namespaceSelector`s (rejected with a clear error).
//!
//! - [`Cache`]: nodes and bound/assumed pods, updated incrementally;
//!   scheduling a pod costs the nodes it visits plus the pods its selectors
//!   match, never a scan of every pod.
//! - [`Scheduler`]: [`Scheduler::schedule_batch`] places pods one after the
//!   other (each assumed at once), returning the node or an
//!   [`Unschedulable`] whose `Display` is kube-scheduler's message
//!   ("0/3 nodes are available: 2 Insufficient cpu, ...").
//! - [`run::run`]: the loop over a `Datastore` (list+watch, queue, bind
//!   with optimistic concurrency, PodScheduled conditions, backoff).

pub mod affinity;
pub mod cache;
pub mod filters;
pub mod info;
pub mod labels;
pub mod queue;
pub mod resources;
pub mod run;
pub mod schedule;
pub mod scores;
pub mod spread;

pub use cache::Cache;
pub use info::{NodeInfo, PodInfo, PodKey};
pub use schedule::{Config, Placement, Scheduler, Unschedulable};

/// Scheduler failures: objects it cannot read, store errors in the loop.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{what}: {resource} quantity {value:?}: {reason}")]
    Quantity {
        what: String,
        resource: String,
        value: String,
        reason: String,
    },
    #[error("invalid pod: {reason}")]
    InvalidPod { reason: String },
    #[error("invalid node {name:?}: {reason}")]
    InvalidNode { name: String, reason: String },
    #[error("decoding {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("store task for {what} failed: {reason}")]
    Task { what: String, reason: String },
}

#[cfg(test)]
mod tests;
