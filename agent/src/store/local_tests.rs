//! Tests of the redb store: CRUD, revisions, watches, secrets apart,
//! garbage, crash safety (a child process killed mid-writes).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn open(dir: &Path) -> LocalStore {
    LocalStore::open(&dir.join("store.redb"), &dir.join("run/secrets.redb")).unwrap()
}

fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default"}, "data": {"k": v}})
}

fn key(name: &str) -> Key {
    Key::namespaced(Resource::ConfigMaps, "default", name)
}

#[test]
fn crud_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.revision().unwrap(), 0);
    let a = s.create(&key("a"), cm("a", "1")).unwrap();
    assert_eq!(resource_version(&a), Some(1));
    assert!(matches!(
        s.create(&key("a"), cm("a", "x")),
        Err(StoreError::AlreadyExists { .. })
    ));
    let a2 = s.update(&key("a"), cm("a", "2"), Some(1)).unwrap();
    assert_eq!(resource_version(&a2), Some(2));
    assert!(matches!(
        s.update(&key("a"), cm("a", "3"), Some(1)),
        Err(StoreError::Conflict { current: 2, .. })
    ));
    assert!(matches!(
        s.update(&key("zz"), cm("zz", "3"), None),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.get(&key("a")).unwrap()["data"]["k"], "2");
    s.create(
        &Key::namespaced(Resource::ConfigMaps, "other", "b"),
        cm("b", "1"),
    )
    .unwrap();
    let (all, rv) = s.list(Resource::ConfigMaps, None).unwrap();
    assert_eq!((all.len(), rv), (2, 3));
    let (def, _) = s.list(Resource::ConfigMaps, Some("default")).unwrap();
    assert_eq!(def.len(), 1);
    assert!(matches!(
        s.delete(&key("a"), Some(1)),
        Err(StoreError::Conflict { .. })
    ));
    let gone = s.delete(&key("a"), Some(2)).unwrap();
    assert_eq!(resource_version(&gone), Some(4));
    assert!(matches!(s.get(&key("a")), Err(StoreError::NotFound { .. })));
    drop(s);
    // The counter survives a reopen, even after deletes.
    let s = open(dir.path());
    assert_eq!(s.revision().unwrap(), 4);
}

#[test]
fn secrets_live_in_the_tmpfs_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let k = Key::namespaced(Resource::Secrets, "default", "pw");
    let marker = "c2VjcmV0LW1hcmtlci14eXo=";
    s.create(
        &k,
        json!({"kind": "Secret", "metadata": {"name": "pw"}, "data": {"p": marker}}),
    )
    .unwrap();
    s.create(&key("a"), cm("a", "1")).unwrap();
    drop(s);
    let main = std::fs::read(dir.path().join("store.redb")).unwrap();
    assert!(!main.windows(marker.len()).any(|w| w == marker.as_bytes()));
    let sec = std::fs::read(dir.path().join("run/secrets.redb")).unwrap();
    assert!(sec.windows(marker.len()).any(|w| w == marker.as_bytes()));
    // A reboot loses the tmpfs file: secrets gone, revision does not go back.
    std::fs::remove_file(dir.path().join("run/secrets.redb")).unwrap();
    let s = open(dir.path());
    assert!(matches!(s.get(&k), Err(StoreError::NotFound { .. })));
    assert_eq!(s.revision().unwrap(), 2);
}

#[test]
fn garbage_in_a_table_is_an_encoding_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create(&key("good"), cm("good", "1")).unwrap();
    {
        let txn = s.main.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table(Resource::ConfigMaps)).unwrap();
            t.insert("default/bad", b"{not json".as_slice()).unwrap();
            t.insert("default/arr", b"[1,2]".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(matches!(
        s.get(&key("bad")),
        Err(StoreError::Encoding { .. })
    ));
    assert!(matches!(
        s.get(&key("arr")),
        Err(StoreError::Encoding { .. })
    ));
    assert!(matches!(
        s.list(Resource::ConfigMaps, None),
        Err(StoreError::Encoding { .. })
    ));
    assert!(matches!(
        s.update(&key("bad"), cm("bad", "1"), None),
        Err(StoreError::Encoding { .. })
    ));
    assert!(s.get(&key("good")).is_ok());
}

