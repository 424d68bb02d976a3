//! Anti-entropy for failure verdicts: recent `Down`/`Left` members are
//! pushed, as a digest, to one random live member per maintenance tick.
//!
//! Why: foca spreads a `Down` verdict by piggybacking it on at most
//! `max_transmissions` packets per member. Each member that learns it
//! passes it to a handful of random members, so with N members about
//! `N x e^-max_transmissions` of them never hear it (measured: one member in
//! a few failures at 40 members). Such a member keeps the dead one as
//! alive until it probes it itself, which takes up to N probe periods
//! (20 s at 40 members), not seconds.
//!
//! The digest closes that gap: for [`Tuning::down_digest_for`] after a
//! member learns a verdict, it sends the verdicts of that window to one
//! random live member per tick. A straggler is then reached by about one
//! digest per tick (each of the N-1 members sends one per tick to a random
//! peer), so it misses them for t ticks with probability about e^-t.
//! The receiver applies each verdict to foca as a `Down` update (and
//! re-broadcasts it), only for the exact identity it tracks as active: a
//! digest about a member that has since restarted (another `boot`) or
//! rejoined (another `renewal`) changes nothing. No digest is sent when
//! nothing went down recently.
//!
//! [`Tuning::down_digest_for`]: super::config::Tuning::down_digest_for

use std::collections::VecDeque;

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::member::NodeId;

/// Most verdicts in one digest (a digest must fit one datagram: an entry
/// is at most ~100 bytes with a 63-byte node name).
pub const MAX_DOWNS_PER_DIGEST: usize = 12;

/// One failure verdict: the exact identity declared down, and whether it
/// left gracefully.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownNotice {
    pub id: NodeId,
    pub left: bool,
}

/// Verdicts learned in the last `keep_ticks` maintenance ticks.
#[derive(Debug)]
pub(crate) struct RecentDowns {
    /// Newest last, with the tick they were learned at.
    entries: VecDeque<(DownNotice, u64)>,
    tick: u64,
    keep_ticks: u64,
    pub(crate) rng: StdRng,
}

impl RecentDowns {
    /// Keeps verdicts for `keep_ticks` ticks (0: never sends a digest).
    pub(crate) fn new(keep_ticks: u64, rng: StdRng) -> Self {
        Self {
            entries: VecDeque::new(),
            tick: 0,
            keep_ticks,
            rng,
        }
    }

    /// Remembers a verdict (a repeated identity refreshes its age).
    pub(crate) fn record(&mut self, notice: DownNotice) {
        if self.keep_ticks == 0 {
            return;
        }
        self.entries.retain(|(n, _)| n.id != notice.id);
        self.entries.push_back((notice, self.tick));
        while self.entries.len() > MAX_DOWNS_PER_DIGEST {
            self.entries.pop_front();
        }
    }

    /// Advances one tick, forgets expired verdicts and returns the digest
    /// to send this tick, newest first; `None` when there is nothing recent.
    pub(crate) fn tick(&mut self) -> Option<Vec<DownNotice>> {
        self.tick += 1;
        let now = self.tick;
        let keep = self.keep_ticks;
        self.entries
            .retain(|(_, at)| now.saturating_sub(*at) <= keep);
        if self.entries.is_empty() {
            return None;
        }
        Some(self.entries.iter().rev().map(|(n, _)| n.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::cluster::gossip::config::Tuning;
    use crate::cluster::gossip::core::GossipCore;
    use crate::cluster::gossip::frame::Frame;
    use crate::cluster::gossip::member::MemberEvent;
    use crate::cluster::gossip::meta::{MetaRecord, NodeMeta};

    fn members(names: &[&str]) -> Vec<(NodeId, MetaRecord)> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let addr = format!("127.0.0.1:{}", 7000 + i).parse().unwrap();
                let id = NodeId::with_boot(*name, addr, 1);
                let meta = NodeMeta {
                    name: (*name).into(),
                    ..NodeMeta::default()
                };
                let record = MetaRecord {
                    name: (*name).into(),
                    boot: 1,
                    version: 1,
                    meta,
                };
                (id, record)
            })
            .collect()
    }

