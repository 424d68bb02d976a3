//! The leader's work: the scheduler and the controllers run on the node
//! that leads Raft, and only there.
//!
//! They start when the leadership watch says this node leads and are told
//! to stop as soon as it says otherwise (a new term elsewhere, or no
//! leader known). Stopping waits (bounded) for the old instances before a
//! later term may start new ones, so two schedulers never run at once in
//! one process. Across nodes, a deposed leader's writes fail (they are
//! proposed through Raft, or on etcd fenced on the term's election key),
//! and every write the controllers make is a
//! compare-and-swap on resourceVersion, so a stale instance cannot undo
//! the new leader's work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::controllers::Controller;
use crate::scheduler::run::RunConfig;
use crate::store::Datastore;
use crate::store::raft::Leadership;

/// Runs the leader's work whenever `leadership` says this node leads,
/// until `stop` turns true. `controllers` builds a fresh set per term, and
/// `store` the store they write through (on etcd: fenced on the term).
pub async fn run(
    store: impl Fn() -> Arc<dyn Datastore>,
    mut leadership: watch::Receiver<Leadership>,
    controllers: impl Fn() -> Vec<Arc<dyn Controller>>,
    scheduler: RunConfig,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = leadership.wait_for(|l| l.is_self) => if r.is_err() { return },
        }
        let term = leadership.borrow().term;
        tracing::info!(term, "leading: starting the scheduler and the controllers");
        let (tx, rx) = watch::channel(false);
        let store = store();
        let ctrl = crate::controllers::runner::run(store.clone(), controllers(), rx.clone());
        let sched = tokio::spawn(crate::scheduler::run::run(
            store.clone(),
            scheduler.clone(),
            rx,
        ));
        let stopped = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            r = leadership.wait_for(|l| !l.is_self) => r.is_err(),
        };
        tracing::info!(
            term,
            "no longer leading: stopping the scheduler and the controllers"
        );
        let _ = tx.send(true);
        if tokio::time::timeout(Duration::from_secs(5), ctrl)
            .await
            .is_err()
        {
            tracing::warn!("controllers did not stop within 5 s");
        }
        match tokio::time::timeout(Duration::from_secs(5), sched).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "scheduler"),
            Err(_) => tracing::warn!("the scheduler did not stop within 5 s"),
            _ => {}
        }
        if stopped {
            return;
        }
    }
}
