//! SWIM membership (foca) over UDP, sealed with the cluster key.
//!
//! Each member is one tokio task ([`Gossip`]) that owns a UDP socket and a
//! [`core::GossipCore`]: foca's SWIM (probe, indirect probe, suspicion,
//! dissemination by piggybacking and periodic gossip) plus node metadata
//! ([`NodeMeta`]: addresses, pod CIDR, capacity, labels, taints, version)
//! that travels as versioned foca custom broadcasts and is fetched directly
//! from a peer when missing. Subscribers get [`MemberEvent`]s; a member is
//! `Joined` once alive with known metadata.
//!
//! Trust: every datagram is sealed with XChaCha20-Poly1305 under the 32-byte
//! cluster key ([`seal`]); anything that does not open, or opens but does
//! not decode, is dropped and counted in [`GossipStats`], never a panic.
//!
//! Layout: [`seal`] (envelope), [`frame`] (plaintext kinds), [`meta`]
//! (metadata records), [`member`] (identities, states, events), [`config`]
//! (tunables and their documented defaults), [`core`] (the IO-free state
//! machine), [`downs`] (anti-entropy of failure verdicts), `runtime` (the
//! tokio task), [`sim`] (a deterministic simulated network driving many
//! cores, for benchmarks).

pub mod config;
pub mod core;
pub mod downs;
pub mod frame;
pub mod member;
pub mod meta;
mod runtime;
pub mod seal;
pub mod sim;

pub use config::{GossipConfig, Tuning};
pub use member::{Member, MemberEvent, MemberState, NodeId};
pub use meta::{Capacity, NodeMeta, Taint};
pub use runtime::{Gossip, GossipError, GossipStats};
