//! The Raft store against the `Datastore` contract and under faults:
//! in-process nodes over the in-memory transport, redb files in temp dirs.
//! The same conformance code (`common/store_conformance.rs`) runs against
//! `LocalStore` and `RaftStore` (and `EtcdStore` in `store_etcd.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::cluster::transport::{NodeId, RpcKind};
use herd_agent::store::local::LocalStore;
use herd_agent::store::raft::{MemRouter, RaftConfig, RaftStore};
use herd_agent::store::{Datastore, EventType, Key, StoreError, resource_version};
use serde_json::{Value, json};
use store_conformance::{AfterReopen, cm, conformance, key, rt};

#[path = "common/store_conformance.rs"]
mod store_conformance;

/// Polls `f` until it returns `Some` or `within` passes.
fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(5));
    }
}

#[test]
fn local_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    conformance(
        || {
            LocalStore::open(
                &dir.path().join("store.redb"),
                &dir.path().join("run/s.redb"),
            )
            .unwrap()
        },
        AfterReopen::Expired,
    );
}

fn config(dir: &Path, id: NodeId) -> RaftConfig {
    let mut c = RaftConfig::new(id, &format!("n{id}"), dir.join(format!("n{id}")));
    c.write_timeout = Duration::from_secs(2);
    c
}

#[test]
fn raft_store_conformance_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::new();
    conformance(
        || {
            let s = RaftStore::open(config(dir.path(), 1), router.transport("n1")).unwrap();
            router.register("n1", s.handler());
            rt().block_on(s.initialize_single()).unwrap();
            poll(Duration::from_secs(5), "leader", || {
                s.is_leader().then_some(())
            });
            s
        },
        AfterReopen::Expired,
    );
}

/// Nodes `1..=n` in one process over one router.
struct Cluster {
    dir: tempfile::TempDir,
    router: MemRouter,
    nodes: Vec<Option<RaftStore>>,
    tweak: fn(&mut RaftConfig),
}

impl Cluster {
    fn form(n: u64, tweak: fn(&mut RaftConfig)) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            router: MemRouter::new(),
            nodes: Vec::new(),
            tweak,
        };
        for id in 1..=n {
            c.nodes.push(None);
            c.start(id);
        }
        let rt = rt();
        rt.block_on(c.node(1).initialize_single()).unwrap();
        for id in 2..=n {
            rt.block_on(c.node(1).add_learner(id, &format!("n{id}")))
                .unwrap();
        }
        rt.block_on(c.node(1).change_voters((1..=n).collect()))
            .unwrap();
        c
    }

    fn start(&mut self, id: NodeId) {
        let mut cfg = config(self.dir.path(), id);
        (self.tweak)(&mut cfg);
        let addr = cfg.addr.clone();
        let s = RaftStore::open(cfg, self.router.transport(&addr)).unwrap();
        self.router.register(&addr, s.handler());
        self.nodes[(id - 1) as usize] = Some(s);
    }

    fn stop(&mut self, id: NodeId) {
        self.router.unregister(&format!("n{id}"));
        if let Some(s) = self.nodes[(id - 1) as usize].take() {
            s.shutdown();
        }
    }

    fn node(&self, id: NodeId) -> &RaftStore {
        self.nodes[(id - 1) as usize].as_ref().unwrap()
    }

    fn running(&self) -> impl Iterator<Item = &RaftStore> {
        self.nodes.iter().flatten()
    }

    /// The leader that every node in `among` agrees on.
    fn leader(&self, among: &[NodeId], within: Duration) -> NodeId {
        poll(within, "an agreed leader", || {
            let l = self.node(among[0]).leader()?.0;
            let agreed = among
                .iter()
                .all(|i| self.node(*i).leader().map(|x| x.0) == Some(l));
            (agreed && among.contains(&l) && self.node(l).is_leader()).then_some(l)
        })
    }

    /// Every running node holds the same objects at the same revision.
    fn converged(&self, within: Duration) -> (Vec<Value>, u64) {
        poll(within, "replicas to converge", || {
            let mut views = self
                .running()
                .map(|s| s.list(Resource::ConfigMaps, None).unwrap());
            let first = views.next()?;
            views.all(|v| v == first).then_some(first)
        })
    }
}

fn raft_defaults(_: &mut RaftConfig) {}

