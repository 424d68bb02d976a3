//! Member identities, states and the events subscribers see.
//!
//! A [`NodeId`] is the foca identity: the node name, the UDP address peers
//! send to, a `boot` number chosen at every start (milliseconds since the
//! epoch shifted left 16 bits, plus 16 random bits: a restarted node always
//! wins over its previous life) and a `renewal` counter foca bumps when the
//! node was wrongly declared down and rejoins by itself. Foca keys members by
//! address, so two identities with the same address are the same slot and
//! the newer (`boot`, `renewal`) wins.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::meta::NodeMeta;

/// The foca identity of one gossip member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub boot: u64,
    pub renewal: u32,
}

impl NodeId {
    /// A fresh identity for a node starting now.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let salt: u16 = rand::random();
        Self::with_boot(name, addr, (millis << 16) | u64::from(salt))
    }

    /// An identity with an explicit boot number (simulations, tests).
    pub fn with_boot(name: impl Into<String>, addr: SocketAddr, boot: u64) -> Self {
        Self {
            name: name.into(),
            addr,
            boot,
            renewal: 0,
        }
    }

    /// The placeholder identity used to announce to a seed known only by
    /// address (foca accepts an announce addressed to any identity with the
    /// receiver's address).
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        Self::with_boot(String::new(), addr, 0)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            renewal: self.renewal.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.boot, self.renewal) > (adversary.boot, adversary.renewal)
    }
}

/// How the local node currently sees a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    /// Missed a probe; declared down unless it refutes in time.
    Suspect,
    /// Declared dead by failure detection.
    Down,
    /// Left gracefully.
    Left,
}

/// One member as seen by the local node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub meta: NodeMeta,
    pub state: MemberState,
    /// The member's gossip (UDP) address.
    pub addr: SocketAddr,
}

/// A membership change, in the order the local node observed it.
///
/// Per name the order is: `Joined`, then any of `Updated`/`Suspect`/
/// `Refuted`, then `Down` or `Left`; a node that restarts (new boot) is
/// reported `Joined` again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member is alive and its metadata is known.
    Joined(NodeMeta),
    /// A member's metadata changed (new version or a restart).
    Updated(NodeMeta),
    /// A member missed a probe and is suspected.
    Suspect(String),
    /// A suspected member proved it is alive.
    Refuted(String),
    /// Failure detection declared a member dead.
    Down(String),
    /// A member left gracefully.
    Left(String),
}

impl MemberEvent {
    /// The name of the member the event is about.
    pub fn name(&self) -> &str {
        match self {
            Self::Joined(m) | Self::Updated(m) => &m.name,
            Self::Suspect(n) | Self::Refuted(n) | Self::Down(n) | Self::Left(n) => n,
        }
    }
}
