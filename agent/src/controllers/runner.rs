//! Runs [`Controller`]s against a [`Datastore`] (on the Raft leader).
//!
//! For every controller, one task:
//! - lists every primary key ([`Controller::all_keys`]) and watches each of
//!   [`Controller::watches`] from the store revision taken just before the
//!   list, so no change between list and watch is missed;
//! - maps every watch event to primary keys with [`Controller::keys_for`];
//! - keeps a de-duplicating work queue as client-go's `workqueue` does: a
//!   key queued twice before it runs runs once, and a key is never
//!   reconciled twice at the same time (a key queued while it runs is run
//!   again after, once);
//! - runs reconciles (store calls are synchronous) on the blocking pool,
//!   at most [`RunnerConfig::workers`] at once per controller;
//! - re-queues a key after the delay its reconcile returned; on error after
//!   an exponential per-key backoff ([`RunnerConfig::backoff_base`] doubled
//!   per consecutive failure, at most [`RunnerConfig::backoff_max`]), reset
//!   by the next success;
//! - re-lists and re-watches when a watch fails with
//!   [`StoreError::Expired`] (or the store closes the stream), and re-queues
//!   every key each [`RunnerConfig::resync`].
//!
//! Stopping: when `stop` turns true (or its sender is dropped) every task
//! stops taking work at once; reconciles already running finish (they
//! cannot be interrupted) before the returned handle completes, so no
//! controller writes happen after it resolves.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::{Controller, ControllerError};
use crate::api::Resource;
use crate::store::{Datastore, Key, StoreError};

/// The clock reconciles see (injected so tests can move time).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// How the runner schedules work.
#[derive(Clone)]
pub struct RunnerConfig {
    /// Every key is re-queued this often even without changes.
    pub resync: Duration,
    /// First retry delay after a failed reconcile.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Reconciles of one controller running at once (different keys).
    pub workers: usize,
    /// Delay before re-listing after a failed list or watch.
    pub relist_delay: Duration,
    pub clock: Clock,
}

impl fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("resync", &self.resync)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("workers", &self.workers)
            .field("relist_delay", &self.relist_delay)
            .finish_non_exhaustive()
    }
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            resync: Duration::from_secs(30),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_secs(30),
            workers: 4,
            relist_delay: Duration::from_millis(200),
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl RunnerConfig {
    /// The retry delay after `failures` consecutive failures (1 = first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(40);
        self.backoff_base
            .checked_mul(1u32 << shift.min(31))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// Runs every controller until `stop` turns true, with the default
/// configuration.
pub fn run(
    store: Arc<dyn Datastore>,
    controllers: Vec<Arc<dyn Controller>>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    run_with(store, controllers, stop, RunnerConfig::default())
}

/// [`run`] with an explicit configuration.
pub fn run_with(
    store: Arc<dyn Datastore>,
    controllers: Vec<Arc<dyn Controller>>,
    stop: watch::Receiver<bool>,
    config: RunnerConfig,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        for c in controllers {
            let run = ControllerRun {
                store: store.clone(),
                controller: c,
                config: config.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(run.run());
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "controller task failed");
            }
        }
    })
}

/// client-go's workqueue: `dirty` holds keys waiting to run, `processing`
/// keys running; a key is in `queue` at most once and never while running.
#[derive(Debug, Default)]
pub(crate) struct WorkQueue {
    queue: VecDeque<Key>,
    dirty: HashSet<Key>,
    processing: HashSet<Key>,
    /// Keys to add later, earliest time per key.
    delayed: HashMap<Key, Instant>,
    failures: HashMap<Key, u32>,
}

impl WorkQueue {
    pub(crate) fn add(&mut self, key: Key) {
        self.delayed.remove(&key);
        if !self.dirty.insert(key.clone()) {
            return;
        }
        if !self.processing.contains(&key) {
            self.queue.push_back(key);
        }
    }

    pub(crate) fn add_after(&mut self, key: Key, at: Instant) {
        if self.dirty.contains(&key) {
            return;
        }
        let slot = self.delayed.entry(key).or_insert(at);
        if at < *slot {
            *slot = at;
        }
    }

