//! Tests of export/import between two real LocalStores: round trip of
//! every kind, malformed files refused with their line and nothing written,
//! existing objects with and without overwrite.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::store::local::LocalStore;
use crate::store::resource_version;

fn open(dir: &Path) -> LocalStore {
    LocalStore::open(&dir.join("store.redb"), &dir.join("run/secrets.redb")).unwrap()
}

fn obj(r: Resource, ns: Option<&str>, name: &str, extra: Value) -> (Key, Value) {
    let mut meta = json!({"name": name, "uid": format!("uid-{r}-{name}"),
        "creationTimestamp": "2026-01-02T03:04:05Z"});
    let key = match ns {
        Some(ns) => {
            meta["namespace"] = json!(ns);
            Key::namespaced(r, ns, name)
        }
        None => Key::cluster(r, name),
    };
    let mut o = json!({"apiVersion": r.api_version(), "kind": r.kind(), "metadata": meta});
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    (key, o)
}

/// A store with several kinds: namespaces, a node, a secret, a config map,
/// a deployment owning a replica set owning a pod (with finalizers and
/// status), an event.
fn source(dir: &Path) -> LocalStore {
    let s = open(dir);
    let objects = [
        obj(Resource::Namespaces, None, "default", json!({})),
        obj(
            Resource::Namespaces,
            None,
            "app",
            json!({"status": {"phase": "Active"}}),
        ),
        obj(
            Resource::Nodes,
            None,
            "n1",
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        obj(
            Resource::Secrets,
            Some("app"),
            "creds",
            json!({"type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
        ),
        obj(
            Resource::ConfigMaps,
            Some("app"),
            "cfg",
            json!({"data": {"k": "v"}}),
        ),
        obj(
            Resource::Deployments,
            Some("app"),
            "web",
            json!({"spec": {"replicas": 1}}),
        ),
        obj(
            Resource::ReplicaSets,
            Some("app"),
            "web-1",
            json!({"spec": {"replicas": 1}}),
        ),
        obj(
            Resource::Pods,
            Some("app"),
            "web-1-a",
            json!({"spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
                   "status": {"phase": "Running"}}),
        ),
        obj(
            Resource::Events,
            Some("app"),
            "web.1",
            json!({"reason": "Scheduled"}),
        ),
    ];
    for (k, mut o) in objects {
        if k.resource == Resource::Pods {
            o["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": "web-1", "uid": "uid-replicasets-web-1",
                "controller": true}]);
            o["metadata"]["finalizers"] = json!(["example.com/keep"]);
        }
        s.create(&k, o).unwrap();
    }
    s
}

fn export_bytes(s: &dyn Datastore, opts: &ExportOptions) -> Vec<u8> {
    let mut out = Vec::new();
    export(s, &mut out, opts).unwrap();
    out
}

fn without_rv(mut o: Value) -> Value {
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    o
}

/// Every object of every resource, without resourceVersions, by key.
fn contents(s: &dyn Datastore) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for r in Resource::ALL {
        for o in s.list(r, None).unwrap().0 {
            out.insert(key_of(r, &o).unwrap(), without_rv(o));
        }
    }
    out
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn order_covers_every_resource_once() {
    let mut o = ORDER.to_vec();
    o.sort();
    let mut all = Resource::ALL.to_vec();
    all.sort();
    assert_eq!(o, all);
    assert_eq!(ORDER[0], Resource::Namespaces);
    assert_eq!(order(), ORDER.to_vec());
}

#[test]
fn round_trip_keeps_every_object() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = source(a.path());
    let bytes = export_bytes(&src, &ExportOptions::default());
    let text = lines(&bytes);
    assert!(bytes.ends_with(b"\n"));
    let header: Value = serde_json::from_str(&text[0]).unwrap();
    assert_eq!(header["apiVersion"], API_VERSION);
    assert_eq!(header["kind"], KIND);
    assert_eq!(
        header["resourceVersion"],
        src.revision().unwrap().to_string()
    );
    assert_eq!(header["counts"]["namespaces"], 2);
    assert_eq!(header["counts"]["pods"], 1);
    assert_eq!(header["counts"]["services"], 0);
    assert_eq!(text.len(), 1 + 9);
    let first: Value = serde_json::from_str(&text[1]).unwrap();
    assert_eq!(first["resource"], "namespaces");
    assert!(text[1].starts_with("{\"resource\":"), "{}", text[1]);
    let last: Value = serde_json::from_str(&text[9]).unwrap();
    assert_eq!(last["resource"], "events");

    let dst = open(b.path());
    let summary = import(&dst, &mut &bytes[..], &ImportOptions::default()).unwrap();
    assert_eq!(summary.total(), 9);
    assert_eq!(summary.counts["secrets"], 1);
    assert_eq!(summary.replaced["secrets"], 0);
    assert_eq!(summary.resource_version, dst.revision().unwrap());
    assert_eq!(contents(&src), contents(&dst));
    // The target assigned its own resourceVersions.
    let pod = dst
        .get(&Key::namespaced(Resource::Pods, "app", "web-1-a"))
        .unwrap();
    assert!(resource_version(&pod).is_some());
    assert_eq!(pod["metadata"]["uid"], "uid-pods-web-1-a");
    assert_eq!(pod["metadata"]["finalizers"], json!(["example.com/keep"]));
    assert_eq!(pod["status"]["phase"], "Running");
    let secret = dst
        .get(&Key::namespaced(Resource::Secrets, "app", "creds"))
        .unwrap();
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");

    // Exported again from the target: the same objects.
    let again = export_bytes(&dst, &ExportOptions::default());
    let c = tempfile::tempdir().unwrap();
    let third = open(c.path());
    import(&third, &mut &again[..], &ImportOptions::default()).unwrap();
    assert_eq!(contents(&src), contents(&third));
}

