//! `herd datastore export` / `import` end to end, as root: a single-node
//! agent with a Deployment, a ConfigMap and a Secret is exported over its
//! unix socket, imported into a real etcd 3.4 member on 127.0.0.1
//! ([`EtcdCluster`], one member; under a key prefix of its own), exported back from etcd (same objects, uids and
//! specs), refused there a second time without `--overwrite`, then imported
//! over the socket into a fresh agent. And without root, the library in
//! process: a LocalStore through a (single-voter) Raft store and through
//! etcd back into a LocalStore.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::store::etcd::{EtcdConfig, EtcdStore};
use herd_agent::store::local::LocalStore;
use herd_agent::store::migrate::{self, ExportOptions, ImportOptions};
use herd_agent::store::raft::{MemRouter, RaftConfig, RaftStore};
use herd_agent::store::{Datastore, Key};
use herd_integration::agent::{Agent, AgentOpts, CliOutput, sleeper_deployment};
use herd_integration::etcd::{EtcdCluster, EtcdOpts, etcd_or_skip};
use serde_json::{Value, json};

fn ok(out: &CliOutput) {
    assert_eq!(out.status, 0, "{out:?}");
}

/// An export file: its header, and its objects by `plural ns/name`.
fn objects(path: &Path) -> (Value, BTreeMap<String, Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for (i, l) in lines.enumerate() {
        let v: Value = serde_json::from_str(l).unwrap();
        let mut object = v["object"].clone();
        object["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let key = format!(
            "{} {}/{}",
            v["resource"].as_str().unwrap(),
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap()
        );
        assert!(out.insert(key.clone(), object).is_none(), "{key} twice");
        if i == 0 {
            assert_eq!(v["resource"], "namespaces", "{l}");
        }
    }
    let total: u64 = header["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, out.len(), "{header}");
    (header, out)
}

/// Polls `GET path` until `done` holds for the list's items.
fn wait_list(a: &Agent, path: &str, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = a.http("GET", path, None).unwrap();
        if status == 200 {
            let list: Value = serde_json::from_str(&body).unwrap();
            if done(list["items"].as_array().unwrap()) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn embedded_to_etcd_and_back() {
    if !herd_integration::root_or_skip(
        "embedded_to_etcd_and_back",
        "runs herd agents (runc, cgroups, network namespaces)",
    ) || !etcd_or_skip("embedded_to_etcd_and_back")
    {
        return;
    }
    let started = Instant::now();
    let herd = env!("CARGO_BIN_EXE_herd");
    let a = Agent::start(herd, "dsmigsrc", AgentOpts::default()).unwrap();
    a.create(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"}, "data": {"mode": "fast"}}))
        .unwrap();
    a.create(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds"}, "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="}}))
        .unwrap();
    ok(&a.apply(&sleeper_deployment("web", 1)).unwrap());
    // The Deployment's ReplicaSet and pod exist (owned, with uids).
    wait_list(&a, "/apis/apps/v1/namespaces/default/replicasets", |i| {
        i.len() == 1
    });
    wait_list(&a, "/api/v1/namespaces/default/pods", |i| i.len() == 1);

    let dir = tempfile::tempdir().unwrap();
    let file1 = dir.path().join("from-agent.jsonl");
    let out = a
        .cli(&["datastore", "export", "-o", file1.to_str().unwrap()])
        .unwrap();
    ok(&out);
    assert!(out.stderr.contains("Secrets in plain text"), "{out:?}");
    let mode = std::fs::metadata(&file1).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (header1, objs1) = objects(&file1);
    assert_eq!(header1["kind"], "DatastoreExport");
    for key in [
        "configmaps default/settings",
        "secrets default/creds",
        "deployments default/web",
        "namespaces /default",
        &format!("nodes /{}", a.node_name),
    ] {
        assert!(objs1.contains_key(key), "{key} missing: {objs1:?}");
    }
    assert!(
        objs1
            .keys()
            .any(|k| k.starts_with("replicasets default/web-"))
    );
    assert!(objs1.keys().any(|k| k.starts_with("pods default/web-")));
    // The Secret's data as stored (base64 of "hunter2"), unencrypted.
    assert_eq!(
        objs1["secrets default/creds"]["data"]["password"],
        "aHVudGVyMg=="
    );

    // The routes are the unix socket's only: over HTTPS, even as admin,
    // they do not exist.
    let out = a
        .kubectl(&["get", "--raw", "/herd/v1/datastore/export"], None)
        .unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("NotFound"), "{out:?}");
    // The agent validates the whole body too: a bad line is a 400 naming
    // it, and the good line before it is not written.
    let bad = concat!(
        r#"{"apiVersion":"herd.dev/v1","kind":"DatastoreExport","resourceVersion":"1","exportedAt":"","counts":{"configmaps":1}}"#,
        "\n",
        r#"{"resource":"configmaps","object":{"metadata":{"name":"x","namespace":"default"}}}"#,
        "\n",
        r#"{"resource":"widgets","object":{"metadata":{"name":"y"}}}"#,
        "\n"
    );
    let (status, mut body) = a
        .request(
            "POST",
            "/herd/v1/datastore/import",
            Some(bad),
            "application/jsonl",
        )
        .unwrap();
    let mut text = String::new();
    body.read_to_string(&mut text).unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("line 3: unknown resource"), "{text}");
    let (status, _) = a
        .http("GET", "/api/v1/namespaces/default/configmaps/x", None)
        .unwrap();
    assert_eq!(status, 404);

    let etcd = EtcdCluster::start(EtcdOpts {
        members: 1,
        ..EtcdOpts::default()
    })
    .unwrap();
    let url = etcd.url();
    let prefix = format!("/herd-mig-{}", std::process::id());
    let store_flags = ["--datastore", url.as_str(), "--datastore-prefix", &prefix];
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(store_flags);
        a.cli(&all).unwrap()
    };
    let out = cli(&["datastore", "import", "-f", file1.to_str().unwrap()]);
    ok(&out);
    assert!(
        out.stdout
            .contains(&format!("imported {} objects", objs1.len())),
        "{out:?}"
    );
    // One key per object, all under the prefix.
    let keys = etcd
        .etcdctl(&["get", &format!("{prefix}/"), "--prefix", "--keys-only"])
        .unwrap();
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), objs1.len());
    let file2 = dir.path().join("from-etcd.jsonl");
    ok(&cli(&[
        "datastore",
        "export",
        "-o",
        file2.to_str().unwrap(),
    ]));
    let (_, objs2) = objects(&file2);
    // Same objects, byte for byte but for resourceVersion: names, uids,
    // specs, status, owner references.
    assert_eq!(
        objs1.keys().collect::<Vec<_>>(),
        objs2.keys().collect::<Vec<_>>()
    );
    for (k, v) in &objs1 {
        assert_eq!(v, &objs2[k], "{k}");
    }
    // A second import without --overwrite refuses, listing the objects.
    let out = cli(&["datastore", "import", "-f", file1.to_str().unwrap()]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("already exist") && out.stderr.contains("configmaps default/settings"),
        "{out:?}"
    );
    // With --overwrite: idempotent.
    let out = cli(&[
        "datastore",
        "import",
        "--overwrite",
        "-f",
        file1.to_str().unwrap(),
    ]);
    ok(&out);
    assert!(
        out.stdout.contains(&format!("({} replaced)", objs1.len())),
        "{out:?}"
    );

    // Back: into a fresh single-node agent over its socket. It has made
    // its own namespaces, Node and service objects: --overwrite.
    let b = Agent::start(herd, "dsmigdst", AgentOpts::default()).unwrap();
    let out = b
        .cli(&["datastore", "import", "-f", file2.to_str().unwrap()])
        .unwrap();
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("namespaces default"), "{out:?}");
    let out = b
        .cli(&[
            "datastore",
            "import",
            "--overwrite",
            "-f",
            file2.to_str().unwrap(),
        ])
        .unwrap();
    ok(&out);
    let file3 = dir.path().join("from-b.jsonl");
    ok(&b
        .cli(&[
            "datastore",
            "export",
            "--skip-events",
            "-o",
            file3.to_str().unwrap(),
        ])
        .unwrap());
    let (header3, objs3) = objects(&file3);
    assert!(header3["counts"].get("events").is_none(), "{header3}");
    for (k, v) in &objs2 {
        // B's controllers own pods and events from now on (its ReplicaSet
        // controller may replace a pod bound to A's node).
        if k.starts_with("events ") || k.starts_with("pods ") {
            continue;
        }
        let got = objs3.get(k).unwrap_or_else(|| panic!("{k} missing in b"));
        assert_eq!(got["metadata"]["uid"], v["metadata"]["uid"], "{k}");
    }
    for k in [
        "configmaps default/settings",
        "secrets default/creds",
        "deployments default/web",
    ] {
        assert_eq!(objs3[k]["metadata"]["uid"], objs1[k]["metadata"]["uid"]);
        assert_eq!(objs3[k]["spec"], objs1[k]["spec"], "{k}");
        assert_eq!(objs3[k]["data"], objs1[k]["data"], "{k}");
    }
    eprintln!("embedded_to_etcd_and_back: {:?}", started.elapsed());
}