    /// The next key to run, now marked as processing.
    pub(crate) fn pop(&mut self) -> Option<Key> {
        let key = self.queue.pop_front()?;
        self.dirty.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    pub(crate) fn done(&mut self, key: &Key) {
        self.processing.remove(key);
        if self.dirty.contains(key) {
            self.queue.push_back(key.clone());
        }
    }

    /// Moves the delayed keys due at `now` to the queue.
    pub(crate) fn promote(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.add(k);
        }
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Counts a failure of `key`, returning the consecutive count.
    pub(crate) fn fail(&mut self, key: &Key) -> u32 {
        let n = self.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub(crate) fn forget(&mut self, key: &Key) {
        self.failures.remove(key);
    }
}

/// What the watch tasks tell the controller task.
enum Signal {
    Keys(Vec<Key>),
    /// A watch expired or closed: re-list.
    Relist(Resource),
}

struct ControllerRun {
    store: Arc<dyn Datastore>,
    controller: Arc<dyn Controller>,
    config: RunnerConfig,
    stop: watch::Receiver<bool>,
}

type Outcome = (Key, Result<Option<Duration>, ControllerError>);

impl ControllerRun {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        let name = self.controller.name();
        let mut queue = WorkQueue::default();
        let mut running: JoinSet<Outcome> = JoinSet::new();
        'relist: while !self.stopped() {
            let (tx, mut rx) = mpsc::channel::<Signal>(1024);
            // `tx` stays alive here, so `rx` never closes while we run.
            let mut watchers = match self.start(&mut queue, tx.clone()).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(controller = name, error = %e, "controller list failed");
                    if self
                        .pause(self.config.relist_delay, &mut queue, &mut running)
                        .await
                    {
                        break 'relist;
                    }
                    continue 'relist;
                }
            };
            let mut resync = tokio::time::interval_at(
                Instant::now() + self.config.resync,
                self.config.resync.max(Duration::from_millis(1)),
            );
            loop {
                queue.promote(Instant::now());
                while running.len() < self.config.workers.max(1) {
                    let Some(key) = queue.pop() else { break };
                    let store = self.store.clone();
                    let controller = self.controller.clone();
                    let now = (self.config.clock)();
                    running.spawn_blocking(move || {
                        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            controller.reconcile(store.as_ref(), &key, now)
                        }))
                        .unwrap_or_else(|_| {
                            Err(ControllerError::Invalid {
                                controller: controller.name(),
                                key: key_label(&key),
                                reason: "reconcile panicked".into(),
                            })
                        });
                        (key, r)
                    });
                }
                let next_due = queue.next_due();
                tokio::select! {
                    changed = self.stop.changed() => {
                        if changed.is_err() || *self.stop.borrow() {
                            watchers.abort_all();
                            break 'relist;
                        }
                    }
                    signal = rx.recv() => match signal {
                        Some(Signal::Keys(keys)) => keys.into_iter().for_each(|k| queue.add(k)),
                        Some(Signal::Relist(resource)) => {
                            tracing::debug!(controller = name, %resource, "watch expired, re-listing");
                            watchers.abort_all();
                            continue 'relist;
                        }
                        None => {
                            watchers.abort_all();
                            continue 'relist;
                        }
                    },
                    Some(done) = running.join_next(), if !running.is_empty() => {
                        self.finish(done, &mut queue);
                    }
                    _ = resync.tick() => {
                        self.resync(&mut queue).await;
                    }
                    _ = sleep_until(next_due), if next_due.is_some() => {}
                }
            }
        }
        // Let running reconciles finish: no writes after the handle resolves.
        while let Some(done) = running.join_next().await {
            self.finish(done, &mut queue);
        }
        tracing::debug!(controller = name, "controller stopped");
    }

    /// Sleeps `d` while finishing running reconciles; true when stopped.
    async fn pause(
        &mut self,
        d: Duration,
        queue: &mut WorkQueue,
        running: &mut JoinSet<Outcome>,
    ) -> bool {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                changed = self.stop.changed() => {
                    if changed.is_err() || *self.stop.borrow() {
                        return true;
                    }
                }
                Some(done) = running.join_next(), if !running.is_empty() => {
                    self.finish(done, queue);
                }
                _ = tokio::time::sleep_until(until) => return false,
            }
        }
    }

    fn finish(&self, done: Result<Outcome, tokio::task::JoinError>, queue: &mut WorkQueue) {
        let name = self.controller.name();
        let (key, result) = match done {
            Ok(o) => o,
            Err(e) => {
                // Only cancellation (runtime shutdown): panics are caught
                // inside the task and come back with their key.
                tracing::error!(controller = name, error = %e, "reconcile task failed");
                return;
            }
        };
        queue.done(&key);
        match result {
            Ok(None) => queue.forget(&key),
            Ok(Some(after)) => {
                queue.forget(&key);
                queue.add_after(key, Instant::now() + after);
            }
            Err(e) => {
                let n = queue.fail(&key);
                let delay = self.config.backoff(n);
                tracing::warn!(controller = name, error = %e, retry_in = ?delay, "reconcile failed");
                queue.add_after(key, Instant::now() + delay);
            }
        }
    }

    /// Lists every key and starts the watches from the list's revision.
    async fn start(
        &self,
        queue: &mut WorkQueue,
        tx: mpsc::Sender<Signal>,
    ) -> Result<JoinSet<()>, ControllerError> {
        let store = self.store.clone();
        let controller = self.controller.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let rev = store.revision().map_err(|source| ControllerError::Store {
                controller: controller.name(),
                key: "(revision)".into(),
                source,
            })?;
            let keys = controller.all_keys(store.as_ref())?;
            let mut streams = Vec::new();
            for r in controller.watches() {
                let s =
                    store
                        .watch(*r, None, Some(rev))
                        .map_err(|source| ControllerError::Store {
                            controller: controller.name(),
                            key: r.plural().into(),
                            source,
                        })?;
                streams.push((*r, s));
            }
            Ok::<_, ControllerError>((keys, streams))
        })
        .await
        .map_err(|e| ControllerError::Invalid {
            controller: self.controller.name(),
            key: "(list)".into(),
            reason: e.to_string(),
        })??;
        let (keys, streams) = listed;
        keys.into_iter().for_each(|k| queue.add(k));
        let mut watchers = JoinSet::new();
        for (resource, mut stream) in streams {
            let tx = tx.clone();
            let store = self.store.clone();
            let controller = self.controller.clone();
            watchers.spawn(async move {
                loop {
                    let ev = match stream.next().await {
                        Ok(Some(ev)) => ev,
                        Ok(None) | Err(StoreError::Expired { .. }) => break,
                        Err(e) => {
                            tracing::warn!(controller = controller.name(), error = %e, "watch failed");
                            break;
                        }
                    };
                    let (store, controller) = (store.clone(), controller.clone());
                    let keys = tokio::task::spawn_blocking(move || {
                        controller.keys_for(store.as_ref(), &ev)
                    })
                    .await
                    .unwrap_or_default();
                    if !keys.is_empty() && tx.send(Signal::Keys(keys)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Signal::Relist(resource)).await;
            });
        }
        Ok(watchers)
    }

    async fn resync(&self, queue: &mut WorkQueue) {
        let store = self.store.clone();
        let controller = self.controller.clone();
        match tokio::task::spawn_blocking(move || controller.all_keys(store.as_ref())).await {
            Ok(Ok(keys)) => keys.into_iter().for_each(|k| queue.add(k)),
            Ok(Err(e)) => tracing::warn!(error = %e, "resync list failed"),
            Err(e) => tracing::warn!(error = %e, "resync task failed"),
        }
    }
}

