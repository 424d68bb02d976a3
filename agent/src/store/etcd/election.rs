//! Who runs the scheduler and the controllers when the store is etcd:
//! etcd's Election API (`<prefix>/_leader`), one campaign per node, each on
//! a lease of its own.
//!
//! - A node campaigns with a fresh lease and keeps it alive every third of
//!   its TTL. The campaign returns when this node's key is the oldest:
//!   then it leads, with the key's create revision as its term.
//! - It stops leading when a keep-alive has not succeeded for a whole TTL
//!   (etcd has expired the lease, or will, and someone else may lead), when
//!   etcd reports the lease gone, or on [`Election::resign`] (a clean stop:
//!   the key is deleted at once and the next node takes over without
//!   waiting for the TTL). A killed leader is replaced one TTL after its
//!   last keep-alive.
//! - Every write of the leader's workers is fenced on the election key
//!   ([`super::EtcdStore::fenced`]): once the key is gone, etcd refuses
//!   them, even if this node has not noticed yet.
//! - Other nodes learn the leader by observing the election; `leadership()`
//!   reports it like the Raft store's leadership watch.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::EtcdStore;
use super::client::Conn;
use super::store::Fence;
use crate::cluster::node::raft_id;
use crate::store::raft::Leadership;

#[derive(Debug, Default)]
struct State {
    /// Ours while we lead.
    fence: Option<Fence>,
    /// The leader last observed: (name, term).
    observed: Option<(String, i64)>,
}

