//! The gossip state machine without IO: foca plus metadata plus events.
//!
//! [`GossipCore`] takes opened datagrams, fired timers and commands, and
//! leaves its effects in an [`Output`]: plaintext frames to send (the caller
//! seals them), timers to schedule (relative delays, in foca's order) and
//! [`MemberEvent`]s. The tokio runtime and the simulator both drive it, so
//! the logic the benchmark measures is the logic the daemon runs.
//!
//! Guarantees: a member is reported `Joined` only once it is alive and its
//! metadata for its current boot is known; `Down`/`Left`/`Suspect`/`Refuted`
//! are reported only for members that were `Joined`. Every verdict this
//! member learns is re-sent in down digests for a while ([`super::downs`]),
//! so members the epidemic missed learn it within ticks, not after their
//! own probe of the dead member. A malformed frame or
//! foca packet is an error for the caller to count; state stays consistent.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, State, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::config::{FOCA_MAX_PACKET, Tuning};
use super::downs::{DownNotice, MAX_DOWNS_PER_DIGEST, RecentDowns};
use super::frame::{Frame, FrameError};
use super::member::{Member, MemberEvent, MemberState, NodeId};
use super::meta::{MetaError, MetaHandler, MetaRecord, NodeMeta, SharedBook};

/// Why the core refused an input.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("bad gossip frame: {0}")]
    Frame(#[from] FrameError),
    #[error("foca refused: {0}")]
    Foca(#[from] foca::Error),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("metadata names node {meta} but this member is {node}")]
    NameMismatch { node: String, meta: String },
}

/// Effects of one or more inputs, drained with [`GossipCore::take_output`].
#[derive(Debug, Default)]
pub struct Output {
    /// Plaintext frames and their destination.
    pub packets: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to fire after the delay, in this order.
    pub timers: Vec<(Duration, Timer<NodeId>)>,
    pub events: Vec<MemberEvent>,
}

#[derive(Debug)]
struct Tracked {
    id: NodeId,
    state: MemberState,
    /// Whether `Joined` was reported for the current boot.
    announced: bool,
}

type FocaInstance = Foca<NodeId, PostcardCodec, StdRng, MetaHandler>;

/// Most metadata requests sent per maintenance tick.
const META_REQUESTS_PER_TICK: usize = 16;

/// One gossip member's protocol state.
pub struct GossipCore {
    foca: FocaInstance,
    rt: AccumulatingRuntime<NodeId>,
    book: SharedBook,
    me: MetaRecord,
    tracked: HashMap<String, Tracked>,
    leaving: HashSet<(String, u64)>,
    seeds: Vec<SocketAddr>,
    downs: RecentDowns,
    out: Output,
}

impl std::fmt::Debug for GossipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipCore")
            .field("id", self.foca.identity())
            .field("members", &self.tracked.len())
            .finish_non_exhaustive()
    }
}

impl GossipCore {
    /// A member with identity `id` and metadata `meta` (names must match).
    pub fn new(
        id: NodeId,
        meta: NodeMeta,
        tuning: &Tuning,
        mut rng: StdRng,
        seeds: Vec<SocketAddr>,
    ) -> Result<Self, CoreError> {
        let downs = RecentDowns::new(
            tuning.down_digest_ticks(),
            StdRng::seed_from_u64(rng.random()),
        );
        if meta.name != id.name {
            return Err(CoreError::NameMismatch {
                node: id.name,
                meta: meta.name,
            });
        }
        let book = SharedBook::default();
        let me = MetaRecord {
            name: id.name.clone(),
            boot: id.boot,
            version: 1,
            meta,
        };
        let foca = Foca::with_custom_broadcast(
            id,
            tuning.foca_config(),
            rng,
            PostcardCodec,
            MetaHandler::new(book.clone()),
        );
        let mut core = Self {
            foca,
            rt: AccumulatingRuntime::new(),
            book,
            me,
            tracked: HashMap::new(),
            leaving: HashSet::new(),
            seeds,
            downs,
            out: Output::default(),
        };
        core.publish_own()?;
        Ok(core)
    }