/// A LocalStore in `dir` with namespaces, a node, secrets and `n` config
/// maps.
fn filled_local(dir: &Path, n: usize) -> LocalStore {
    let s = LocalStore::open(&dir.join("store.redb"), &dir.join("run/secrets.redb")).unwrap();
    for ns in ["default", "team-a"] {
        s.create(
            &Key::cluster(Resource::Namespaces, ns),
            json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": format!("uid-{ns}")}}),
        )
        .unwrap();
    }
    s.create(
        &Key::cluster(Resource::Nodes, "n1"),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "uid-n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .unwrap();
    s.create(
        &Key::namespaced(Resource::Secrets, "team-a", "pw"),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "pw", "namespace": "team-a", "uid": "uid-pw"},
            "data": {"p": "c2VjcmV0"}}),
    )
    .unwrap();
    for i in 0..n {
        let name = format!("cm-{i:04}");
        s.create(
            &Key::namespaced(Resource::ConfigMaps, "team-a", &name),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{i}"),
                    "labels": {"i": i.to_string()}},
                "data": {"v": "x".repeat(i % 50)}}),
        )
        .unwrap();
    }
    s
}

/// Every object of `s`, without resourceVersions, by resource and name.
fn contents(s: &dyn Datastore) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in Resource::ALL {
        for mut o in s.list(r, None).unwrap().0 {
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            let k = format!(
                "{r} {}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            );
            out.insert(k, o);
        }
    }
    out
}

