//! `EtcdStore` against a real 3-member Debian etcd 3.4 on 127.0.0.1
//! (`herd_integration::etcd`, one etcd per test so revisions are the
//! test's own): the shared `Datastore` conformance code, contention,
//! large lists, compaction under watches, etcd leader kills and member
//! restarts, and bad input. No root needed; skipped (with a message) when
//! `/usr/bin/etcd` is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::store::etcd::{EtcdConfig, EtcdStore};
use herd_agent::store::{
    Datastore, EventType, Key, StoreError, WatchStream, resource_version, update_with,
};
use herd_integration::etcd::{EtcdCluster, EtcdOpts, etcd_or_skip};
use serde_json::{Value, json};
use store_conformance::{AfterReopen, cm, conformance, key, next, rt};

#[path = "common/store_conformance.rs"]
mod store_conformance;

/// A 3-member etcd of the test's own, or `None` (skip) without etcd.
fn etcd(test: &str) -> Option<EtcdCluster> {
    if !etcd_or_skip(test) {
        return None;
    }
    let t = Instant::now();
    let c = EtcdCluster::start(EtcdOpts::default()).unwrap();
    eprintln!("{test}: etcd up in {:?}", t.elapsed());
    Some(c)
}

fn prefix(test: &str) -> String {
    format!("/herd-test-{}-{test}", std::process::id())
}

fn connect(c: &EtcdCluster, test: &str) -> EtcdStore {
    EtcdStore::connect(EtcdConfig::new(c.endpoints(), &prefix(test))).unwrap()
}

fn ns_cm(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}})
}

/// Creates `name`, retrying what a client retries (no leader, a timed-out
/// write); true when this call's create was acknowledged, false when a
/// retry found it created by an earlier, unacknowledged attempt.
fn create_retrying(s: &EtcdStore, name: &str) -> bool {
    create_timed(s, name).0
}

/// [`create_retrying`], and how long it took.
fn create_timed(s: &EtcdStore, name: &str) -> (bool, Duration) {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    loop {
        match s.create(&key(name), cm(name, "1")) {
            Ok(_) => return (true, t.elapsed()),
            Err(StoreError::AlreadyExists { .. }) => return (false, t.elapsed()),
            Err(e @ (StoreError::Timeout { .. } | StoreError::Backend { .. })) => {
                eprintln!("NOTE: create {name}: {e} after {:?}; retrying", t.elapsed());
                assert!(Instant::now() < deadline, "create {name}: {e}");
            }
            Err(e) => panic!("create {name}: {e:?}"),
        }
    }
}

/// Reads `w` until every name in `want` was Added; asserts revisions
/// strictly increase and no object is Added twice.
fn collect_added(w: &mut WatchStream, want: &BTreeSet<String>, within: Duration) {
    let rt = rt();
    let deadline = Instant::now() + within;
    let mut seen = BTreeSet::new();
    let mut last = 0;
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rt
            .block_on(async { tokio::time::timeout(left, w.next()).await })
            .unwrap_or_else(|_| panic!("{} of {} events seen", seen.len(), want.len()))
            .unwrap()
            .expect("watch open");
        assert!(
            e.resource_version > last,
            "rv {} after {last}",
            e.resource_version
        );
        last = e.resource_version;
        assert_eq!(e.kind, EventType::Added);
        assert!(seen.insert(e.key.name.clone()), "{} twice", e.key.name);
    }
}

