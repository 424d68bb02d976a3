//! The controllers the Raft leader runs (issue 6): ReplicaSet, Deployment,
//! DaemonSet, Job, Endpoints/EndpointSlices, garbage collection by
//! ownerReferences, namespace deletion, node lifecycle.
//!
//! Every controller is level-triggered: [`Controller::reconcile`] reads the
//! current state of one primary object and what it owns from the store and
//! makes one step towards the desired state; it is idempotent and may be
//! called again at any time. The runner ([`runner`]) watches the resources
//! each controller names, maps every change to the primary keys to
//! reconcile, de-duplicates them in a queue, and re-queues after the delay a
//! reconcile asks for. It stops when leadership is lost.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::Resource;
use crate::store::{Datastore, Key, StoreError, WatchEvent};

/// Why a reconcile failed (the runner logs it and retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{controller} {key}: store: {source}")]
    Store {
        controller: &'static str,
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("{controller} {key}: {reason}")]
    Invalid {
        controller: &'static str,
        key: String,
        reason: String,
    },
}

/// One controller.
pub trait Controller: Send + Sync + std::fmt::Debug + 'static {
    fn name(&self) -> &'static str;

    /// The resources whose changes wake this controller (its primary
    /// resource first).
    fn watches(&self) -> &'static [Resource];

    /// The primary objects to reconcile after a change (for example: the
    /// owner of a changed pod, the services selecting it).
    fn keys_for(&self, store: &dyn Datastore, event: &WatchEvent) -> Vec<Key>;

    /// Every primary key, for the initial pass and periodic resyncs.
    fn all_keys(&self, store: &dyn Datastore) -> Result<Vec<Key>, ControllerError>;

    /// One step towards the desired state of `key` (which may no longer
    /// exist). `Ok(Some(d))`: reconcile again after `d` even if nothing
    /// changes (timeouts, grace periods, progress deadlines).
    fn reconcile(
        &self,
        store: &dyn Datastore,
        key: &Key,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError>;
}

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslices;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod pods;
pub mod replicaset;
pub mod runner;
pub mod selectors;

/// Every controller the leader runs, with their default settings.
pub fn all() -> Vec<std::sync::Arc<dyn Controller>> {
    vec![
        std::sync::Arc::new(replicaset::ReplicaSetController),
        std::sync::Arc::new(deployment::DeploymentController),
        std::sync::Arc::new(daemonset::DaemonSetController),
        std::sync::Arc::new(job::JobController::default()),
        std::sync::Arc::new(endpoints::EndpointsController::new()),
        std::sync::Arc::new(endpointslices::EndpointSliceController::default()),
        std::sync::Arc::new(gc::GarbageCollector::new()),
        std::sync::Arc::new(namespace::NamespaceController::new()),
        std::sync::Arc::new(nodelifecycle::NodeLifecycleController::default()),
    ]
}
