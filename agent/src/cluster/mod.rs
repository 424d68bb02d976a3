//! The cluster without masters (issue 6).
//!
//! - [`gossip`]: SWIM membership (foca) over UDP, packets sealed with the
//!   cluster key; node metadata; failure detection.
//! - [`pki`]: the cluster CA, node certificates, join tokens.
//! - [`rpc`]: node-to-node gRPC (herd-proto) over mutual TLS: join, the
//!   Raft transport, forwarded writes.
//! - [`transport`]: the contract between the Raft store and the RPC layer.

pub mod gossip;
pub mod pki;
pub mod rpc;
pub mod transport;