/// Polls etcd's revision (through member changes) until it reaches `at`
/// (10 s at most); returns it.
fn wait_revision(s: &EtcdStore, at: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.revision() {
            Ok(r) if r >= at => return r,
            other => assert!(
                Instant::now() < deadline,
                "revision {at} not reached: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn etcd_store_conformance() {
    let Some(c) = etcd("etcd_store_conformance") else {
        return;
    };
    conformance(|| connect(&c, "conformance"), AfterReopen::Replayed);
}

#[test]
fn concurrent_update_with_counts_exactly() {
    let Some(c) = etcd("concurrent_update_with_counts_exactly") else {
        return;
    };
    let s = connect(&c, "contention");
    let k = key("counter");
    s.create(
        &k,
        json!({"metadata": {"name": "counter", "namespace": "default"},
                        "data": {"n": "0"}}),
    )
    .unwrap();
    let (threads, each) = (8, 25);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut done = 0;
                while done < each {
                    let r = update_with(&s, &k, |mut o| {
                        let n: u64 = o["data"]["n"].as_str().unwrap().parse().unwrap();
                        o["data"]["n"] = json!((n + 1).to_string());
                        Ok(Some(o))
                    });
                    match r {
                        Ok(_) => done += 1,
                        // update_with gave up after its retries: try again.
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
        }
    });
    let n = s.get(&k).unwrap()["data"]["n"].clone();
    eprintln!(
        "{} increments by {threads} threads in {:?}",
        threads * each,
        t.elapsed()
    );
    assert_eq!(n, json!((threads * each).to_string()));
}

#[test]
fn list_of_two_thousand_is_whole_and_sorted() {
    let Some(c) = etcd("list_of_two_thousand_is_whole_and_sorted") else {
        return;
    };
    let s = connect(&c, "list");
    let t = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in (w..2000).step_by(8) {
                    let ns = if i % 2 == 0 { "even" } else { "odd" };
                    let name = format!("cm-{i:04}");
                    s.create(
                        &Key::namespaced(Resource::ConfigMaps, ns, &name),
                        ns_cm(ns, &name),
                    )
                    .unwrap();
                }
            });
        }
    });
    eprintln!("2000 creates in {:?}", t.elapsed());
    let t = Instant::now();
    let (items, rv) = s.list(Resource::ConfigMaps, None).unwrap();
    eprintln!("list of {} in {:?}", items.len(), t.elapsed());
    assert_eq!(items.len(), 2000);
    let ids: Vec<(String, String)> = items
        .iter()
        .map(|o| {
            assert!(resource_version(o).unwrap() <= rv, "{o}");
            let m = &o["metadata"];
            (
                m["namespace"].as_str().unwrap().into(),
                m["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert_eq!(ids[0], ("even".into(), "cm-0000".into()));
    assert_eq!(ids[1999], ("odd".into(), "cm-1999".into()));
    let (odd, _) = s.list(Resource::ConfigMaps, Some("odd")).unwrap();
    assert_eq!(odd.len(), 1000);
    assert_eq!(
        rv,
        c.revision().unwrap(),
        "the list's revision is the latest"
    );
}

#[test]
fn compaction_during_watches() {
    let Some(c) = etcd("compaction_during_watches") else {
        return;
    };
    let s = connect(&c, "compact");
    let rt = rt();
    let r = s.revision().unwrap();
    // A watch at head keeps every event across a compaction.
    let mut head = s.watch(Resource::ConfigMaps, None, Some(r)).unwrap();
    for i in 0..3 {
        s.create(&key(&format!("a{i}")), cm("a", "1")).unwrap();
    }
    s.compact(s.revision().unwrap()).unwrap();
    for i in 3..6 {
        s.create(&key(&format!("a{i}")), cm("a", "1")).unwrap();
    }
    let got: Vec<(String, u64)> = (0..6)
        .map(|_| {
            let e = rt.block_on(next(&mut head));
            (e.key.name, e.resource_version)
        })
        .collect();
    let want: Vec<(String, u64)> = (0..6).map(|i| (format!("a{i}"), r + 1 + i)).collect();
    assert_eq!(got, want);
    // A new watch from before the compaction is refused.
    match s.watch(Resource::ConfigMaps, None, Some(r)) {
        Err(StoreError::Expired { requested, .. }) => assert_eq!(requested, r),
        other => panic!("want Expired, got {other:?}"),
    }
    // A watch that falls behind (its reader stops) while history is
    // compacted ends with Expired after what was still buffered.
    let r2 = s.revision().unwrap();
    let mut slow = s.watch(Resource::ConfigMaps, None, Some(r2)).unwrap();
    let big = "x".repeat(16 * 1024);
    let writes = 800u64;
    let t = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..4 {
            let (s, big) = (&s, &big);
            scope.spawn(move || {
                for i in (w..writes).step_by(4) {
                    let name = format!("b{i:04}");
                    s.create(&key(&name), cm(&name, big)).unwrap();
                }
            });
        }
    });
    eprintln!("{writes} writes of 16 KiB in {:?}", t.elapsed());
    s.compact(s.revision().unwrap()).unwrap();
    let mut last = r2;
    let mut delivered = 0u64;
    let end = loop {
        let r =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), slow.next()).await });
        match r.expect("the slow watch neither delivers nor ends") {
            Ok(Some(e)) => {
                assert_eq!(e.resource_version, last + 1, "gap or reorder");
                last = e.resource_version;
                delivered += 1;
            }
            other => break other,
        }
    };
    eprintln!("slow watch: {delivered} of {writes} events, then {end:?}");
    assert!(
        matches!(end, Err(StoreError::Expired { .. })),
        "want Expired, got {end:?}"
    );
    assert!(delivered < writes);
}