#[tokio::test]
async fn watch_backlog_live_and_expired() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create(&key("a"), cm("a", "1")).unwrap();
    s.create(
        &Key::namespaced(Resource::ConfigMaps, "other", "x"),
        cm("x", "1"),
    )
    .unwrap();
    s.update(&key("a"), cm("a", "2"), None).unwrap();
    let mut w = s
        .watch(Resource::ConfigMaps, Some("default"), Some(0))
        .unwrap();
    let e1 = w.next().await.unwrap().unwrap();
    assert_eq!((e1.kind, e1.resource_version), (EventType::Added, 1));
    let e2 = w.next().await.unwrap().unwrap();
    assert_eq!((e2.kind, e2.resource_version), (EventType::Modified, 3));
    s.delete(&key("a"), None).unwrap();
    let e3 = w.next().await.unwrap().unwrap();
    assert_eq!((e3.kind, e3.resource_version), (EventType::Deleted, 4));
    assert_eq!(e3.object["data"]["k"], "2");
    // From "now": only later changes.
    let mut now = s.watch(Resource::ConfigMaps, None, None).unwrap();
    s.create(&key("b"), cm("b", "1")).unwrap();
    assert_eq!(now.next().await.unwrap().unwrap().resource_version, 5);
    drop(s);
    // After a reopen the ring is empty: older versions are expired.
    let s = open(dir.path());
    assert!(matches!(
        s.watch(Resource::ConfigMaps, None, Some(2)),
        Err(StoreError::Expired {
            requested: 2,
            oldest: 5
        })
    ));
    assert!(s.watch(Resource::ConfigMaps, None, Some(5)).is_ok());
}

/// Concurrent writers share fsyncs (group commit) and every one of them
/// is acknowledged only once durable; watchers see every event once, in
/// revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_group_committed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(open(dir.path()));
    let mut w = s.watch(Resource::ConfigMaps, None, Some(0)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let name = format!("t{t}-{i}");
                    let o = s.create(&key(&name), cm(&name, "1")).unwrap();
                    // Acknowledged means published: the watch event exists.
                    assert!(s.lock().published >= resource_version(&o).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut last = 0;
    for _ in 0..200 {
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.resource_version, last + 1);
        last = ev.resource_version;
    }
    assert_eq!(s.revision().unwrap(), 200);
    drop(w);
    let s = std::sync::Arc::try_unwrap(s).unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.list(Resource::ConfigMaps, None).unwrap().0.len(), 200);
}

#[test]
fn ring_overflow_expires_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create(&key("a"), cm("a", "0")).unwrap();
    {
        // Fill the ring without fsyncing 10 000 times.
        let mut st = s.lock();
        for i in 0..RING as u64 {
            let ev = WatchEvent {
                kind: EventType::Modified,
                key: key("a"),
                object: cm("a", "x"),
                resource_version: st.revision + 1 + i,
            };
            if st.ring.len() >= RING
                && let Some(old) = st.ring.pop_front()
            {
                st.ring_start = old.resource_version;
            }
            st.ring.push_back(ev);
        }
        st.revision += RING as u64;
    }
    assert!(matches!(
        s.watch(Resource::ConfigMaps, None, Some(0)),
        Err(StoreError::Expired { .. })
    ));
    assert!(s.watch(Resource::ConfigMaps, None, Some(1)).is_ok());
}

/// The writer of the crash test: creates objects until killed, printing
/// each acknowledged one.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("HERD_STORE_CRASH_DIR") else {
        return;
    };
    let s = open(Path::new(&dir));
    for i in 0.. {
        let name = format!("c{i}");
        s.create(&key(&name), cm(&name, &i.to_string())).unwrap();
        println!("ACK {i}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store::local::tests::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HERD_STORE_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = Vec::new();
    let mut lines = out.lines();
    while acked.len() < 40 && Instant::now() < deadline {
        let Some(Ok(l)) = lines.next() else { break };
        if let Some(n) = l.strip_prefix("ACK ") {
            acked.push(n.parse::<u64>().unwrap());
        }
    }
    child.0.kill().unwrap();
    // Acks printed before the kill are still in the pipe.
    for l in lines.map_while(Result::ok) {
        if let Some(n) = l.strip_prefix("ACK ") {
            acked.push(n.parse::<u64>().unwrap());
        }
    }
    assert!(acked.len() >= 40, "child acknowledged only {acked:?}");
    let s = open(dir.path());
    let (items, rv) = s.list(Resource::ConfigMaps, None).unwrap();
    assert!(rv >= acked.len() as u64);
    for i in &acked {
        let o = s.get(&key(&format!("c{i}"))).unwrap();
        assert_eq!(o["data"]["k"], i.to_string());
        assert_eq!(resource_version(&o), Some(i + 1));
    }
    // Consistent: the objects are exactly the first N writes, each with
    // its own revision, and the counter matches them (writes after the
    // last ack read may have committed before the kill).
    assert_eq!(rv, items.len() as u64);
    for (i, o) in items.iter().enumerate() {
        let name = o["metadata"]["name"].as_str().unwrap();
        let n: u64 = name[1..].parse().unwrap();
        assert_eq!(resource_version(o), Some(n + 1));
        assert!(n < items.len() as u64, "gap before {name} (item {i})");
    }
    // And writable again.
    s.create(&key("after"), cm("after", "1")).unwrap();
}
