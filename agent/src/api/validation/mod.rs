//! Validation, as the API server validates (k8s
//! `pkg/apis/core/validation`, apimachinery `util/validation`).
//!
//! Guarantees: [`validate`] reports every invalid field at once, each as a
//! [`FieldError`] with the exact JSON path and the API server's message,
//! wrapped in one `Invalid` (422) [`ApiError`]. It runs on defaulted
//! objects (the API's order is decode → defaults → validation) but does
//! not panic on undefaulted ones. [`validate_update`] adds the update
//! rules: identity fields and most of a Pod's spec are immutable.

mod cluster;
mod env;
pub mod names;
mod network;
pub mod objects;
pub mod pod;
mod probes;
mod resources;
mod security;
mod update;
mod volumes;
pub mod workloads;

pub use update::validate_update;

use super::manifest::Object;
use super::{ApiError, FieldError};

/// Checks a whole object; `Err` lists every invalid field.
pub fn validate(obj: &Object) -> Result<(), ApiError> {
    let errs = collect(obj);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(obj.resource(), obj.name(), errs))
    }
}

/// Every invalid field of `obj`, in the API server's order.
pub fn collect(obj: &Object) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match obj {
        Object::Pod(p) => {
            objects::object_meta(&p.metadata, true, false, &mut errs);
            match p.spec.as_ref() {
                Some(spec) => pod::pod_spec(spec, &mut errs),
                None => errs.push(FieldError::required("spec", "")),
            }
        }
        Object::ConfigMap(c) => {
            objects::object_meta(&c.metadata, true, false, &mut errs);
            objects::config_map(c, &mut errs);
        }
        Object::Secret(s) => {
            objects::object_meta(&s.metadata, true, false, &mut errs);
            objects::secret(s, &mut errs);
        }
        Object::Namespace(n) => {
            objects::object_meta(&n.metadata, false, true, &mut errs);
        }
        Object::Node(n) => {
            objects::object_meta(&n.metadata, false, false, &mut errs);
            cluster::node(n, &mut errs);
        }
        Object::Service(s) => {
            objects::object_meta(&s.metadata, true, true, &mut errs);
            network::service(s, &mut errs);
        }
        Object::Endpoints(e) => {
            objects::object_meta(&e.metadata, true, false, &mut errs);
            network::endpoints(e, &mut errs);
        }
        Object::EndpointSlice(e) => {
            objects::object_meta(&e.metadata, true, false, &mut errs);
            network::endpoint_slice(e, &mut errs);
        }
        Object::ServiceAccount(s) => objects::object_meta(&s.metadata, true, false, &mut errs),
        Object::Lease(l) => {
            objects::object_meta(&l.metadata, true, false, &mut errs);
            cluster::lease(l, &mut errs);
        }
        Object::Deployment(d) => {
            objects::object_meta(&d.metadata, true, false, &mut errs);
            workloads::deployment(d, &mut errs);
        }
        Object::ReplicaSet(r) => {
            objects::object_meta(&r.metadata, true, false, &mut errs);
            workloads::replica_set(r, &mut errs);
        }
        Object::DaemonSet(d) => {
            objects::object_meta(&d.metadata, true, false, &mut errs);
            workloads::daemon_set(d, &mut errs);
        }
        Object::Job(j) => {
            objects::object_meta(&j.metadata, true, false, &mut errs);
            workloads::job(j, &mut errs);
        }
    }
    errs
}

/// `errs` for one value: one `Invalid` per message.
pub(crate) fn invalid_each(
    errs: &mut Vec<FieldError>,
    field: &str,
    value: &str,
    messages: Vec<String>,
) {
    for m in messages {
        errs.push(FieldError::invalid(field, value, m));
    }
}