/// `from` → file → `to`; the file.
fn migrate_between(from: &dyn Datastore, to: &dyn Datastore) -> Vec<u8> {
    let mut file = Vec::new();
    let exported = migrate::export(from, &mut file, &ExportOptions::default()).unwrap();
    let imported = migrate::import(to, &mut &file[..], &ImportOptions::default()).unwrap();
    assert_eq!(exported.counts, imported.counts);
    file
}

#[test]
fn local_through_raft_and_back() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let src = filled_local(&dir.path().join("src"), 200);
    let router = MemRouter::new();
    let mut cfg = RaftConfig::new(1, "n1", dir.path().join("raft"));
    cfg.write_timeout = Duration::from_secs(2);
    // Secrets are sealed in the Raft log under the cluster key.
    cfg.cluster_key = Some([7u8; 32]);
    let raft = RaftStore::open(cfg, router.transport("n1")).unwrap();
    router.register("n1", raft.handler());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(raft.initialize_single()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !raft.is_leader() {
        assert!(Instant::now() < deadline, "no raft leader");
        std::thread::sleep(Duration::from_millis(5));
    }
    migrate_between(&src, &raft);
    assert_eq!(contents(&src), contents(&raft));
    let back = filled_local(&dir.path().join("back"), 0);
    let err = migrate::import(
        &back,
        &mut &migrate_file(&raft)[..],
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("namespaces default"), "{err}");
    let summary = migrate::import(
        &back,
        &mut &migrate_file(&raft)[..],
        &ImportOptions { overwrite: true },
    )
    .unwrap();
    assert_eq!(summary.replaced["namespaces"], 2);
    assert_eq!(contents(&src), contents(&back));
    router.unregister("n1");
    eprintln!("local_through_raft_and_back: {:?}", started.elapsed());
}

fn migrate_file(s: &dyn Datastore) -> Vec<u8> {
    let mut file = Vec::new();
    migrate::export(s, &mut file, &ExportOptions::default()).unwrap();
    file
}

#[test]
fn local_through_etcd_and_back() {
    if !etcd_or_skip("local_through_etcd_and_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = filled_local(&dir.path().join("src"), 1000);
    let etcd = EtcdCluster::start(EtcdOpts {
        members: 1,
        ..EtcdOpts::default()
    })
    .unwrap();
    let prefix = format!("/herd-mig-lib-{}", std::process::id());
    let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints(), &prefix)).unwrap();
    let started = Instant::now();
    migrate_between(&src, &store);
    let into_etcd = started.elapsed();
    assert_eq!(contents(&src), contents(&store));
    let back = filled_local(&dir.path().join("back"), 0);
    let file = migrate_file(&store);
    migrate::import(&back, &mut &file[..], &ImportOptions { overwrite: true }).unwrap();
    assert_eq!(contents(&src), contents(&back));
    eprintln!(
        "local_through_etcd_and_back: 1004 objects into etcd in {into_etcd:?}, total {:?}",
        started.elapsed()
    );
}