    /// The local identity.
    pub fn identity(&self) -> &NodeId {
        self.foca.identity()
    }

    /// Announces to every seed (a no-op without seeds).
    pub fn join(&mut self) -> Result<(), CoreError> {
        for seed in self.seeds.clone() {
            if seed != self.identity().addr {
                self.foca.announce(NodeId::seed(seed), &mut self.rt)?;
            }
        }
        self.drain();
        Ok(())
    }

    /// Seeds the membership with known-alive members and their metadata
    /// without any traffic (simulations start from a converged cluster).
    pub fn preload(
        &mut self,
        members: impl IntoIterator<Item = (NodeId, MetaRecord)>,
    ) -> Result<(), CoreError> {
        let mut ids = Vec::new();
        {
            let mut book = self.book.lock();
            for (id, record) in members {
                if id != *self.identity() {
                    book.offer(record);
                    ids.push(foca::Member::alive(id));
                }
            }
        }
        self.foca.apply_many(ids.into_iter(), false, &mut self.rt)?;
        self.drain();
        Ok(())
    }

    /// Handles one opened datagram.
    pub fn handle_plaintext(&mut self, plain: &[u8]) -> Result<(), CoreError> {
        let result = match Frame::decode(plain)? {
            Frame::Foca(data) => self
                .foca
                .handle_data(data, &mut self.rt)
                .map_err(CoreError::from),
            Frame::MetaRequest { reply_to } => self.push(reply_to, &Frame::Meta(self.me.clone())),
            Frame::Meta(record) => {
                self.book.lock().offer(record);
                Ok(())
            }
            Frame::Leave { name, boot } => self.peer_left(name, boot),
            Frame::Downs(downs) => self.apply_downs(downs),
        };
        self.drain();
        result
    }

    /// Handles a timer the runtime scheduled from an earlier [`Output`].
    pub fn handle_timer(&mut self, timer: Timer<NodeId>) -> Result<(), CoreError> {
        let result = self.foca.handle_timer(timer, &mut self.rt);
        self.drain();
        Ok(result?)
    }

    /// Periodic housekeeping: re-announce while alone, ask members whose
    /// metadata is missing, report suspicion changes, send a down digest.
    pub fn maintain(&mut self) -> Result<(), CoreError> {
        self.spread_downs()?;
        if self.foca.num_members() == 0 {
            self.join()?;
        }
        let me = self.identity().addr;
        let missing: Vec<SocketAddr> = self
            .tracked
            .values()
            .filter(|t| is_active(t.state) && !t.announced)
            .take(META_REQUESTS_PER_TICK)
            .map(|t| t.id.addr)
            .collect();
        for addr in missing {
            self.push(addr, &Frame::MetaRequest { reply_to: me })?;
        }
        let states: Vec<(NodeId, State)> = self
            .foca
            .iter_members()
            .map(|m| (m.id().clone(), m.state()))
            .collect();
        for (id, state) in states {
            let Some(t) = self.tracked.get_mut(&id.name) else {
                continue;
            };
            if t.id != id || !t.announced {
                continue;
            }
            match (t.state, state) {
                (MemberState::Alive, State::Suspect) => {
                    t.state = MemberState::Suspect;
                    self.out.events.push(MemberEvent::Suspect(id.name));
                }
                (MemberState::Suspect, State::Alive) => {
                    t.state = MemberState::Alive;
                    self.out.events.push(MemberEvent::Refuted(id.name));
                }
                _ => {}
            }
        }
        self.drain();
        Ok(())
    }

