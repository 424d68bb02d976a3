//! Pod volumes on a real host: tmpfs for Memory emptyDirs and secrets
//! (secret bytes never in a file on disk), atomic configMap updates,
//! hostPath type checks, subPath escapes, teardown leaving no mount.
//!
//! Pod dirs live under `CARGO_TARGET_TMPDIR` (on disk, not tmpfs), so "not
//! on disk" is a real check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use herd_agent::api::Resource;
use herd_agent::kubelet::volumes::{
    self, PodVolumes, VolumeContext, VolumeKind, container_mounts, container_mounts_with_env,
};
use herd_agent::store::local::LocalStore;
use herd_agent::store::{Datastore, Key};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-9f8e7d6c5b4a";

/// A pods dir on disk plus a store; tears the pod down on drop.
struct Fixture {
    _dir: tempfile::TempDir,
    pods: PathBuf,
    store: LocalStore,
    uid: String,
}

impl Fixture {
    fn new(uid: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kubelet-volumes-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let pods = dir.path().join("pods");
        fs::create_dir_all(&pods).unwrap();
        let store = LocalStore::open(
            &dir.path().join("store.redb"),
            &dir.path().join("secrets.redb"),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            pods,
            store,
            uid: uid.to_string(),
        }
    }

    fn ctx(&self) -> VolumeContext<'_> {
        VolumeContext {
            objects: &self.store,
            pods_dir: &self.pods,
            node_name: "node1",
            node_memory_bytes: 256 << 20,
            node_cpu_millis: 2000,
        }
    }

    fn put(&self, resource: Resource, name: &str, obj: Value) {
        let key = Key::namespaced(resource, "default", name);
        match self.store.get(&key) {
            Ok(_) => self.store.update(&key, obj, None).map(drop).unwrap(),
            Err(_) => self.store.create(&key, obj).map(drop).unwrap(),
        }
    }

    fn pod(&self, spec: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": self.uid,
                         "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod_dir(&self) -> PathBuf {
        self.pods.join(&self.uid)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = volumes::teardown(&self.uid, &self.pods);
    }
}

fn mounts_under(root: &Path) -> Vec<(PathBuf, String)> {
    let root = fs::canonicalize(root).unwrap_or(root.to_path_buf());
    volumes::host::mounts(Path::new("/proc"))
        .unwrap()
        .into_iter()
        .filter(|(p, _)| p.starts_with(&root))
        .collect()
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8], out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_containing(&e.path(), needle, out);
        } else if t.is_file() {
            let data = fs::read(e.path()).unwrap();
            if data.windows(needle.len()).any(|w| w == needle) {
                out.push(e.path());
            }
        }
    }
}

fn secret_obj(value: &str) -> Value {
    use std::io::Write;
    // base64 by hand (no dependency): the API's `data` form.
    let mut enc = Vec::new();
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in value.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                enc.write_all(&[table[((n >> (18 - 6 * i)) & 63) as usize]])
                    .unwrap();
            } else {
                enc.push(b'=');
            }
        }
    }
    json!({"metadata": {"name": "creds", "namespace": "default"},
           "data": {"password": String::from_utf8(enc).unwrap()}})
}

