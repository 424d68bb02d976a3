//! herd-agent: the node agent and the `herd` command line.
//!
//! - [`api`]: the Kubernetes-shaped API (types from k8s-openapi, manifest
//!   parsing, defaulting, validation, `Status` errors, the HTTP server).
//! - [`store`]: the `Datastore` trait and the node's local store.
//! - [`kubelet`]: the node's pod workers (images, sandboxes, volumes,
//!   probes, status, static pods, eviction).
//! - [`daemon`]: `herd agent`, wiring the above.
//! - [`cli`]: the command line, a client of the API.
//! - [`cluster`]: gossip membership, the cluster CA and node-to-node RPC.
//! - [`scheduler`]: binds pods to nodes (runs on the Raft leader).
//! - [`controllers`]: ReplicaSet, Deployment, DaemonSet, Job, endpoints,
//!   garbage collection, node lifecycle (run on the Raft leader).

pub mod api;
pub mod cli;
pub mod cluster;
pub mod controllers;
pub mod daemon;
pub mod kubelet;
pub mod proxy;
pub mod scheduler;
pub mod store;
