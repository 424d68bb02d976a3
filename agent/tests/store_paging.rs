//! `Datastore::list_page` on every backend (LocalStore, a single-node
//! RaftStore, etcd): key-ordered pages that together are the whole
//! collection, namespace ranges, positions from another namespace, exact
//! remaining counts, and `Expired` for a revision the store no longer has.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::store::etcd::{EtcdConfig, EtcdStore};
use herd_agent::store::local::LocalStore;
use herd_agent::store::raft::{MemRouter, RaftConfig, RaftStore};
use herd_agent::store::{Datastore, Key, StoreError};
use herd_integration::etcd::{EtcdCluster, EtcdOpts, etcd_or_skip};
use serde_json::{Value, json};

fn key_of(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap(),
        o["metadata"]["name"].as_str().unwrap()
    )
}

/// Fills `s`, then pages through it.
fn check<S: Datastore>(s: &S) {
    // Namespaces "a" and "a-b" share a prefix: key order ("a-b/..." before
    // "a/...") is what pages follow.
    let mut want = Vec::new();
    for ns in ["a", "a-b", "c"] {
        for i in 0..7 {
            let name = format!("cm-{i}");
            s.create(
                &Key::namespaced(Resource::ConfigMaps, ns, &name),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": ns}}),
            )
            .unwrap();
            want.push(format!("{ns}/{name}"));
        }
    }
    want.sort();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut at = None;
    loop {
        let p = s
            .list_page(Resource::ConfigMaps, None, after.as_deref(), 5, at)
            .unwrap()
            .expect("this store reads ranges");
        at = Some(p.revision);
        assert!(p.items.len() <= 5);
        got.extend(p.items.iter().map(key_of));
        assert_eq!(p.remaining as usize, want.len() - got.len());
        if p.remaining == 0 {
            break;
        }
        after = got.last().cloned();
    }
    assert_eq!(got, want, "pages in key order, each object once");

    // One namespace; a position in another namespace starts or ends it.
    let p = s
        .list_page(Resource::ConfigMaps, Some("a"), None, 100, None)
        .unwrap()
        .unwrap();
    assert_eq!(p.items.len(), 7);
    assert!(p.items.iter().all(|o| o["metadata"]["namespace"] == "a"));
    let p = s
        .list_page(Resource::ConfigMaps, Some("c"), Some("a/cm-3"), 100, None)
        .unwrap()
        .unwrap();
    assert_eq!(p.items.len(), 7);
    let p = s
        .list_page(Resource::ConfigMaps, Some("a"), Some("c/cm-0"), 100, None)
        .unwrap()
        .unwrap();
    assert!(p.items.is_empty());
    assert_eq!(p.remaining, 0);
    let p = s
        .list_page(Resource::ConfigMaps, Some("a"), Some("a/cm-4"), 1, None)
        .unwrap()
        .unwrap();
    assert_eq!(key_of(&p.items[0]), "a/cm-5");
    assert_eq!(p.remaining, 1);
    // Another resource's range is empty.
    let p = s
        .list_page(Resource::Secrets, None, None, 10, None)
        .unwrap()
        .unwrap();
    assert!(p.items.is_empty());
}

#[test]
fn local_store_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(
        &dir.path().join("store.redb"),
        &dir.path().join("run/s.redb"),
    )
    .unwrap();
    check(&s);
    // The ring holds 10,000 events: revision 0 predates a reopened store.
    drop(s);
    let s = LocalStore::open(
        &dir.path().join("store.redb"),
        &dir.path().join("run/s.redb"),
    )
    .unwrap();
    assert!(matches!(
        s.list_page(Resource::ConfigMaps, None, None, 5, Some(1)),
        Err(StoreError::Expired { .. })
    ));
}

#[test]
fn raft_store_pages() {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::new();
    let s = RaftStore::open(
        RaftConfig::new(1, "n1", dir.path().join("n1")),
        router.transport("n1"),
    )
    .unwrap();
    router.register("n1", s.handler());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(s.initialize_single())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.is_leader() {
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(5));
    }
    check(&s);
}

#[test]
fn etcd_store_pages() {
    if !etcd_or_skip("etcd_store_pages") {
        return;
    }
    let etcd = EtcdCluster::start(EtcdOpts {
        members: 1,
        ..EtcdOpts::default()
    })
    .unwrap();
    let s = EtcdStore::connect(EtcdConfig::new(
        etcd.endpoints(),
        &format!("/herd-pages-{}", std::process::id()),
    ))
    .unwrap();
    check(&s);
    // A past revision is a snapshot until etcd compacts it.
    let first = s
        .list_page(Resource::ConfigMaps, None, None, 3, None)
        .unwrap()
        .unwrap();
    s.delete(&Key::namespaced(Resource::ConfigMaps, "c", "cm-6"), None)
        .unwrap();
    let old = s
        .list_page(Resource::ConfigMaps, None, None, 100, Some(first.revision))
        .unwrap()
        .unwrap();
    assert_eq!(old.items.len(), 21, "the snapshot still has c/cm-6");
    s.compact(s.revision().unwrap()).unwrap();
    assert!(matches!(
        s.list_page(Resource::ConfigMaps, None, None, 5, Some(first.revision)),
        Err(StoreError::Expired { .. })
    ));
}
