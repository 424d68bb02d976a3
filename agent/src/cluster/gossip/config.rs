//! Gossip configuration and the failure-detection tunables.
//!
//! Defaults ([`Tuning::default`], sized for up to ~16 members; use
//! [`Tuning::lan`] for a known larger size):
//!
//! | tunable | default | effect |
//! |---|---|---|
//! | `probe_period` | 500 ms | each member pings one other member per period |
//! | `probe_rtt` | 200 ms | direct ping deadline before indirect probes |
//! | `indirect_probes` | 3 | members asked to ping a silent member |
//! | `suspicion_multiplier` | 1.5 | suspicion = `probe_period` x mult x max(1, log10 N) |
//! | `min_suspicion` | 1.5 s | floor of the suspicion timeout |
//! | `gossip_interval`/`gossip_fanout` | 200 ms / 3 | periodic push of pending updates |
//! | `down_digest_for` | 5 s | how long a failure verdict is re-sent, one digest per maintenance tick to a random member ([`super::downs`]) |
//!
//! A silent member is first probed within about N probe periods in the
//! worst case (each member cycles through a shuffled list, so with N
//! members the dead one is probed about once per period on average), found
//! unresponsive at the end of that period, then declared down when the
//! suspicion timeout passes, and the verdict spreads epidemically (fan-out
//! 3 every 200 ms plus piggybacking, then the down digests that reach the
//! few members the epidemic missed). With the defaults and 3-5 members
//! that is 2-4 s; [`Tuning::detection_bound`] gives a safe upper bound.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use super::meta::NodeMeta;
use super::seal::OVERHEAD;

/// Largest foca packet (before the frame byte and sealing).
pub const FOCA_MAX_PACKET: usize = 1400;

/// Largest datagram on the wire: a foca packet, the frame kind byte and the
/// sealing envelope (fits a 1500-byte MTU with IPv4/IPv6 + UDP headers).
pub const MAX_DATAGRAM: usize = FOCA_MAX_PACKET + 1 + OVERHEAD;
const _: () = assert!(
    MAX_DATAGRAM <= 1500 - 48,
    "a datagram must fit a 1500-byte MTU"
);

/// Failure detection and dissemination tunables.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Expected cluster size; scales suspicion and retransmissions.
    pub expected_members: u32,
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub indirect_probes: usize,
    pub suspicion_multiplier: f64,
    pub min_suspicion: Duration,
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// How often to re-announce to seeds while alone, ask for missing
    /// metadata, scan for suspects and send a down digest.
    pub maintenance_interval: Duration,
    /// How long a learned `Down`/`Left` verdict keeps being re-sent in
    /// down digests (zero: never).
    pub down_digest_for: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self::lan(16)
    }
}

impl Tuning {
    /// LAN defaults for a cluster of about `expected_members` members.
    pub fn lan(expected_members: u32) -> Self {
        Self {
            expected_members: expected_members.max(1),
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            indirect_probes: 3,
            suspicion_multiplier: 1.5,
            min_suspicion: Duration::from_millis(1500),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            maintenance_interval: Duration::from_millis(250),
            down_digest_for: Duration::from_secs(5),
        }
    }

    /// Maintenance ticks a verdict stays in the down digests.
    pub fn down_digest_ticks(&self) -> u64 {
        let tick = self.maintenance_interval.as_nanos().max(1);
        let ticks = self.down_digest_for.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    fn log_size(&self) -> f64 {
        f64::from(self.expected_members).log10().max(1.0)
    }

    /// Time a suspected member has to refute before it is declared down.
    pub fn suspicion(&self) -> Duration {
        let secs = self.probe_period.as_secs_f64() * self.suspicion_multiplier * self.log_size();
        let computed = if secs.is_finite() && secs > 0.0 {
            Duration::from_secs_f64(secs.min(3600.0))
        } else {
            Duration::ZERO
        };
        computed.max(self.min_suspicion)
    }

    /// How many times each update is piggybacked (memberlist's 4 x
    /// log10(N+1), at least 6 so small clusters converge despite loss).
    pub fn max_transmissions(&self) -> u8 {
        let tx =
            (f64::from(self.expected_members.saturating_add(1)).log10() * 4.0).clamp(6.0, 255.0);
        tx as u8
    }

    /// An upper bound for "every live member declared a killed member
    /// down" in a cluster of `members` members on a quiet network: the
    /// worst-case wait to be probed (a full probe cycle over the others),
    /// one probe period to fail, the suspicion timeout, and a second of
    /// dissemination and scheduling slack.
    pub fn detection_bound(&self, members: u32) -> Duration {
        self.probe_period * (members.max(2) + 1) + self.suspicion() + Duration::from_secs(1)
    }

    /// The foca configuration these tunables describe.
    pub fn foca_config(&self) -> foca::Config {
        let nz = |v: usize| NonZeroUsize::new(v.max(1)).unwrap_or(NonZeroUsize::MIN);
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions()).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspicion(),
            remove_down_after: Some(Duration::from_secs(15 * 60)),
            max_packet_size: nz(FOCA_MAX_PACKET),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(30),
                num_members: nz(1),
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(30),
                num_members: nz(2),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: self.gossip_interval,
                num_members: nz(self.gossip_fanout),
            }),
        }
    }
}

/// Everything one gossip member needs to start.
#[derive(Clone)]
pub struct GossipConfig {
    /// The node name; must equal `meta.name`.
    pub name: String,
    /// UDP address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// Address peers send to; defaults to the bound address, which must
    /// then not be unspecified (0.0.0.0 / ::).
    pub advertise: Option<SocketAddr>,
    /// The 32-byte cluster key every datagram is sealed with.
    pub cluster_key: [u8; 32],
    /// Members to announce to; empty for the first node.
    pub seeds: Vec<SocketAddr>,
    pub meta: NodeMeta,
    pub tuning: Tuning,
}

impl std::fmt::Debug for GossipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipConfig")
            .field("name", &self.name)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("cluster_key", &"<redacted>")
            .field("seeds", &self.seeds)
            .field("meta", &self.meta)
            .field("tuning", &self.tuning)
            .finish()
    }
}

impl GossipConfig {
    /// A configuration with default tuning, no seeds and `meta.name` as name.
    pub fn new(bind: SocketAddr, cluster_key: [u8; 32], meta: NodeMeta) -> Self {
        Self {
            name: meta.name.clone(),
            bind,
            advertise: None,
            cluster_key,
            seeds: Vec::new(),
            meta,
            tuning: Tuning::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_scales_with_size_and_has_a_floor() {
        assert_eq!(Tuning::lan(3).suspicion(), Duration::from_millis(1500));
        assert_eq!(Tuning::lan(100).suspicion(), Duration::from_millis(1500));
        let big = Tuning::lan(1000).suspicion();
        assert!(
            big > Duration::from_millis(2200) && big < Duration::from_millis(2300),
            "{big:?}"
        );
        assert_eq!(Tuning::lan(3).max_transmissions(), 6);
        assert_eq!(Tuning::lan(1000).max_transmissions(), 12);
        assert_eq!(Tuning::lan(3).down_digest_ticks(), 20);
        let bound = Tuning::lan(3).detection_bound(3);
        assert_eq!(bound, Duration::from_millis(2000 + 1500 + 1000));
    }
}