    /// The down-digest part of [`Self::maintain`], one maintenance tick:
    /// sends the recent verdicts to one random live member, if any.
    pub fn spread_downs(&mut self) -> Result<(), CoreError> {
        let Some(mut digest) = self.downs.tick() else {
            return Ok(());
        };
        let live = self.foca.num_members();
        if live == 0 {
            return Ok(());
        }
        let pick = self.downs.rng.random_range(0..live);
        let Some(to) = self.foca.iter_members().nth(pick).map(|m| m.id().addr) else {
            return Ok(());
        };
        // Drops the oldest verdicts if long names make the digest too big.
        digest.truncate(MAX_DOWNS_PER_DIGEST);
        while !digest.is_empty() {
            let frame = Frame::Downs(digest.clone()).encode()?;
            if frame.len() <= FOCA_MAX_PACKET + 1 {
                self.out.packets.push((to, frame));
                break;
            }
            digest.pop();
        }
        Ok(())
    }

    /// Replaces the local metadata and starts disseminating it.
    pub fn set_meta(&mut self, meta: NodeMeta) -> Result<(), CoreError> {
        if meta.name != self.me.name {
            return Err(CoreError::NameMismatch {
                node: self.me.name.clone(),
                meta: meta.name,
            });
        }
        self.me.version += 1;
        self.me.meta = meta;
        self.publish_own()?;
        if self.foca.num_members() > 0 {
            self.foca.broadcast(&mut self.rt)?;
        }
        self.drain();
        Ok(())
    }

    /// Tells every live member we leave, then declares ourselves down.
    pub fn leave(&mut self) -> Result<(), CoreError> {
        let frame = Frame::Leave {
            name: self.me.name.clone(),
            boot: self.me.boot,
        };
        let targets: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in targets {
            self.push(addr, &frame)?;
        }
        self.foca.leave_cluster(&mut self.rt)?;
        self.drain();
        Ok(())
    }