    fn core(all: &[(NodeId, MetaRecord)], i: usize) -> GossipCore {
        let (id, record) = all[i].clone();
        let rng = StdRng::seed_from_u64(i as u64);
        let mut core = GossipCore::new(id, record.meta, &Tuning::lan(3), rng, vec![]).unwrap();
        core.preload(all.iter().cloned()).unwrap();
        core.take_output();
        core
    }

    /// The down digests `core` sends on its next maintenance tick.
    fn digests(core: &mut GossipCore) -> Vec<(std::net::SocketAddr, Vec<u8>)> {
        core.maintain().unwrap();
        core.take_output()
            .packets
            .into_iter()
            .filter(|(_, p)| matches!(Frame::decode(p), Ok(Frame::Downs(_))))
            .collect()
    }

    #[test]
    fn a_member_that_missed_a_verdict_learns_it_from_a_digest() {
        let all = members(&["a", "b", "v"]);
        let (mut a, mut b) = (core(&all, 0), core(&all, 1));
        assert!(digests(&mut a).is_empty(), "no verdict yet, no digest");

        // a learns that v left; b misses every message about it.
        let leave = Frame::Leave {
            name: "v".into(),
            boot: 1,
        };
        a.handle_plaintext(&leave.encode().unwrap()).unwrap();
        assert!(a.knows_down("v"));
        a.take_output();
        assert!(!b.knows_down("v"));

        // a's next tick sends the digest to its only live peer, b.
        let sent = digests(&mut a);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, all[1].0.addr);
        b.handle_plaintext(&sent[0].1).unwrap();
        assert!(b.knows_down("v"));
        let events = b.take_output().events;
        assert!(
            events.contains(&MemberEvent::Left("v".into())),
            "{events:?}"
        );

        // The verdict is re-sent for `down_digest_for`, then no more.
        let ticks = Tuning::lan(3).down_digest_ticks();
        let mut sent = 1;
        for _ in 0..ticks + 2 {
            sent += digests(&mut a).len();
        }
        assert_eq!(sent as u64, ticks);
    }

    #[test]
    fn a_stale_verdict_does_not_down_a_restarted_member() {
        let all = members(&["a", "b", "v"]);
        let mut b = core(&all, 1);
        // A verdict about v's previous life (boot 0) and an unknown member.
        let mut old = all[2].0.clone();
        old.boot = 0;
        let mut stranger = all[2].0.clone();
        stranger.name = "w".into();
        let frame = Frame::Downs(vec![
            DownNotice {
                id: old,
                left: false,
            },
            DownNotice {
                id: stranger,
                left: false,
            },
        ]);
        b.handle_plaintext(&frame.encode().unwrap()).unwrap();
        assert!(!b.knows_down("v"));
        assert!(!b.knows_down("w"));
        assert!(b.take_output().events.is_empty());
        assert_eq!(b.active_members(), 2);
    }

    fn notice(name: &str, boot: u64) -> DownNotice {
        DownNotice {
            id: NodeId::with_boot(name, "127.0.0.1:1".parse().unwrap(), boot),
            left: false,
        }
    }

    #[test]
    fn verdicts_expire_and_are_bounded() {
        let mut r = RecentDowns::new(3, StdRng::seed_from_u64(1));
        assert_eq!(r.tick(), None, "nothing recent, no digest");
        r.record(notice("a", 1));
        r.record(notice("b", 1));
        r.record(notice("a", 1));
        let digest = r.tick().unwrap();
        assert_eq!(digest, vec![notice("a", 1), notice("b", 1)]);
        assert!(r.tick().is_some());
        assert!(r.tick().is_some());
        assert_eq!(r.tick(), None, "expired after 3 ticks");

        for i in 0..(MAX_DOWNS_PER_DIGEST as u64 + 5) {
            r.record(notice("n", i));
        }
        let digest = r.tick().unwrap();
        assert_eq!(digest.len(), MAX_DOWNS_PER_DIGEST);
        assert_eq!(digest[0], notice("n", MAX_DOWNS_PER_DIGEST as u64 + 4));

        let mut off = RecentDowns::new(0, StdRng::seed_from_u64(1));
        off.record(notice("a", 1));
        assert_eq!(off.tick(), None, "disabled");
    }
}