#[test]
fn three_nodes_forward_writes_converge_and_follower_watches() {
    let c = Cluster::form(3, raft_defaults);
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(5));
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let other = (1..=3).find(|i| *i != leader && *i != follower).unwrap();
    let rt = rt();
    let mut w = c
        .node(other)
        .watch(
            Resource::ConfigMaps,
            None,
            Some(c.node(other).revision().unwrap()),
        )
        .unwrap();
    // A write on a follower is forwarded and readable there at once.
    let a = c.node(follower).create(&key("a"), cm("a", "1")).unwrap();
    let rv = resource_version(&a).unwrap();
    assert_eq!(c.node(follower).get(&key("a")).unwrap(), a);
    // Errors come back as the same variant through the forward.
    assert!(matches!(
        c.node(follower).create(&key("a"), cm("a", "x")),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        c.node(follower)
            .update(&key("a"), cm("a", "x"), Some(rv + 100)),
        Err(StoreError::Conflict { .. })
    ));
    c.node(leader)
        .update(&key("a"), cm("a", "2"), Some(rv))
        .unwrap();
    c.node(other).create(&key("b"), cm("b", "1")).unwrap();
    let (items, revision) = c.converged(Duration::from_secs(5));
    assert_eq!((items.len(), revision), (2, rv + 2));
    // The third node's watch saw every write, in order.
    rt.block_on(async {
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = w.next().await.unwrap().unwrap();
            got.push((e.kind, e.key.name, e.resource_version));
        }
        assert_eq!(
            got,
            vec![
                (EventType::Added, "a".to_string(), rv),
                (EventType::Modified, "a".to_string(), rv + 1),
                (EventType::Added, "b".to_string(), rv + 2),
            ]
        );
    });
    let m = c.node(other).metrics();
    assert_eq!(m.voters, [1, 2, 3].into_iter().collect::<BTreeSet<_>>());
    assert_eq!(m.leader, Some(leader));
}

#[test]
fn leader_killed_new_leader_within_two_seconds() {
    let mut c = Cluster::form(3, raft_defaults);
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(5));
    let mut acked = Vec::new();
    for i in 0..20 {
        let via = (i % 3) + 1;
        let name = format!("w{i}");
        c.node(via).create(&key(&name), cm(&name, "1")).unwrap();
        acked.push(name);
    }
    let rest: Vec<NodeId> = (1..=3).filter(|i| *i != leader).collect();
    let mut leadership = c.node(rest[0]).leadership();
    // The kill: from this instant the leader neither sends nor answers
    // anything; its store is shut down once the survivors have moved on.
    let killed = Instant::now();
    c.router.isolate(&format!("n{leader}"));
    c.router.unregister(&format!("n{leader}"));
    let new = c.leader(&rest, Duration::from_secs(10));
    let failover = killed.elapsed();
    c.stop(leader);
    eprintln!("failover: new leader {new} after {failover:?}");
    // Heartbeat 100 ms, election timeout 300-600 ms: a new leader is
    // normally there in well under a second; 2 s is the issue's goal.
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?}"
    );
    assert!(
        leadership.has_changed().unwrap() || leadership.borrow_and_update().leader == Some(new)
    );
    for name in &acked {
        for id in &rest {
            assert!(c.node(*id).get(&key(name)).is_ok(), "{name} lost on {id}");
        }
    }
    c.node(rest[1])
        .create(&key("after"), cm("after", "1"))
        .unwrap();
    c.converged(Duration::from_secs(5));
}

#[test]
fn isolated_leader_refuses_writes_majority_continues_then_catches_up() {
    let c = Cluster::form(3, |cfg| cfg.write_timeout = Duration::from_secs(1));
    let old = c.leader(&[1, 2, 3], Duration::from_secs(5));
    c.node(old)
        .create(&key("before"), cm("before", "1"))
        .unwrap();
    let rest: Vec<NodeId> = (1..=3).filter(|i| *i != old).collect();
    c.router.isolate(&format!("n{old}"));
    // The minority (the old leader itself) refuses, bounded in time.
    let t = Instant::now();
    let err = c
        .node(old)
        .create(&key("lost"), cm("lost", "1"))
        .unwrap_err();
    // A timeout, not a definite failure: the write may still commit.
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("may still complete"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The majority elects a leader and accepts writes.
    let new = c.leader(&rest, Duration::from_secs(5));
    assert_ne!(new, old);
    for i in 0..5 {
        let name = format!("m{i}");
        c.node(rest[i % 2])
            .create(&key(&name), cm(&name, "1"))
            .unwrap();
    }
    // A follower cut off is refused too.
    c.router.heal();
    c.router
        .isolate(&format!("n{}", rest.iter().find(|i| **i != new).unwrap()));
    let cut = *rest.iter().find(|i| **i != new).unwrap();
    assert!(c.node(cut).create(&key("cut"), cm("cut", "1")).is_err());
    c.router.heal();
    let (items, _) = c.converged(Duration::from_secs(10));
    let names: BTreeSet<String> = items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains("before") && names.contains("m4"),
        "{names:?}"
    );
    assert!(!names.contains("cut"));
    // The old leader's timed-out write never commits: its entry was
    // replaced by the new leader's log.
    assert!(!names.contains("lost"), "{names:?}");
    c.node(old)
        .create(&key("healed"), cm("healed", "1"))
        .unwrap();
}

#[test]
fn restart_every_node_from_disk() {
    let mut c = Cluster::form(3, raft_defaults);
    c.leader(&[1, 2, 3], Duration::from_secs(5));
    for i in 0..10 {
        let name = format!("r{i}");
        c.node(1).create(&key(&name), cm(&name, "1")).unwrap();
    }
    let (before, rev) = c.converged(Duration::from_secs(5));
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    c.leader(&[1, 2, 3], Duration::from_secs(5));
    let (after, rev2) = c.converged(Duration::from_secs(5));
    assert_eq!((after, rev2), (before, rev));
    c.node(2).create(&key("new"), cm("new", "1")).unwrap();
    assert_eq!(c.converged(Duration::from_secs(5)).1, rev + 1);
}

