//! [`Object`]: one decoded API object of any served kind, and the typed
//! decoding behind [`super::decode`].

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{ApiError, Resource};

macro_rules! objects {
    ($($variant:ident($ty:ty) => $resource:ident,)*) => {
        /// One decoded object. Large types are boxed.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object {
            $($variant($ty),)*
        }

        impl Object {
            pub fn resource(&self) -> Resource {
                match self {
                    $(Object::$variant(_) => Resource::$resource,)*
                }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Object::$variant(o) => &o.metadata,)*
                }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$variant(o) => &mut o.metadata,)*
                }
            }

            fn to_raw_value(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(Object::$variant(o) => serde_json::to_value(o),)*
                }
            }
        }

        /// Decodes `value` as `resource`'s type (no strictness check).
        fn decode_typed(resource: Resource, value: &Value) -> Result<Object, ApiError> {
            match resource {
                $(Resource::$resource => Ok(Object::$variant(typed(resource, value)?)),)*
                other => Err(ApiError::bad_request(format!(
                    "no matches for kind \"{}\" in version \"{}\"",
                    other.kind(),
                    other.api_version()
                ))),
            }
        }
    };
}

objects! {
    Pod(Box<Pod>) => Pods,
    ConfigMap(ConfigMap) => ConfigMaps,
    Secret(Secret) => Secrets,
    Namespace(Namespace) => Namespaces,
    Node(Box<Node>) => Nodes,
    Service(Box<Service>) => Services,
    Endpoints(Endpoints) => Endpoints,
    ServiceAccount(ServiceAccount) => ServiceAccounts,
    Deployment(Box<Deployment>) => Deployments,
    ReplicaSet(Box<ReplicaSet>) => ReplicaSets,
    DaemonSet(Box<DaemonSet>) => DaemonSets,
    Job(Box<Job>) => Jobs,
    Lease(Lease) => Leases,
    EndpointSlice(EndpointSlice) => EndpointSlices,
}

impl Object {
    /// `metadata.name`, empty when unset.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// The object as JSON, with `apiVersion` and `kind` set.
    pub fn to_value(&self) -> Value {
        // Serializing k8s-openapi types into a `Value` cannot fail: every map
        // has string keys and no type has a failing `Serialize`.
        let mut v = self.to_raw_value().unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            let r = self.resource();
            m.insert("apiVersion".into(), r.api_version().into());
            m.insert("kind".into(), r.kind().into());
        }
        v
    }

    /// Decodes a value already known to be good (read back from the store):
    /// no strict field check, type errors still reported.
    pub fn from_value_unchecked(resource: Resource, value: Value) -> Result<Object, ApiError> {
        decode_as(resource, value, false)
    }
}

/// `value` as `resource` with its unknown fields dropped, and their paths
/// (`fieldValidation=Ignore|Warn`). A value of another kind is returned
/// as it is (the write refuses it later, naming both kinds).
pub fn strip_unknown(resource: Resource, value: Value) -> Result<(Value, Vec<String>), ApiError> {
    if value.get("kind").and_then(Value::as_str) != Some(resource.kind()) {
        return Ok((value, Vec::new()));
    }
    let obj = decode_typed(resource, &value)?;
    let back = obj.to_value();
    let mut unknown = Vec::new();
    unknown_fields(&value, &back, &mut String::new(), &mut unknown);
    Ok(if unknown.is_empty() {
        (value, unknown)
    } else {
        (back, unknown)
    })
}

/// Decodes `value` as `resource`; `strict` rejects unknown fields.
pub(super) fn decode_as(
    resource: Resource,
    value: Value,
    strict: bool,
) -> Result<Object, ApiError> {
    let obj = decode_typed(resource, &value)?;
    if strict {
        let back = obj.to_value();
        let mut unknown = Vec::new();
        unknown_fields(&value, &back, &mut String::new(), &mut unknown);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .take(20)
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
    }
    Ok(obj)
}

fn typed<T: DeserializeOwned>(resource: Resource, value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let kind = resource.kind();
        let version = resource.api_version();
        let at = if path == "." || path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {at}{inner}"
        ))
    })
}

/// Fields of `input` that the typed object dropped, as JSON paths.
/// Null values are ignored (they decode to "unset").
fn unknown_fields(input: &Value, back: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    Some(bv) => unknown_fields(v, bv, path, out),
                    None if v.is_null() => {}
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, bv)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                unknown_fields(v, bv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}