#[test]
fn memory_empty_dir_and_secrets_are_tmpfs_and_never_on_disk() {
    if !herd_integration::root_or_skip("memory_empty_dir_and_secrets_are_tmpfs", "root") {
        return;
    }
    let f = Fixture::new("uid-tmpfs-1");
    f.put(Resource::Secrets, "creds", secret_obj(SECRET));
    let pod = f.pod(json!({
        "containers": [],
        "volumes": [
            {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "proj", "projected": {"sources": [
                {"secret": {"name": "creds", "items": [{"key": "password", "path": "pw"}]}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"serviceAccountToken": {"path": "token"}}
            ]}}
        ]
    }));
    let vols = volumes::setup(&pod, &f.ctx()).unwrap();
    let cache = &vols.get("cache").unwrap().host_path;
    let creds = &vols.get("creds").unwrap().host_path;
    let proj = &vols.get("proj").unwrap().host_path;
    assert_eq!(vols.get("scratch").unwrap().kind, VolumeKind::EmptyDir);
    let m = mounts_under(&f.pod_dir());
    assert_eq!(m.len(), 3, "{m:?}");
    for dir in [cache, creds, proj] {
        let canon = fs::canonicalize(dir).unwrap();
        assert!(
            m.iter().any(|(p, t)| *p == canon && t == "tmpfs"),
            "{} not a tmpfs: {m:?}",
            dir.display()
        );
    }
    let st = rustix::fs::statvfs(cache).unwrap();
    assert_eq!(st.f_blocks * st.f_frsize, 16 << 20);
    assert_eq!(fs::read_to_string(creds.join("password")).unwrap(), SECRET);
    let mode = fs::metadata(creds.join("password")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o400);
    assert_eq!(fs::read_to_string(proj.join("pw")).unwrap(), SECRET);
    assert_eq!(
        fs::read_to_string(proj.join("labels")).unwrap(),
        "app=\"web\""
    );
    assert!(!proj.join("token").exists());

    // Every file holding the secret is on a tmpfs, none on the disk.
    let disk_dev = fs::metadata(&f.pods).unwrap().dev();
    let mut found = Vec::new();
    files_containing(&f.pods, SECRET.as_bytes(), &mut found);
    assert_eq!(found.len(), 2, "{found:?}");
    for p in &found {
        assert_ne!(
            fs::metadata(p).unwrap().dev(),
            disk_dev,
            "{} on disk",
            p.display()
        );
    }

    // Idempotent: a second setup mounts nothing new.
    let again = volumes::setup(&pod, &f.ctx()).unwrap();
    assert_eq!(again, vols);
    assert_eq!(mounts_under(&f.pod_dir()).len(), 3);

    volumes::teardown(&f.uid, &f.pods).unwrap();
    assert!(mounts_under(&f.pods).is_empty());
    assert!(!f.pod_dir().exists());
    let mut found = Vec::new();
    files_containing(&f.pods, SECRET.as_bytes(), &mut found);
    assert!(found.is_empty(), "{found:?}");
    volumes::teardown(&f.uid, &f.pods).unwrap();
    assert!(volumes::list_pod_dirs(&f.pods).is_empty());
}

#[test]
fn config_map_updates_are_atomic() {
    if !herd_integration::root_or_skip("config_map_updates_are_atomic", "root") {
        return;
    }
    let f = Fixture::new("uid-cm-1");
    let cm =
        |data: Value| json!({"metadata": {"name": "app", "namespace": "default"}, "data": data});
    f.put(Resource::ConfigMaps, "app", cm(json!({"a": "1", "b": "2"})));
    let pod = f.pod(json!({
        "containers": [],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "app"}},
            {"name": "one", "configMap": {"name": "app", "items": [{"key": "a", "path": "dir/x", "mode": 0o600}]}},
            {"name": "opt", "configMap": {"name": "missing", "optional": true}}
        ]
    }));
    let vols = volumes::setup(&pod, &f.ctx()).unwrap();
    let cfg = vols.get("cfg").unwrap().host_path.clone();
    assert_eq!(fs::read_to_string(cfg.join("a")).unwrap(), "1");
    assert_eq!(fs::read_link(cfg.join("a")).unwrap(), Path::new("..data/a"));
    let one = &vols.get("one").unwrap().host_path;
    assert_eq!(fs::read_to_string(one.join("dir/x")).unwrap(), "1");
    assert_eq!(
        fs::metadata(one.join("dir/x")).unwrap().mode() & 0o777,
        0o600
    );
    let first = fs::read_link(cfg.join("..data")).unwrap();

    // No change: nothing rewritten.
    volumes::setup(&pod, &f.ctx()).unwrap();
    assert_eq!(fs::read_link(cfg.join("..data")).unwrap(), first);

    // Change: a new payload dir, swapped in; the old one is gone.
    f.put(
        Resource::ConfigMaps,
        "app",
        cm(json!({"a": "10", "c": "3"})),
    );
    volumes::setup(&pod, &f.ctx()).unwrap();
    let second = fs::read_link(cfg.join("..data")).unwrap();
    assert_ne!(second, first);
    assert!(!cfg.join(&first).exists());
    assert_eq!(fs::read_to_string(cfg.join("a")).unwrap(), "10");
    assert_eq!(fs::read_to_string(cfg.join("c")).unwrap(), "3");
    assert!(fs::symlink_metadata(cfg.join("b")).is_err());

    // A missing, non-optional configMap names the volume and the map.
    let bad = f.pod(json!({"containers": [],
        "volumes": [{"name": "x", "configMap": {"name": "nope"}}]}));
    let e = volumes::setup(&bad, &f.ctx()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"x\" : configmap \"nope\" not found"
    );
    let bad = f.pod(json!({"containers": [],
        "volumes": [{"name": "x", "configMap": {"name": "app", "items": [{"key": "zz", "path": "p"}]}}]}));
    assert!(volumes::setup(&bad, &f.ctx()).is_err());
}