/// `ns/name` (or `name`) for messages.
pub fn key_label(key: &Key) -> String {
    match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Keys in a stable order (helper for controllers' `all_keys`).
pub fn sorted(keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
    let set: BTreeMap<Key, ()> = keys.into_iter().map(|k| (k, ())).collect();
    set.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> Key {
        Key::namespaced(Resource::ReplicaSets, "default", n)
    }

    #[test]
    fn a_key_queued_twice_runs_once() {
        let mut q = WorkQueue::default();
        q.add(k("a"));
        q.add(k("a"));
        q.add(k("b"));
        assert_eq!(q.pop(), Some(k("a")));
        assert_eq!(q.pop(), Some(k("b")));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_running_key_is_not_handed_out_again_until_done() {
        let mut q = WorkQueue::default();
        q.add(k("a"));
        assert_eq!(q.pop(), Some(k("a")));
        q.add(k("a"));
        q.add(k("a"));
        assert_eq!(q.pop(), None, "a is running");
        q.done(&k("a"));
        assert_eq!(q.pop(), Some(k("a")));
        q.done(&k("a"));
        assert_eq!(q.pop(), None, "ran once more, not twice");
    }

    #[test]
    fn delayed_keys_come_due_and_keep_the_earliest_time() {
        let mut q = WorkQueue::default();
        let t0 = Instant::now();
        q.add_after(k("a"), t0 + Duration::from_secs(10));
        q.add_after(k("a"), t0 + Duration::from_secs(5));
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(5)));
        q.promote(t0 + Duration::from_secs(1));
        assert!(q.is_empty());
        q.promote(t0 + Duration::from_secs(5));
        assert_eq!(q.pop(), Some(k("a")));
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn backoff_doubles_from_base_and_is_capped() {
        let c = RunnerConfig::default();
        assert_eq!(c.backoff(1), Duration::from_millis(5));
        assert_eq!(c.backoff(2), Duration::from_millis(10));
        assert_eq!(c.backoff(5), Duration::from_millis(80));
        assert_eq!(c.backoff(30), Duration::from_secs(30));
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(30));
    }
}
