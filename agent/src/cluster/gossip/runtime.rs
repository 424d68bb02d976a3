//! The tokio side: one task per member owning the UDP socket, the
//! [`GossipCore`] and a timer heap.
//!
//! The task waits on the socket, the command channel, the earliest foca
//! timer and a maintenance interval; nothing polls in a loop. Timers due at
//! the same instant fire in foca's required order (by timer kind, then
//! submission). Every received datagram is counted: it is `accepted`, or
//! dropped as `dropped_auth` (did not open under the cluster key: garbage,
//! wrong key, forged, truncated, oversized) or `dropped_decode` (opened but
//! was not a valid frame or foca packet). Dropping the [`Gossip`] handle
//! aborts the task without a leave (what a crash looks like to peers);
//! [`Gossip::leave`] is the graceful way out.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};

use foca::Timer;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::config::{GossipConfig, MAX_DATAGRAM};
use super::core::{CoreError, GossipCore, Output};
use super::member::{Member, MemberEvent, NodeId};
use super::meta::NodeMeta;
use super::seal::Sealer;

/// Why gossip could not start or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("bind gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gossip advertise address {0} is unspecified; set an advertise address")]
    UnspecifiedAdvertise(SocketAddr),
    #[error("gossip member {name}: {source}")]
    Core { name: String, source: CoreError },
    #[error("gossip task of {0} has stopped")]
    Stopped(String),
}

/// Datagram counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub received: u64,
    pub accepted: u64,
    pub dropped_auth: u64,
    pub dropped_decode: u64,
    pub sent: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    accepted: AtomicU64,
    dropped_auth: AtomicU64,
    dropped_decode: AtomicU64,
    sent: AtomicU64,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, AtomicOrdering::Relaxed);
    }

    fn snapshot(&self) -> GossipStats {
        let get = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        GossipStats {
            received: get(&self.received),
            accepted: get(&self.accepted),
            dropped_auth: get(&self.dropped_auth),
            dropped_decode: get(&self.dropped_decode),
            sent: get(&self.sent),
            received_bytes: get(&self.received_bytes),
            sent_bytes: get(&self.sent_bytes),
        }
    }
}

enum Command {
    SetMeta(NodeMeta, oneshot::Sender<Result<(), CoreError>>),
    Leave(oneshot::Sender<Result<(), CoreError>>),
}

/// A running gossip member.
#[derive(Debug)]
pub struct Gossip {
    name: String,
    addr: SocketAddr,
    events: broadcast::Sender<MemberEvent>,
    members: Arc<RwLock<Vec<Member>>>,
    counters: Arc<Counters>,
    commands: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

impl Gossip {
    /// Binds the socket, starts the member task and announces to the seeds.
    pub async fn start(cfg: GossipConfig) -> Result<Self, GossipError> {
        let socket = UdpSocket::bind(cfg.bind)
            .await
            .map_err(|source| GossipError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let bound = socket.local_addr().map_err(|source| GossipError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let addr = cfg.advertise.unwrap_or(bound);
        if addr.ip().is_unspecified() {
            return Err(GossipError::UnspecifiedAdvertise(addr));
        }
        let core_err = |source| GossipError::Core {
            name: cfg.name.clone(),
            source,
        };
        let id = NodeId::new(cfg.name.clone(), addr);
        let rng: StdRng = rand::make_rng();
        let mut core = GossipCore::new(id, cfg.meta.clone(), &cfg.tuning, rng, cfg.seeds.clone())
            .map_err(core_err)?;
        core.join().map_err(core_err)?;

        let (events, _) = broadcast::channel(1024);
        let members = Arc::new(RwLock::new(core.members()));
        let counters = Arc::new(Counters::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let task = MemberTask {
            core,
            socket,
            sealer: Sealer::new(&cfg.cluster_key, MAX_DATAGRAM),
            timers: BinaryHeap::new(),
            seq: 0,
            events: events.clone(),
            members: members.clone(),
            counters: counters.clone(),
            maintenance: cfg.tuning.maintenance_interval,
        };
        let task = tokio::spawn(task.run(rx));
        Ok(Self {
            name: cfg.name,
            addr,
            events,
            members,
            counters,
            commands,
            task: Some(task),
        })
    }

    /// The address peers reach this member at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Membership changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    /// This member first, then every member whose metadata is known.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn stats(&self) -> GossipStats {
        self.counters.snapshot()
    }

    /// Replaces this node's metadata; peers see `Updated`.
    pub async fn set_meta(&self, meta: NodeMeta) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::SetMeta(meta, tx), rx).await
    }