#[test]
fn host_path_types_are_checked() {
    if !herd_integration::root_or_skip("host_path_types_are_checked", "root") {
        return;
    }
    let f = Fixture::new("uid-hp-1");
    let hp = f.pods.parent().unwrap().join("host");
    fs::create_dir_all(&hp).unwrap();
    let sock = hp.join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    fs::write(hp.join("file"), "x").unwrap();
    let vol = |path: &Path, ty: &str| {
        f.pod(json!({"containers": [],
            "volumes": [{"name": "h", "hostPath": {"path": path, "type": ty}}]}))
    };
    for (path, ty) in [
        (hp.clone(), "Directory"),
        (hp.join("file"), "File"),
        (sock.clone(), "Socket"),
        (PathBuf::from("/dev/null"), "CharDevice"),
        (hp.join("made/dir"), "DirectoryOrCreate"),
        (hp.join("made-file"), "FileOrCreate"),
        (hp.join("anything"), ""),
    ] {
        let v = volumes::setup(&vol(&path, ty), &f.ctx()).unwrap();
        assert_eq!(v.get("h").unwrap().host_path, path, "{ty}");
    }
    assert!(hp.join("made/dir").is_dir());
    assert!(hp.join("made-file").is_file());
    for (path, ty, what) in [
        (hp.join("file"), "Directory", "a directory"),
        (hp.clone(), "File", "a file"),
        (hp.join("file"), "Socket", "a socket file"),
        (hp.join("file"), "CharDevice", "a character device"),
        (PathBuf::from("/dev/null"), "BlockDevice", "a block device"),
    ] {
        let e = volumes::setup(&vol(&path, ty), &f.ctx()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not {what}",
                path.display()
            )
        );
    }
}

fn container(mounts: Value) -> Container {
    serde_json::from_value(json!({"name": "c", "image": "i", "volumeMounts": mounts})).unwrap()
}

#[test]
fn sub_paths_stay_inside_their_volume() {
    if !herd_integration::root_or_skip("sub_paths_stay_inside_their_volume", "root") {
        return;
    }
    let f = Fixture::new("uid-sub-1");
    f.put(
        Resource::ConfigMaps,
        "app",
        json!({"metadata": {"name": "app", "namespace": "default"}, "data": {"k": "v"}}),
    );
    let pod = f.pod(json!({"containers": [], "volumes": [
        {"name": "data", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "app"}}
    ]}));
    let vols: PodVolumes = volumes::setup(&pod, &f.ctx()).unwrap();
    let data = vols.get("data").unwrap().host_path.clone();
    symlink("/etc", data.join("evil")).unwrap();
    symlink("../../../../../../../../etc/passwd", data.join("evil2")).unwrap();
    fs::create_dir(data.join("real")).unwrap();
    symlink("real", data.join("good")).unwrap();

    for sub in ["evil", "evil/x", "evil2", "../x", "/abs"] {
        let c = container(json!([{"name": "data", "mountPath": "/d", "subPath": sub}]));
        let e = container_mounts(&c, &vols).unwrap_err();
        assert!(e.to_string().contains(sub), "{sub}: {e}");
    }
    assert!(!Path::new("/etc/x").exists());

    let c = container(json!([
        {"name": "data", "mountPath": "/a", "subPath": "new/dir"},
        {"name": "data", "mountPath": "/b", "subPath": "good"},
        {"name": "data", "mountPath": "/c", "subPathExpr": "$(POD)/logs"},
        {"name": "cfg", "mountPath": "/k", "subPath": "k"},
        {"name": "data", "mountPath": "/ro", "readOnly": true, "mountPropagation": "HostToContainer"}
    ]));
    let env = vec![("POD".to_string(), "p".to_string())];
    let m = container_mounts_with_env(&c, &vols, &env).unwrap();
    let canon = fs::canonicalize(&data).unwrap();
    assert_eq!(m[0].host_path, canon.join("new/dir"));
    assert!(canon.join("new/dir").is_dir());
    assert_eq!(m[1].host_path, canon.join("real"));
    assert_eq!(m[2].host_path, canon.join("p/logs"));
    assert!(
        m[3].host_path
            .starts_with(fs::canonicalize(&vols.get("cfg").unwrap().host_path).unwrap())
    );
    assert_eq!(fs::read_to_string(&m[3].host_path).unwrap(), "v");
    assert!(m[3].read_only, "configMap mounts are read-only");
    assert!(!m[0].read_only && m[4].read_only);
    assert_eq!(
        m[4].propagation,
        herd_runtime::types::MountPropagation::HostToContainer
    );

    let c = container(json!([{"name": "nope", "mountPath": "/x"}]));
    assert_eq!(
        container_mounts(&c, &vols).unwrap_err().to_string(),
        "cannot find volume \"nope\" to mount into container \"c\""
    );
    let c = container(
        json!([{"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"}]),
    );
    assert!(container_mounts(&c, &vols).is_err());
}
