//! The `Datastore` contract, one test body for every backend (LocalStore,
//! RaftStore, EtcdStore): used by `store_raft.rs` and `store_etcd.rs`
//! through `#[path = "common/store_conformance.rs"] mod store_conformance;`.
//!
//! It asserts exact resourceVersions (`base + n`), so the store must be the
//! only writer of its backend while it runs (an etcd of its own for
//! `EtcdStore`, whose revision is shared by every key).

// Each test file uses part of this.
#![allow(dead_code)]

use std::time::Duration;

use herd_agent::api::Resource;
use herd_agent::store::{Datastore, EventType, Key, StoreError, resource_version};
use serde_json::{Value, json};

/// What a watch from a revision before a reopen gets: the one place the
/// backends differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterReopen {
    /// The event ring is in memory (LocalStore, Raft): `Expired`.
    Expired,
    /// The history is the backend's own (etcd, until compacted): replayed.
    Replayed,
}

pub fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default"}, "data": {"k": v}})
}

pub fn key(name: &str) -> Key {
    Key::namespaced(Resource::ConfigMaps, "default", name)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The `Datastore` contract, for any backend. `open` opens the store on
/// the same files (or etcd prefix) each time, the previous one dropped
/// first.
pub fn conformance<S: Datastore>(open: impl Fn() -> S, after_reopen: AfterReopen) {
    let rt = rt();
    let s = open();
    let base = s.revision().unwrap();
    let a = s.create(&key("a"), cm("a", "1")).unwrap();
    assert_eq!(resource_version(&a), Some(base + 1));
    assert!(matches!(
        s.create(&key("a"), cm("a", "x")),
        Err(StoreError::AlreadyExists { .. })
    ));
    let a2 = s.update(&key("a"), cm("a", "2"), Some(base + 1)).unwrap();
    assert_eq!(resource_version(&a2), Some(base + 2));
    match s.update(&key("a"), cm("a", "3"), Some(base + 1)) {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, base + 2),
        other => panic!("want conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update(&key("zz"), cm("zz", "3"), None),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete(&key("zz"), None),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.get(&key("a")).unwrap()["data"]["k"], "2");
    assert!(matches!(
        s.get(&key("zz")),
        Err(StoreError::NotFound { .. })
    ));
    s.create(
        &Key::namespaced(Resource::ConfigMaps, "other", "b"),
        cm("b", "1"),
    )
    .unwrap();
    let (all, rv) = s.list(Resource::ConfigMaps, None).unwrap();
    assert_eq!((all.len(), rv), (2, base + 3));
    let (def, _) = s.list(Resource::ConfigMaps, Some("default")).unwrap();
    assert_eq!(def.len(), 1);
    assert!(matches!(
        s.delete(&key("a"), Some(base + 1)),
        Err(StoreError::Conflict { .. })
    ));
    let gone = s.delete(&key("a"), Some(base + 2)).unwrap();
    assert_eq!(resource_version(&gone), Some(base + 4));
    assert_eq!(gone["data"]["k"], "2");
    assert!(matches!(s.get(&key("a")), Err(StoreError::NotFound { .. })));
    // Watch from a revision: backlog in order, filtered by namespace.
    let mut w = s
        .watch(Resource::ConfigMaps, Some("default"), Some(base))
        .unwrap();
    assert_eq!(
        rt.block_on(take(&mut w, 3)),
        vec![
            (EventType::Added, base + 1),
            (EventType::Modified, base + 2),
            (EventType::Deleted, base + 4)
        ]
    );
    // Live events after "now".
    let mut now = s.watch(Resource::ConfigMaps, None, None).unwrap();
    s.create(&key("c"), cm("c", "1")).unwrap();
    let e = rt.block_on(next(&mut now));
    assert_eq!((e.kind, e.key.name.as_str()), (EventType::Added, "c"));
    assert_eq!(s.revision().unwrap(), base + 5);
    drop((w, now));
    drop(s);
    // Reopened: state and counter are back.
    let s = open();
    assert_eq!(s.revision().unwrap(), base + 5);
    assert_eq!(s.get(&key("c")).unwrap()["data"]["k"], "1");
    let old = s.watch(Resource::ConfigMaps, None, Some(base));
    match after_reopen {
        // The ring is not.
        AfterReopen::Expired => assert!(
            matches!(old, Err(StoreError::Expired { .. })),
            "want Expired, got {old:?}"
        ),
        // The backend's history is: every namespace, in order.
        AfterReopen::Replayed => {
            let mut w = old.unwrap();
            let want = vec![
                (EventType::Added, base + 1),
                (EventType::Modified, base + 2),
                (EventType::Added, base + 3),
                (EventType::Deleted, base + 4),
                (EventType::Added, base + 5),
            ];
            assert_eq!(rt.block_on(take(&mut w, 5)), want);
        }
    }
}

/// The next event (5 s at most).
pub async fn next(w: &mut herd_agent::store::WatchStream) -> herd_agent::store::WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("a watch event within 5 s")
        .unwrap()
        .expect("the watch is open")
}

/// The kinds and resourceVersions of the next `n` events.
async fn take(w: &mut herd_agent::store::WatchStream, n: usize) -> Vec<(EventType, u64)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let e = next(w).await;
        seen.push((e.kind, e.resource_version));
    }
    seen
}