#[test]
fn etcd_leader_killed_mid_workload_loses_no_acknowledged_write() {
    let Some(mut c) = etcd("etcd_leader_killed_mid_workload") else {
        return;
    };
    let s = connect(&c, "leaderkill");
    let mut w = s
        .watch(Resource::ConfigMaps, None, Some(s.revision().unwrap()))
        .unwrap();
    let stop = AtomicBool::new(false);
    let leader = c.leader().unwrap();
    let (acked, unacked, down, slowest) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let (s, stop) = (&s, &stop);
                scope.spawn(move || {
                    let (mut acked, mut unacked) = (vec![], vec![]);
                    let mut slowest = Duration::ZERO;
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let name = format!("w{t}-{i:05}");
                        let (ok, took) = create_timed(s, &name);
                        slowest = slowest.max(took);
                        if ok {
                            acked.push(name);
                        } else {
                            unacked.push(name);
                        }
                    }
                    (acked, unacked, slowest)
                })
            })
            .collect();
        // Let the workload run, then kill the leader under it.
        wait_revision(&s, 50);
        c.kill9(leader).unwrap();
        let killed = Instant::now();
        let new = c.leader().unwrap();
        eprintln!(
            "etcd e{leader} killed; e{new} leads after {:?}",
            killed.elapsed()
        );
        // Writes continue on the new leader.
        let before = wait_revision(&s, 0);
        wait_revision(&s, before + 20);
        // ~2 s down, then back.
        while killed.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(50));
        }
        c.restart(leader).unwrap();
        let down = killed.elapsed();
        let before = wait_revision(&s, 0);
        wait_revision(&s, before + 20);
        stop.store(true, Ordering::SeqCst);
        let mut acked = BTreeSet::new();
        let (mut unacked, mut slowest) = (0, Duration::ZERO);
        for h in writers {
            let (a, u, s) = h.join().unwrap();
            acked.extend(a);
            unacked += u.len();
            slowest = slowest.max(s);
        }
        (acked, unacked, down, slowest)
    });
    eprintln!(
        "{} acknowledged creates ({unacked} confirmed only by a retry); member down {down:?}; \
         slowest create (with retries) {slowest:?}",
        acked.len()
    );
    let (items, _) = s.list(Resource::ConfigMaps, None).unwrap();
    let stored: BTreeSet<String> = items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // The watch opened before the kill saw each create once, in order.
    collect_added(&mut w, &acked, Duration::from_secs(20));
}

#[test]
fn watch_survives_each_member_restart() {
    let Some(mut c) = etcd("watch_survives_each_member_restart") else {
        return;
    };
    let s = connect(&c, "restart");
    let mut w = s.watch(Resource::ConfigMaps, None, None).unwrap();
    let mut want = BTreeSet::new();
    for i in 0..c.len() {
        c.kill9(i).unwrap();
        for tag in ["down", "up"] {
            let name = format!("m{i}-{tag}");
            let t = Instant::now();
            create_retrying(&s, &name);
            want.insert(name.clone());
            collect_added(
                &mut w,
                &BTreeSet::from([name.clone()]),
                Duration::from_secs(10),
            );
            eprintln!(
                "member e{i} {tag}: {name} written and watched in {:?}",
                t.elapsed()
            );
            if tag == "down" {
                c.restart(i).unwrap();
            }
        }
    }
    let (items, _) = s.list(Resource::ConfigMaps, None).unwrap();
    assert_eq!(items.len(), want.len());
}

#[test]
fn unreachable_etcd_and_foreign_values_are_clear_errors() {
    let Some(c) = etcd("unreachable_etcd_and_foreign_values") else {
        return;
    };
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")], "/herd");
    cfg.request_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = EtcdStore::connect(cfg).unwrap_err();
    eprintln!("connect to nothing: {err} after {:?}", t.elapsed());
    // Within the request timeout (and the time to give up on it).
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    // A value under the prefix that is not herd's JSON.
    let p = prefix("foreign");
    let s = connect(&c, "foreign");
    s.create(&key("good"), cm("good", "1")).unwrap();
    c.etcdctl(&["put", &format!("{p}/configmaps/default/bad"), "garbage"])
        .unwrap();
    for e in [
        s.get(&key("bad")).unwrap_err(),
        s.list(Resource::ConfigMaps, None).unwrap_err(),
        s.list(Resource::ConfigMaps, Some("default")).unwrap_err(),
    ] {
        match &e {
            StoreError::Encoding { name, .. } => assert!(name.contains("default/bad"), "{e}"),
            other => panic!("want Encoding, got {other:?}"),
        }
    }
    assert_eq!(s.get(&key("good")).unwrap()["data"]["k"], "1");
}
