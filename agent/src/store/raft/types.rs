//! What travels through the Raft log and between nodes: the openraft type
//! configuration, the state machine's commands and results, and the wire
//! form of [`StoreError`] (so a follower's caller gets the very variant the
//! leader's state machine produced).
//!
//! Everything here is serialized with serde_json: objects are
//! `serde_json::Value`, which postcard cannot carry.

use std::collections::BTreeSet;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::Resource;
use crate::cluster::transport::NodeId;
use crate::store::{Key, StoreError};

openraft::declare_raft_types!(
    /// openraft types of the herd store.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle of this store.
pub type Raft = openraft::Raft<TypeConfig>;

/// A [`Key`] on the wire: the resource by its plural name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey {
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl From<&Key> for WireKey {
    fn from(k: &Key) -> WireKey {
        WireKey {
            resource: k.resource.plural().to_string(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }
}

impl WireKey {
    /// The key, or an `Encoding` error for a resource this build does not
    /// know (a newer node's log entry, a forged message).
    pub fn to_key(&self) -> Result<Key, StoreError> {
        let Some(resource) = Resource::from_plural(&self.resource) else {
            return Err(StoreError::Encoding {
                name: self.name.clone(),
                reason: format!("unknown resource {:?}", self.resource),
            });
        };
        Ok(Key {
            resource,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })
    }
}

/// One write, as a log entry. Applied deterministically by every replica:
/// the outcome (stored object or error) depends only on the state before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Create {
        key: WireKey,
        object: Value,
    },
    Update {
        key: WireKey,
        object: Value,
        expected: Option<u64>,
    },
    Delete {
        key: WireKey,
        expected: Option<u64>,
    },
}

impl Command {
    pub fn key(&self) -> &WireKey {
        match self {
            Command::Create { key, .. }
            | Command::Update { key, .. }
            | Command::Delete { key, .. } => key,
        }
    }
}

/// The state machine's answer to one log entry. `outcome` is `None` for
/// entries that carry no command (blank, membership).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CommandResult {
    pub outcome: Option<Result<Value, WireError>>,
}

/// [`StoreError`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    NotFound {
        resource: String,
        name: String,
    },
    AlreadyExists {
        resource: String,
        name: String,
    },
    Conflict {
        resource: String,
        name: String,
        current: u64,
    },
    Expired {
        requested: u64,
        oldest: u64,
    },
    Backend {
        path: String,
        reason: String,
    },
    Encoding {
        name: String,
        reason: String,
    },
}

impl From<&StoreError> for WireError {
    fn from(e: &StoreError) -> WireError {
        match e {
            StoreError::NotFound { resource, name } => WireError::NotFound {
                resource: resource.plural().into(),
                name: name.clone(),
            },
            StoreError::AlreadyExists { resource, name } => WireError::AlreadyExists {
                resource: resource.plural().into(),
                name: name.clone(),
            },
            StoreError::Conflict {
                resource,
                name,
                current,
            } => WireError::Conflict {
                resource: resource.plural().into(),
                name: name.clone(),
                current: *current,
            },
            StoreError::Expired { requested, oldest } => WireError::Expired {
                requested: *requested,
                oldest: *oldest,
            },
            StoreError::Backend { path, reason } => WireError::Backend {
                path: path.clone(),
                reason: reason.clone(),
            },
            StoreError::Encoding { name, reason } => WireError::Encoding {
                name: name.clone(),
                reason: reason.clone(),
            },
            // Never a state machine outcome (the caller's wait; etcd's
            // fence).
            StoreError::Timeout { reason } | StoreError::Fenced { reason } => WireError::Backend {
                path: String::new(),
                reason: reason.clone(),
            },
        }
    }
}

fn resource(plural: &str, name: &str) -> Result<Resource, StoreError> {
    Resource::from_plural(plural).ok_or_else(|| StoreError::Encoding {
        name: name.to_string(),
        reason: format!("unknown resource {plural:?}"),
    })
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> StoreError {
        let r = |plural: &str, name: &str| resource(plural, name);
        match e {
            WireError::NotFound {
                resource: res,
                name,
            } => match r(&res, &name) {
                Ok(resource) => StoreError::NotFound { resource, name },
                Err(e) => e,
            },
            WireError::AlreadyExists {
                resource: res,
                name,
            } => match r(&res, &name) {
                Ok(resource) => StoreError::AlreadyExists { resource, name },
                Err(e) => e,
            },
            WireError::Conflict {
                resource: res,
                name,
                current,
            } => match r(&res, &name) {
                Ok(resource) => StoreError::Conflict {
                    resource,
                    name,
                    current,
                },
                Err(e) => e,
            },
            WireError::Expired { requested, oldest } => StoreError::Expired { requested, oldest },
            WireError::Backend { path, reason } => StoreError::Backend { path, reason },
            WireError::Encoding { name, reason } => StoreError::Encoding { name, reason },
        }
    }
}

/// A forwarded write's answer: the outcome and the log index it was
/// applied at (the forwarding node waits until it applied that far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardReply {
    Applied {
        index: u64,
        outcome: Result<Value, WireError>,
    },
    /// The receiver is not the leader (any more); retry at `leader`.
    NotLeader { leader: Option<(NodeId, String)> },
    /// The receiver could not commit the entry.
    Failed { reason: String },
}

/// Membership changes forwarded to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipRequest {
    AddLearner { id: NodeId, addr: String },
    ChangeVoters { voters: BTreeSet<NodeId> },
    RemoveNodes { ids: BTreeSet<NodeId> },
}

/// The leader's answer to a [`MembershipRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipReply {
    Done { index: u64 },
    NotLeader { leader: Option<(NodeId, String)> },
    Failed { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_round_trip_as_the_same_variant() {
        let errors = [
            StoreError::NotFound {
                resource: Resource::Pods,
                name: "a".into(),
            },
            StoreError::AlreadyExists {
                resource: Resource::ConfigMaps,
                name: "b".into(),
            },
            StoreError::Conflict {
                resource: Resource::Services,
                name: "c".into(),
                current: 7,
            },
            StoreError::Expired {
                requested: 1,
                oldest: 5,
            },
            StoreError::Backend {
                path: "p".into(),
                reason: "r".into(),
            },
            StoreError::Encoding {
                name: "n".into(),
                reason: "r".into(),
            },
        ];
        for e in errors {
            let wire = WireError::from(&e);
            let bytes = serde_json::to_vec(&wire).unwrap();
            let back: WireError = serde_json::from_slice(&bytes).unwrap();
            let back = StoreError::from(back);
            assert_eq!(format!("{e:?}"), format!("{back:?}"));
        }
    }

    #[test]
    fn unknown_resource_is_an_encoding_error() {
        let e = StoreError::from(WireError::NotFound {
            resource: "widgets".into(),
            name: "x".into(),
        });
        assert!(matches!(e, StoreError::Encoding { .. }));
        let k = WireKey {
            resource: "widgets".into(),
            namespace: None,
            name: "x".into(),
        };
        assert!(matches!(k.to_key(), Err(StoreError::Encoding { .. })));
    }
}
