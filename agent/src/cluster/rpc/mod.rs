//! Node-to-node gRPC: joining the cluster and the Raft transport.
//!
//! One TLS port per node (its peer address) serves both services:
//! - `herd.v1.Join` needs no client certificate (the joining node has none
//!   yet). The client trusts the server by pinning the CA hash of its join
//!   token ([`join`]); the server checks the token secret in constant time,
//!   answers a wrong one with `Unauthenticated` and nothing else, and after
//!   [`JoinLimits::max_failures`] failures from one IP within the window
//!   answers `ResourceExhausted` without looking at the secret. Only a node
//!   holding the CA key ([`ClusterSecrets`]) serves Join.
//! - `herd.v1.Peer` needs a client certificate issued by the cluster CA.
//!   The TLS layer makes client certificates optional (for Join) but
//!   verifies any that is presented against the cluster CA, so a foreign
//!   certificate fails the handshake; [`PeerService`] then refuses every
//!   call that arrived without a certificate (`Unauthenticated`) before the
//!   handler runs.
//!
//! One port rather than two: one address per node to gossip and configure,
//! one listener, and the rule is enforced in one place ([`PeerService`]).
//! Messages up to [`herd_proto::MAX_MESSAGE_BYTES`] (64 MiB) pass both ways.
//!
//! [`ClusterSecrets`]: crate::cluster::pki::ClusterSecrets

mod join;
mod join_client;
mod peer;
mod pin;
mod server;
mod transport;

pub use join::{JoinLimits, JoinService, MemberList};
pub use join_client::{JoinError, JoinMaterial, join};
pub use peer::PeerService;
pub use server::{RpcError, RpcServer};
pub use transport::{GrpcTransport, TransportOptions};

use herd_proto::v1;

use crate::cluster::transport::RpcKind;

/// Makes ring the process-wide rustls provider unless one is set already.
///
/// The dependency tree enables both of rustls' providers (ring and
/// aws-lc-rs), so rustls cannot pick one by itself and tonic's server TLS
/// setup would panic without a process default. Called by every entry
/// point of this module; the first provider installed wins.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one first: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Time allowed to open a TCP connection and finish the TLS handshake.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn kind_to_wire(kind: RpcKind) -> v1::RpcKind {
    match kind {
        RpcKind::AppendEntries => v1::RpcKind::AppendEntries,
        RpcKind::Vote => v1::RpcKind::Vote,
        RpcKind::InstallSnapshot => v1::RpcKind::InstallSnapshot,
        RpcKind::ClientWrite => v1::RpcKind::ClientWrite,
        RpcKind::Membership => v1::RpcKind::Membership,
    }
}

fn kind_from_wire(value: i32) -> Option<RpcKind> {
    match v1::RpcKind::try_from(value).ok()? {
        v1::RpcKind::Unspecified => None,
        v1::RpcKind::AppendEntries => Some(RpcKind::AppendEntries),
        v1::RpcKind::Vote => Some(RpcKind::Vote),
        v1::RpcKind::InstallSnapshot => Some(RpcKind::InstallSnapshot),
        v1::RpcKind::ClientWrite => Some(RpcKind::ClientWrite),
        v1::RpcKind::Membership => Some(RpcKind::Membership),
    }
}

/// The first TLS error (rustls) in an error's source chain, if any: tells a
/// refused handshake from a network failure.
fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        cur = e.source();
    }
    None
}

/// The whole source chain of an error, joined by ": ".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_is_rejected() {
        for kind in RpcKind::ALL {
            assert_eq!(kind_from_wire(kind_to_wire(kind) as i32), Some(kind));
        }
        assert_eq!(kind_from_wire(0), None);
        assert_eq!(kind_from_wire(99), None);
        assert_eq!(kind_from_wire(-1), None);
    }
}
