//! Leader election on etcd (`store::etcd::Election`) against a real
//! Debian etcd on 127.0.0.1: one leader at a time, clean handover on
//! resign, takeover within 2 s after a crash (lease TTL 1 s), and fencing:
//! a deposed leader's writes are refused by etcd even before it notices.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::store::etcd::{Election, EtcdConfig, EtcdStore};
use herd_agent::store::{Datastore, Key, StoreError};
use herd_integration::etcd::{EtcdCluster, EtcdOpts, etcd_or_skip};
use serde_json::json;

fn connect(etcd: &EtcdCluster, prefix: &str) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::new(etcd.endpoints(), prefix)).unwrap()
}

fn cm(name: &str) -> (Key, serde_json::Value) {
    (
        Key::namespaced(Resource::ConfigMaps, "default", name),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "default"}}),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until exactly one of `elections` leads; its index.
fn one_leader(elections: &[&Election], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leading: Vec<usize> = (0..elections.len())
            .filter(|i| elections[*i].is_leader())
            .collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(
            leading.len() < 2,
            "two leaders at once: {leading:?} (a split brain)"
        );
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn one_leader_handover_on_resign_and_fenced_writes() {
    if !etcd_or_skip("one_leader_handover_on_resign_and_fenced_writes") {
        return;
    }
    let etcd = EtcdCluster::start(EtcdOpts {
        members: 1,
        ..EtcdOpts::default()
    })
    .unwrap();
    let prefix = format!("/herd-elect-{}", std::process::id());
    let stores: Vec<EtcdStore> = (0..3).map(|_| connect(&etcd, &prefix)).collect();
    let elections: Vec<Election> = (0..3)
        .map(|i| Election::start(&stores[i], &format!("n{i}"), Duration::from_secs(1)))
        .collect();
    let refs: Vec<&Election> = elections.iter().collect();
    let first = one_leader(&refs, Duration::from_secs(5));
    // Every candidate learns who leads.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !elections
        .iter()
        .all(|e| e.leader().is_some_and(|(n, _)| n == format!("n{first}")))
    {
        assert!(
            Instant::now() < deadline,
            "followers never observed the leader"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let fence = elections[first].fence().expect("the leader has a fence");
    let leader_store = stores[first].fenced(fence.clone());
    let (k, v) = cm("by-leader");
    leader_store.create(&k, v).unwrap();

    // Resign: the next leader takes over at once (no TTL wait).
    let t = Instant::now();
    rt().block_on(elections[first].resign());
    let rest: Vec<&Election> = elections
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, e)| e)
        .collect();
    one_leader(&rest, Duration::from_secs(5));
    let handover = t.elapsed();
    println!("handover after resign: {handover:?}");
    assert!(handover < Duration::from_secs(1), "{handover:?}");
    let second = elections.iter().position(Election::is_leader).unwrap();
    let term2 = elections[second].fence().unwrap().rev;
    assert!(term2 > fence.rev, "terms grow: {term2} after {}", fence.rev);

    // The old leader's store is fenced: nothing it writes lands, whatever
    // the precondition.
    let (k2, v2) = cm("by-old-leader");
    match leader_store.create(&k2, v2) {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("deposed leader's create: {other:?}"),
    }
    let cur = stores[0].get(&k).unwrap();
    match leader_store.update(&k, cur.clone(), None) {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("deposed leader's update: {other:?}"),
    }
    match leader_store.delete(&k, None) {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("deposed leader's delete: {other:?}"),
    }
    assert!(matches!(
        stores[0].get(&k2),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(stores[0].get(&k).unwrap(), cur);
    // The new leader's fenced store writes.
    let (k3, v3) = cm("by-new-leader");
    stores[second]
        .fenced(elections[second].fence().unwrap())
        .create(&k3, v3)
        .unwrap();
}

#[test]
fn crashed_leader_is_replaced_within_two_seconds_and_a_revoked_one_is_fenced() {
    if !etcd_or_skip("crashed_leader_is_replaced_within_two_seconds") {
        return;
    }
    let etcd = EtcdCluster::start(EtcdOpts {
        members: 1,
        ..EtcdOpts::default()
    })
    .unwrap();
    let prefix = format!("/herd-crash-{}", std::process::id());
    let s0 = connect(&etcd, &prefix);
    let e0 = Election::start(&s0, "n0", Duration::from_secs(1));
    one_leader(&[&e0], Duration::from_secs(5));
    let s1 = connect(&etcd, &prefix);
    let e1 = Election::start(&s1, "n1", Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while e1.leader().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!e1.is_leader());

    // A crash: the leader's runtime dies without resigning (no stop signal
    // reaches its tasks); its lease expires after the TTL.
    let t = Instant::now();
    std::mem::forget(e0);
    drop(s0);
    one_leader(&[&e1], Duration::from_secs(5));
    let takeover = t.elapsed();
    println!("takeover after a leader crash (TTL 1 s): {takeover:?}");
    assert!(takeover < Duration::from_secs(2), "{takeover:?}");

    // A leader whose lease is revoked behind its back (as when etcd
    // expired it during a partition): its writes are refused at once, and
    // it notices and steps down.
    let fence = e1.fence().unwrap();
    let lease = String::from_utf8_lossy(&fence.key)
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    etcd.etcdctl(&["lease", "revoke", &lease]).unwrap();
    let (k, v) = cm("after-revoke");
    match s1.fenced(fence.clone()).create(&k, v) {
        Err(StoreError::Fenced { .. }) => {}
        other => panic!("revoked leader's write: {other:?}"),
    }
    // It campaigns again with a new lease and leads with a new term.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(f) = e1.fence()
            && f.rev > fence.rev
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked leader never re-campaigned"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn leadership_survives_etcd_member_restarts_and_an_etcd_leader_change() {
    if !etcd_or_skip("leadership_survives_etcd_member_restarts") {
        return;
    }
    let mut etcd = EtcdCluster::start(EtcdOpts::default()).unwrap();
    let prefix = format!("/herd-survive-{}", std::process::id());
    let s0 = connect(&etcd, &prefix);
    let s1 = connect(&etcd, &prefix);
    // TTL 3 s (the default of kube's leases is 15 s): well above etcd's
    // own election (0.5-0.8 s here, more on a loaded machine), so a
    // keep-alive gap during it must not cost the lease.
    let e0 = Election::start(&s0, "n0", Duration::from_secs(3));
    one_leader(&[&e0], Duration::from_secs(5));
    let e1 = Election::start(&s1, "n1", Duration::from_secs(3));
    let term = e0.fence().unwrap().rev;
    let mut w = s1.watch(Resource::ConfigMaps, None, None).unwrap();
    let rt = rt();
    // Kill etcd's leader (a leader change), then each other member in turn
    // (restarts): the herd leader keeps its term throughout, its fenced
    // writes keep landing, and the watch sees each of them.
    let first = etcd.leader().unwrap();
    let order: Vec<usize> = std::iter::once(first)
        .chain((0..etcd.len()).filter(|i| *i != first))
        .collect();
    for (n, member) in order.into_iter().enumerate() {
        etcd.kill9(member).unwrap();
        let name = format!("during-{n}");
        let (k, v) = cm(&name);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match s0
                .fenced(e0.fence().expect("still leading"))
                .create(&k, v.clone())
            {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "write during member {member} down: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        etcd.restart(member).unwrap();
        assert!(e0.is_leader(), "leadership lost with member {member} down");
        assert_eq!(
            e0.fence().unwrap().rev,
            term,
            "a new term after member {member}"
        );
        assert!(!e1.is_leader());
        let ev = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), w.next()).await })
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        assert_eq!(ev.key.name, name);
    }
}