/// A node's part in the election.
#[derive(Debug)]
pub struct Election {
    name: String,
    state: Arc<Mutex<State>>,
    tx: Arc<watch::Sender<Leadership>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    handle: tokio::runtime::Handle,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes what `state` says.
fn publish(tx: &watch::Sender<Leadership>, state: &State) {
    let l = match (&state.fence, &state.observed) {
        (Some(f), observed) => Leadership {
            term: u64::try_from(f.rev).unwrap_or(0),
            leader: observed.as_ref().map(|(n, _)| raft_id(n)),
            is_self: true,
        },
        (None, Some((name, term))) => Leadership {
            term: u64::try_from(*term).unwrap_or(0),
            leader: Some(raft_id(name)),
            is_self: false,
        },
        (None, None) => Leadership::default(),
    };
    tx.send_if_modified(|cur| {
        let changed = *cur != l;
        *cur = l.clone();
        changed
    });
}

impl Election {
    /// Starts campaigning as `node` with leases of `ttl` (whole seconds, at
    /// least 1; etcd may raise it to its minimum).
    pub fn start(store: &EtcdStore, node: &str, ttl: Duration) -> Election {
        let conn = store.inner.conn.clone();
        let handle = store.inner.handle.clone();
        let name = format!("{}/_leader", store.prefix());
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, _) = watch::channel(Leadership::default());
        let tx = Arc::new(tx);
        let (stop, stop_rx) = watch::channel(false);
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(1);
        let campaign = handle.spawn(campaign_loop(
            conn.clone(),
            name.clone(),
            node.to_string(),
            ttl_secs,
            state.clone(),
            tx.clone(),
            stop_rx.clone(),
        ));
        let observe = handle.spawn(observe_loop(
            conn,
            name.clone(),
            state.clone(),
            tx.clone(),
            stop_rx,
        ));
        Election {
            name,
            state,
            tx,
            stop,
            tasks: Mutex::new(vec![campaign, observe]),
            handle,
        }
    }

    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.tx.subscribe()
    }

    pub fn is_leader(&self) -> bool {
        lock(&self.state).fence.is_some()
    }

    /// The fence of the current term, while this node leads.
    pub fn fence(&self) -> Option<Fence> {
        lock(&self.state).fence.clone()
    }

    /// The leader's node name and term, as last observed (or this node).
    pub fn leader(&self) -> Option<(String, i64)> {
        lock(&self.state).observed.clone()
    }

    /// The election's key prefix.
    pub fn key(&self) -> &str {
        &self.name
    }

    /// Stops campaigning; a leader resigns (its key is deleted, so the next
    /// node takes over at once). Waits up to 3 s.
    pub async fn resign(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let handle = self.handle.clone();
        let waited = handle.spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(3), waited).await;
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// One keep-alive round trip.
async fn keep_alive(conn: &Conn, lease: i64) -> Result<(), String> {
    let mut c = conn.client.clone();
    // Sends one keep-alive and checks its answer (an error when etcd no
    // longer has the lease).
    let (_keeper, _stream) = c.lease_keep_alive(lease).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Keeps `lease` alive until it is lost (returns) or `stop`: a keep-alive
/// every third of the TTL, and after a failed one (a member down, etcd
/// electing a leader) another every 100 ms, each bounded to 500 ms, so a
/// dead endpoint or an etcd election costs a fraction of the TTL.
async fn hold(conn: &Conn, lease: i64, ttl: i64, stop: &mut watch::Receiver<bool>) {
    let period = Duration::from_millis(u64::try_from(ttl).unwrap_or(1) * 1000 / 3);
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    let attempt = period.min(Duration::from_millis(500));
    let mut last_ok = Instant::now();
    let mut failing = false;
    loop {
        let pause = if failing {
            Duration::from_millis(100)
        } else {
            period
        };
        if sleep_or_stop(pause, stop).await {
            return;
        }
        let sent = Instant::now();
        failing = true;
        match tokio::time::timeout(attempt, keep_alive(conn, lease)).await {
            Ok(Ok(())) => {
                last_ok = sent;
                failing = false;
            }
            Ok(Err(e)) if e.contains("lease not found") => {
                tracing::warn!(lease, "leader election: etcd expired this node's lease");
                return;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "lease keep-alive failed"),
            Err(_) => tracing::debug!("lease keep-alive timed out"),
        }
        if last_ok.elapsed() >= ttl {
            tracing::warn!(
                lease,
                "leader election: no keep-alive for a whole TTL; lease lost"
            );
            return;
        }
    }
}

async fn campaign_loop(
    conn: Conn,
    name: String,
    node: String,
    ttl: i64,
    state: Arc<Mutex<State>>,
    tx: Arc<watch::Sender<Leadership>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(100);
    while !*stop.borrow() {
        // etcd may grant more than asked (its minimum TTL): keep-alives
        // follow what it granted.
        let (lease, granted) = match conn.client.clone().lease_grant(ttl, None).await {
            Ok(l) => (l.id(), l.ttl().max(1)),
            Err(e) => {
                tracing::debug!(error = %e, "leader election: lease grant failed");
                if sleep_or_stop(pause, &mut stop).await {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        let mut hold_stop = stop.clone();
        let holding = hold(&conn, lease, granted, &mut hold_stop);
        tokio::pin!(holding);
        // Campaign until elected or the lease is lost. A failed or timed
        // out campaign is repeated with the same lease: etcd keeps this
        // node's key, so it keeps its place in the queue.
        let won = loop {
            let mut client = conn.long.clone();
            tokio::select! {
                _ = &mut holding => break None,
                r = client.campaign(name.clone(), node.clone(), lease) => match r {
                    Ok(mut resp) => break resp.take_leader(),
                    Err(e) => tracing::debug!(error = %e, "leader election: campaign interrupted; again"),
                },
            }
            tokio::select! {
                _ = &mut holding => break None,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        };
        if let Some(key) = won {
            let fence = Fence {
                key: key.key().to_vec(),
                rev: key.rev(),
            };
            tracing::info!(term = fence.rev, "leader election: this node leads");
            {
                let mut s = lock(&state);
                s.fence = Some(fence);
                s.observed = Some((node.clone(), key.rev()));
                publish(&tx, &s);
            }
            (&mut holding).await;
            {
                let mut s = lock(&state);
                s.fence = None;
                if s.observed.as_ref().is_some_and(|(n, _)| *n == node) {
                    s.observed = None;
                }
                publish(&tx, &s);
            }
            tracing::info!(
                term = key.rev(),
                "leader election: this node no longer leads"
            );
            if *stop.borrow() {
                let mut c = conn.client.clone();
                let opts = etcd_client::ResignOptions::new().with_leader(key);
                let _ = tokio::time::timeout(Duration::from_secs(2), c.resign(Some(opts))).await;
            }
        }
        // Let the lease go: its key (if any) goes with it.
        let mut c = conn.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), c.lease_revoke(lease)).await;
    }
}

async fn observe_loop(
    conn: Conn,
    name: String,
    state: Arc<Mutex<State>>,
    tx: Arc<watch::Sender<Leadership>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let mut c = conn.long.clone();
        let stream = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = c.observe(name.clone()) => r,
        };
        if let Ok(mut stream) = stream {
            loop {
                let msg = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    m = stream.message() => m,
                };
                let Ok(Some(resp)) = msg else { break };
                if let Some(kv) = resp.kv() {
                    let leader = String::from_utf8_lossy(kv.value()).into_owned();
                    let mut s = lock(&state);
                    s.observed = Some((leader, kv.create_revision()));
                    publish(&tx, &s);
                }
            }
        }
        if sleep_or_stop(Duration::from_millis(200), &mut stop).await {
            return;
        }
    }
}