#[test]
fn snapshot_purges_log_and_lagging_node_installs_it() {
    let mut c = Cluster::form(3, |cfg| {
        cfg.snapshot_every = 20;
        cfg.keep_logs = 2;
    });
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(5));
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    let other = (1..=3).find(|i| *i != leader && *i != lagging).unwrap();
    let start_rev = c.node(lagging).revision().unwrap();
    let mut w = c
        .node(lagging)
        .watch(Resource::ConfigMaps, None, Some(start_rev))
        .unwrap();
    c.router.isolate(&format!("n{lagging}"));
    for i in 0..60 {
        let name = format!("s{i}");
        c.node(other).create(&key(&name), cm(&name, "1")).unwrap();
    }
    c.node(other).delete(&key("s0"), None).unwrap();
    let m = poll(Duration::from_secs(5), "a snapshot and a purge", || {
        let m = c.node(leader).metrics();
        (m.snapshot.unwrap_or(0) >= 20 && m.purged.unwrap_or(0) > 0).then_some(m)
    });
    assert!(m.purged.unwrap() > c.node(lagging).metrics().last_log.unwrap_or(0));
    assert!(
        c.dir
            .path()
            .join(format!("n{leader}/snapshots/snapshot.json"))
            .exists()
    );
    c.router.heal();
    let (items, _) = c.converged(Duration::from_secs(10));
    assert_eq!(items.len(), 59);
    assert!(c.node(lagging).metrics().snapshot.is_some());
    // The lagging node's watcher converged through the snapshot's diff.
    let rt = rt();
    rt.block_on(async {
        let mut names = BTreeSet::new();
        while names.len() < 59 {
            let e = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("watch events")
                .unwrap()
                .unwrap();
            if e.kind != EventType::Deleted {
                names.insert(e.key.name);
            }
        }
        assert!(!names.contains("s0") || names.len() >= 59);
    });
    // And it restarts from its snapshot.
    c.stop(lagging);
    c.start(lagging);
    assert_eq!(c.converged(Duration::from_secs(10)).0.len(), 59);
}

#[test]
fn secrets_are_sealed_on_disk_and_refused_without_key() {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::new();
    let marker = "c2VjcmV0LW1hcmtlci14eXo=";
    let secret = json!({"kind": "Secret", "metadata": {"name": "pw", "namespace": "default"},
                        "data": {"p": marker}});
    let sk = Key::namespaced(Resource::Secrets, "default", "pw");
    {
        let mut cfg = config(dir.path(), 1);
        cfg.cluster_key = Some([9u8; 32]);
        let s = RaftStore::open(cfg, router.transport("n1")).unwrap();
        router.register("n1", s.handler());
        rt().block_on(s.initialize_single()).unwrap();
        let stored = s.create(&sk, secret.clone()).unwrap();
        assert_eq!(stored["data"]["p"], marker);
        assert_eq!(s.get(&sk).unwrap()["data"]["p"], marker);
        assert_eq!(
            s.list(Resource::Secrets, None).unwrap().0[0]["data"]["p"],
            marker
        );
        router.unregister("n1");
    }
    for f in ["raft-log.redb", "state.redb"] {
        let bytes = std::fs::read(dir.path().join("n1").join(f)).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{f}"
        );
    }
    let s = RaftStore::open(config(&dir.path().join("nokey"), 1), router.transport("n1")).unwrap();
    router.register("n1", s.handler());
    rt().block_on(s.initialize_single()).unwrap();
    assert!(matches!(
        s.create(&sk, secret),
        Err(StoreError::Backend { .. })
    ));
}

#[test]
fn garbage_peer_calls_are_refused_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::new();
    let s = RaftStore::open(config(dir.path(), 1), router.transport("n1")).unwrap();
    let h = s.handler();
    let rt = rt();
    for kind in RpcKind::ALL {
        for payload in [
            b"".to_vec(),
            b"{garbage".to_vec(),
            b"[1,2,3]".to_vec(),
            vec![0xff; 64],
        ] {
            assert!(rt.block_on(h.handle(kind, payload)).is_err(), "{kind:?}");
        }
    }
    // A forged forward for an unknown resource is answered, not applied.
    rt.block_on(s.initialize_single()).unwrap();
    poll(Duration::from_secs(5), "leader", || {
        s.is_leader().then_some(())
    });
    let forged =
        br#"{"Create":{"key":{"resource":"widgets","namespace":null,"name":"x"},"object":{}}}"#;
    let answer = rt
        .block_on(h.handle(RpcKind::ClientWrite, forged.to_vec()))
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("unknown resource"));
    assert_eq!(s.revision().unwrap(), 0);
    drop(Arc::clone(&h));
}