#[test]
fn skip_events_leaves_events_out() {
    let a = tempfile::tempdir().unwrap();
    let src = source(a.path());
    let bytes = export_bytes(&src, &ExportOptions { skip_events: true });
    let file = read(&mut &bytes[..]).unwrap();
    assert!(!file.header.counts.contains_key("events"));
    assert_eq!(file.entries.len(), 8);
    assert!(
        file.entries
            .iter()
            .all(|e| e.key.resource != Resource::Events)
    );
}

#[test]
fn malformed_files_name_the_line_and_write_nothing() {
    let a = tempfile::tempdir().unwrap();
    let good = lines(&export_bytes(&source(a.path()), &ExportOptions::default()));
    let with = |i: usize, line: &str| {
        let mut l = good.clone();
        l[i] = line.to_string();
        l.join("\n") + "\n"
    };
    let cm_line = good.iter().position(|l| l.contains("\"cfg\"")).unwrap();
    let pod_line = good.iter().position(|l| l.contains("web-1-a")).unwrap();
    let cut = &good[pod_line][..good[pod_line].len() / 2];
    let cases: Vec<(&str, String, usize, &str)> = vec![
        ("truncated line", with(pod_line, cut), pod_line + 1, "not a"),
        (
            "file cut at a line boundary",
            good[..good.len() - 1].join("\n"),
            good.len() - 1,
            "announces 1 events, the file holds 0",
        ),
        (
            "unknown resource",
            with(
                cm_line,
                &good[cm_line].replace("\"configmaps\"", "\"widgets\""),
            ),
            cm_line + 1,
            "unknown resource \"widgets\"",
        ),
        (
            "missing name",
            with(
                cm_line,
                &good[cm_line].replace("\"name\":\"cfg\"", "\"x\":\"cfg\""),
            ),
            cm_line + 1,
            "without metadata.name",
        ),
        (
            "missing namespace",
            with(
                cm_line,
                &good[cm_line].replace("\"namespace\":\"app\"", "\"x\":1"),
            ),
            cm_line + 1,
            "metadata.namespace is missing",
        ),
        (
            "namespace on a cluster-scoped object",
            with(
                1,
                r#"{"resource":"nodes","object":{"metadata":{"name":"n2","namespace":"app"}}}"#,
            ),
            2,
            "cluster-scoped",
        ),
        (
            "wrong kind",
            with(
                cm_line,
                &good[cm_line].replace("\"ConfigMap\"", "\"Secret\""),
            ),
            cm_line + 1,
            "not ConfigMap",
        ),
        (
            "duplicate object",
            with(cm_line + 1, &good[cm_line]),
            cm_line + 2,
            "also on line",
        ),
        (
            "wrong header",
            with(0, &good[0].replace(KIND, "List")),
            1,
            "expected herd.dev/v1/DatastoreExport",
        ),
        (
            "no header",
            good[1..].join("\n"),
            1,
            "not a DatastoreExport header",
        ),
        ("empty input", String::new(), 1, "empty input"),
    ];
    let b = tempfile::tempdir().unwrap();
    let dst = open(b.path());
    let (k, o) = obj(Resource::ConfigMaps, Some("other"), "keep", json!({}));
    dst.create(&k, o).unwrap();
    let before = contents(&dst);
    let rev = dst.revision().unwrap();
    for (what, text, line, reason) in cases {
        for overwrite in [false, true] {
            let err =
                import(&dst, &mut text.as_bytes(), &ImportOptions { overwrite }).expect_err(what);
            match &err {
                MigrateError::Invalid { line: l, reason: r } => {
                    assert_eq!(*l, line, "{what}: {err}");
                    assert!(r.contains(reason), "{what}: {err}");
                }
                other => panic!("{what}: {other}"),
            }
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
    }
    assert_eq!(dst.revision().unwrap(), rev);
    assert_eq!(contents(&dst), before);

    let mut bad_utf8 = good[..2].join("\n").into_bytes();
    bad_utf8.extend_from_slice(b"\n\xff\xfe\n");
    let err = import(&dst, &mut &bad_utf8[..], &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, MigrateError::Read { line: 3, .. }), "{err}");
    assert_eq!(dst.revision().unwrap(), rev);
}

