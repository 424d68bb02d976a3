//! The cluster without masters (issue 6).
//!
//! - [`gossip`]: SWIM membership (foca) over UDP, packets sealed with the
//!   cluster key; node metadata; failure detection.
//! - [`pki`]: the cluster CA, node certificates, join tokens.
//! - [`rpc`]: node-to-node gRPC (herd-proto) over mutual TLS: join, the
//!   Raft transport, forwarded writes.
//! - [`transport`]: the contract between the Raft store and the RPC layer.
//! - [`bootstrap`]: the node's identity on disk (`--init`, `--join`).
//! - [`node`]: one cluster node (identity, Raft store, RPC server, gossip)
//!   started together.
//! - [`manager`]: gossip turned into Raft membership, Node readiness and
//!   pod CIDRs (by the leader).
//! - [`leader`]: the scheduler and the controllers, on the leader only.
//! - [`routes`]: host-gw routes to the other nodes' pod CIDRs.

pub mod bootstrap;
pub mod gossip;
pub mod leader;
pub mod manager;
pub mod node;
pub mod pki;
pub mod routes;
pub mod rpc;
pub mod transport;