    /// The local member followed by every member whose metadata is known.
    pub fn members(&self) -> Vec<Member> {
        let book = self.book.lock();
        let mut all = vec![Member {
            name: self.me.name.clone(),
            meta: self.me.meta.clone(),
            state: MemberState::Alive,
            addr: self.identity().addr,
        }];
        let mut others: Vec<Member> = self
            .tracked
            .values()
            .filter(|t| t.announced)
            .filter_map(|t| {
                let record = book.get(&t.id.name).filter(|r| r.boot == t.id.boot)?;
                Some(Member {
                    name: t.id.name.clone(),
                    meta: record.meta.clone(),
                    state: t.state,
                    addr: t.id.addr,
                })
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(others);
        all
    }

    /// Number of members foca considers active (not counting ourselves).
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// Whether the named member is currently reported down or left.
    pub fn knows_down(&self, name: &str) -> bool {
        self.tracked
            .get(name)
            .is_some_and(|t| matches!(t.state, MemberState::Down | MemberState::Left))
    }

    /// Takes the accumulated effects.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    fn publish_own(&mut self) -> Result<(), CoreError> {
        let bytes = self.me.encode()?;
        self.foca.add_broadcast(&bytes)?;
        Ok(())
    }

    fn push(&mut self, to: SocketAddr, frame: &Frame<'_>) -> Result<(), CoreError> {
        self.out.packets.push((to, frame.encode()?));
        Ok(())
    }

    fn peer_left(&mut self, name: String, boot: u64) -> Result<(), CoreError> {
        let Some(t) = self.tracked.get(&name) else {
            return Ok(());
        };
        if t.id.boot != boot || !is_active(t.state) {
            return Ok(());
        }
        let id = t.id.clone();
        self.leaving.insert((name, boot));
        self.foca.apply_many(
            std::iter::once(foca::Member::new(id, 0, State::Down)),
            true,
            &mut self.rt,
        )?;
        Ok(())
    }

    /// Applies a peer's down digest: each verdict about an identity this
    /// member tracks as active becomes a foca `Down` update (re-broadcast).
    fn apply_downs(&mut self, downs: Vec<DownNotice>) -> Result<(), CoreError> {
        let mut updates = Vec::new();
        for notice in downs.into_iter().take(MAX_DOWNS_PER_DIGEST) {
            let tracked = self
                .tracked
                .get(&notice.id.name)
                .is_some_and(|t| t.id == notice.id && is_active(t.state));
            if !tracked {
                continue;
            }
            if notice.left {
                self.leaving
                    .insert((notice.id.name.clone(), notice.id.boot));
            }
            updates.push(foca::Member::new(notice.id, 0, State::Down));
        }
        if !updates.is_empty() {
            self.foca
                .apply_many(updates.into_iter(), true, &mut self.rt)?;
        }
        Ok(())
    }

    /// Moves foca's effects and fresh metadata into `out`.
    fn drain(&mut self) {
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => self.member_up(id),
                OwnedNotification::MemberDown(id) => self.member_down(&id),
                OwnedNotification::Rename(old, new) => {
                    if old.name != new.name {
                        self.member_down(&old);
                        self.member_up(new);
                    } else if let Some(t) = self.tracked.get_mut(&new.name)
                        && t.id == old
                    {
                        let restarted = t.id.boot != new.boot;
                        t.id = new;
                        if restarted {
                            t.announced = false;
                            let name = t.id.name.clone();
                            self.try_announce(&name);
                        }
                    }
                }
                _ => {}
            }
        }
        let fresh = self.book.lock().take_fresh();
        for record in fresh {
            if record.name == self.me.name {
                continue;
            }
            let Some(t) = self.tracked.get(&record.name) else {
                continue;
            };
            if t.id.boot != record.boot || !is_active(t.state) {
                continue;
            }
            if t.announced {
                self.out.events.push(MemberEvent::Updated(record.meta));
            } else {
                self.try_announce(&record.name);
            }
        }
        while let Some((to, data)) = self.rt.to_send() {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(0);
            frame.extend_from_slice(&data);
            self.out.packets.push((to.addr, frame));
        }
        while let Some(timer) = self.rt.to_schedule() {
            self.out.timers.push(timer);
        }
    }

    fn member_up(&mut self, id: NodeId) {
        if id.name.is_empty() {
            return;
        }
        let name = id.name.clone();
        match self.tracked.get_mut(&name) {
            Some(t) if is_active(t.state) && (t.id.boot, t.id.renewal) > (id.boot, id.renewal) => {
                return;
            }
            Some(t) => {
                if t.id.boot != id.boot || !is_active(t.state) {
                    t.announced = false;
                }
                t.id = id;
                t.state = MemberState::Alive;
            }
            None => {
                self.tracked.insert(
                    name.clone(),
                    Tracked {
                        id,
                        state: MemberState::Alive,
                        announced: false,
                    },
                );
            }
        }
        self.try_announce(&name);
    }

    fn member_down(&mut self, id: &NodeId) {
        let Some(t) = self.tracked.get_mut(&id.name) else {
            return;
        };
        if t.id != *id || !is_active(t.state) {
            return;
        }
        let left = self.leaving.remove(&(id.name.clone(), id.boot));
        self.downs.record(DownNotice {
            id: id.clone(),
            left,
        });
        t.state = if left {
            MemberState::Left
        } else {
            MemberState::Down
        };
        if t.announced {
            let name = id.name.clone();
            self.out.events.push(if left {
                MemberEvent::Left(name)
            } else {
                MemberEvent::Down(name)
            });
        }
    }

    /// Reports `Joined` if the member is alive and its metadata known,
    /// otherwise asks the member for it.
    fn try_announce(&mut self, name: &str) {
        let Some(t) = self.tracked.get_mut(name) else {
            return;
        };
        if t.announced || !is_active(t.state) {
            return;
        }
        let record = self
            .book
            .lock()
            .get(name)
            .filter(|r| r.boot == t.id.boot)
            .cloned();
        match record {
            Some(record) => {
                t.announced = true;
                self.out.events.push(MemberEvent::Joined(record.meta));
            }
            None => {
                let to = t.id.addr;
                let reply_to = self.foca.identity().addr;
                if let Ok(frame) = (Frame::MetaRequest { reply_to }).encode() {
                    self.out.packets.push((to, frame));
                }
            }
        }
    }
}

fn is_active(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}