#[test]
fn existing_objects_need_overwrite() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = source(a.path());
    let bytes = export_bytes(&src, &ExportOptions::default());
    let dst = open(b.path());
    // The target already has two of the file's objects, changed.
    let (k1, o1) = obj(
        Resource::ConfigMaps,
        Some("app"),
        "cfg",
        json!({"data": {"k": "other"}}),
    );
    let (k2, o2) = obj(
        Resource::Namespaces,
        None,
        "default",
        json!({"spec": {"x": 1}}),
    );
    dst.create(&k1, o1).unwrap();
    dst.create(&k2, o2).unwrap();
    let before = contents(&dst);
    let rev = dst.revision().unwrap();

    let err = import(&dst, &mut &bytes[..], &ImportOptions::default()).unwrap_err();
    match &err {
        MigrateError::Exists { objects } => {
            assert_eq!(objects, &["namespaces default", "configmaps app/cfg"]);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("2 objects already exist"), "{err}");
    assert_eq!(dst.revision().unwrap(), rev);
    assert_eq!(contents(&dst), before);

    let opts = ImportOptions { overwrite: true };
    let summary = import(&dst, &mut &bytes[..], &opts).unwrap();
    assert_eq!(summary.replaced["configmaps"], 1);
    assert_eq!(summary.replaced["namespaces"], 1);
    assert_eq!(summary.replaced["pods"], 0);
    assert!(
        summary
            .lines()
            .contains(&"configmaps: 1 (1 replaced)".to_string())
    );
    assert_eq!(contents(&dst), contents(&src));

    // Idempotent: again with overwrite, every object replaced by itself.
    let summary = import(&dst, &mut &bytes[..], &opts).unwrap();
    assert_eq!(summary.replaced.values().sum::<u64>(), 9);
    assert_eq!(contents(&dst), contents(&src));
}

#[test]
fn many_objects_are_written_in_parallel_and_all_arrive() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = open(a.path());
    for i in 0..100 {
        let (k, o) = obj(
            Resource::ConfigMaps,
            Some("default"),
            &format!("c{i:03}"),
            json!({}),
        );
        src.create(&k, o).unwrap();
    }
    let bytes = export_bytes(&src, &ExportOptions::default());
    let dst = open(b.path());
    let summary = import(&dst, &mut &bytes[..], &ImportOptions::default()).unwrap();
    assert_eq!(summary.counts["configmaps"], 100);
    assert_eq!(contents(&src), contents(&dst));
}

/// A LocalStore whose writes of one object fail (as a full disk would).
#[derive(Debug)]
struct Failing {
    inner: LocalStore,
    name: std::sync::Mutex<Option<String>>,
}

impl Failing {
    fn check(&self, key: &Key) -> Result<(), StoreError> {
        if self.name.lock().unwrap().as_deref() == Some(key.name.as_str()) {
            return Err(StoreError::Backend {
                path: "test".into(),
                reason: "disk full".into(),
            });
        }
        Ok(())
    }
}

impl Datastore for Failing {
    fn get(&self, key: &Key) -> Result<Value, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, r: Resource, ns: Option<&str>) -> Result<(Vec<Value>, u64), StoreError> {
        self.inner.list(r, ns)
    }
    fn create(&self, key: &Key, object: Value) -> Result<Value, StoreError> {
        self.check(key)?;
        self.inner.create(key, object)
    }
    fn update(&self, key: &Key, object: Value, expected: Option<u64>) -> Result<Value, StoreError> {
        self.check(key)?;
        self.inner.update(key, object, expected)
    }
    fn delete(&self, key: &Key, expected: Option<u64>) -> Result<Value, StoreError> {
        self.inner.delete(key, expected)
    }
    fn watch(
        &self,
        r: Resource,
        ns: Option<&str>,
        since: Option<u64>,
    ) -> Result<crate::store::WatchStream, StoreError> {
        self.inner.watch(r, ns, since)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
}

#[test]
fn a_failed_write_names_its_line_and_a_rerun_completes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = source(a.path());
    let bytes = export_bytes(&src, &ExportOptions::default());
    let pod_line = lines(&bytes)
        .iter()
        .position(|l| l.contains("web-1-a"))
        .unwrap()
        + 1;
    let dst = Failing {
        inner: open(b.path()),
        name: std::sync::Mutex::new(Some("web-1-a".into())),
    };
    let err = import(&dst, &mut &bytes[..], &ImportOptions::default()).unwrap_err();
    match &err {
        MigrateError::Write {
            line,
            object,
            written,
            source: StoreError::Backend { .. },
        } => {
            assert_eq!(*line, pod_line);
            assert_eq!(object, "pods app/web-1-a");
            // Everything before the pods (resource order) was written.
            assert_eq!(*written, 7);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("re-run with --overwrite"), "{err}");
    // Without --overwrite a re-run refuses what the first one wrote.
    assert!(matches!(
        import(&dst, &mut &bytes[..], &ImportOptions::default()),
        Err(MigrateError::Exists { .. })
    ));
    *dst.name.lock().unwrap() = None;
    import(&dst, &mut &bytes[..], &ImportOptions { overwrite: true }).unwrap();
    assert_eq!(contents(&src), contents(&dst));
}