    /// Announces a graceful leave (peers see `Left`) and stops the task.
    pub async fn leave(mut self) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        let result = self.command(Command::Leave(tx), rx).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }

    async fn command(
        &self,
        cmd: Command,
        rx: oneshot::Receiver<Result<(), CoreError>>,
    ) -> Result<(), GossipError> {
        let stopped = || GossipError::Stopped(self.name.clone());
        self.commands.send(cmd).map_err(|_| stopped())?;
        rx.await
            .map_err(|_| stopped())?
            .map_err(|source| GossipError::Core {
                name: self.name.clone(),
                source,
            })
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A pending foca timer; ordered by deadline, then foca's timer order,
/// then submission.
struct Pending {
    at: Instant,
    timer: Timer<NodeId>,
    seq: u64,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap and the earliest must pop first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, &other.timer, other.seq).cmp(&(self.at, &self.timer, self.seq))
    }
}

struct MemberTask {
    core: GossipCore,
    socket: UdpSocket,
    sealer: Sealer,
    timers: BinaryHeap<Pending>,
    seq: u64,
    events: broadcast::Sender<MemberEvent>,
    members: Arc<RwLock<Vec<Member>>>,
    counters: Arc<Counters>,
    maintenance: std::time::Duration,
}

impl MemberTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut tick = tokio::time::interval(self.maintenance);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.flush().await;
        loop {
            let next = self.timers.peek().map(|p| p.at);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((len, _from)) = received {
                        self.receive(&buf[..len]);
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::SetMeta(meta, reply)) => {
                        let _ = reply.send(self.core.set_meta(meta));
                        self.publish_members();
                    }
                    Some(Command::Leave(reply)) => {
                        let result = self.core.leave();
                        self.flush().await;
                        let _ = reply.send(result);
                        return;
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.fire_due_timers();
                }
                _ = tick.tick() => {
                    if let Err(e) = self.core.maintain() {
                        tracing::debug!(error = %e, "gossip maintenance");
                    }
                }
            }
            self.flush().await;
        }
    }

    fn receive(&mut self, datagram: &[u8]) {
        Counters::add(&self.counters.received, 1);
        Counters::add(&self.counters.received_bytes, datagram.len() as u64);
        let plain = match self.sealer.open(datagram) {
            Ok(plain) => plain,
            Err(e) => {
                Counters::add(&self.counters.dropped_auth, 1);
                tracing::debug!(error = %e, "gossip datagram dropped");
                return;
            }
        };
        match self.core.handle_plaintext(&plain) {
            Ok(()) => Counters::add(&self.counters.accepted, 1),
            Err(e) => {
                Counters::add(&self.counters.dropped_decode, 1);
                tracing::debug!(error = %e, "gossip frame dropped");
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|p| p.at <= now) {
            if let Some(p) = self.timers.pop()
                && let Err(e) = self.core.handle_timer(p.timer)
            {
                tracing::debug!(error = %e, "gossip timer");
            }
        }
    }

    async fn flush(&mut self) {
        let Output {
            packets,
            timers,
            events,
        } = self.core.take_output();
        for (to, plain) in packets {
            match self.sealer.seal(&plain) {
                Ok(datagram) => {
                    if self.socket.send_to(&datagram, to).await.is_ok() {
                        Counters::add(&self.counters.sent, 1);
                        Counters::add(&self.counters.sent_bytes, datagram.len() as u64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, %to, "gossip frame not sealed"),
            }
        }
        let now = Instant::now();
        for (after, timer) in timers {
            self.seq += 1;
            self.timers.push(Pending {
                at: now + after,
                timer,
                seq: self.seq,
            });
        }
        if !events.is_empty() {
            self.publish_members();
            for event in events {
                let _ = self.events.send(event);
            }
        }
    }

    fn publish_members(&self) {
        let members = self.core.members();
        match self.members.write() {
            Ok(mut m) => *m = members,
            Err(e) => *e.into_inner() = members,
        }
    }
}
