//! Which ReplicaSets a Deployment owns (adopt/release by selector, as the
//! ControllerRefManager does) and how many of their pods are available.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use super::{NAME, Owned};
use crate::api::Resource;
use crate::controllers::ControllerError;
use crate::controllers::pods::{self, store_err};
use crate::store::{Datastore, Key, StoreError};

/// The deployment's ReplicaSets (adopting matching orphans, releasing
/// owned ones that stopped matching), oldest first, with pod counts.
pub(super) fn claim_replica_sets(
    store: &dyn Datastore,
    d: &Deployment,
    spec: &DeploymentSpec,
    ns: &str,
    now: Timestamp,
) -> Result<Vec<Owned>, ControllerError> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let all: Vec<ReplicaSet> = pods::list(NAME, store, Resource::ReplicaSets, Some(ns))?;
    let owner = pods::owner_ref(Resource::Deployments, &d.metadata);
    let mut mine = Vec::new();
    for rs in all {
        let matches = pods::selector_matches(&spec.selector, rs.metadata.labels.as_ref());
        let rs_key = Key::namespaced(
            Resource::ReplicaSets,
            ns,
            rs.metadata.name.as_deref().unwrap_or(""),
        );
        match pods::controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    mine.push(rs);
                } else if !deleting {
                    pods::set_owner(store, &rs_key, &uid, None)
                        .map_err(|e| store_err(NAME, &rs_key, e))?;
                }
            }
            Some(_) => {}
            None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                match pods::set_owner(store, &rs_key, &uid, Some(&owner)) {
                    Ok(Some(v)) => mine.push(pods::decode(NAME, &rs_key, v)?),
                    Ok(None) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(store_err(NAME, &rs_key, e)),
                }
            }
            None => {}
        }
    }
    mine.sort_by_key(|rs| (pods::created(&rs.metadata), rs.metadata.name.clone()));
    let pods_by_owner = pod_counts(store, ns, spec.min_ready_seconds.unwrap_or(0), now)?;
    Ok(mine
        .into_iter()
        .map(|rs| {
            let (available, live) = rs
                .metadata
                .uid
                .as_ref()
                .and_then(|u| pods_by_owner.get(u))
                .copied()
                .unwrap_or((0, 0));
            Owned {
                rs,
                available,
                live,
            }
        })
        .collect())
}

/// Per controller uid: (available active pods, pods not finished).
fn pod_counts(
    store: &dyn Datastore,
    ns: &str,
    min_ready: i32,
    now: Timestamp,
) -> Result<HashMap<String, (i32, i32)>, ControllerError> {
    let all: Vec<Pod> = pods::pods_in(NAME, store, ns)?;
    let mut out: HashMap<String, (i32, i32)> = HashMap::new();
    for p in &all {
        let Some(r) = pods::controller_of(&p.metadata) else {
            continue;
        };
        let e = out.entry(r.uid.clone()).or_default();
        if pods::is_active(p) && pods::is_available(p, min_ready, now) {
            e.0 += 1;
        }
        if !matches!(pods::phase(p), "Succeeded" | "Failed") {
            e.1 += 1;
        }
    }
    Ok(out)
}
