//! The API server over a real unix socket, backed by a real `LocalStore`
//! in a temp dir: CRUD, Status errors, watches, selectors, graceful delete,
//! YAML and garbage bodies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use herd_agent::api::server::{ApiState, router, serve};
use herd_agent::store::local::LocalStore;

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start() -> Server {
        Server::with_runtime(None).await.0
    }

    async fn with_runtime(
        runtime: Option<Arc<herd_runtime::pod::PodRuntime>>,
    ) -> (Server, Arc<LocalStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            LocalStore::open(
                &dir.path().join("store.redb"),
                &dir.path().join("run/secrets.redb"),
            )
            .unwrap(),
        );
        let state = ApiState {
            store: store.clone(),
            runtime,
            node_name: "node-a".into(),
            bind_unscheduled: false,
        };
        let socket = dir.path().join("agent.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = socket.clone();
        let task = tokio::spawn(async move {
            serve(router(state), &s, None, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::UnixStream::connect(&socket).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never came up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let server = Server {
            _dir: dir,
            socket,
            stop: Some(tx),
            task: Some(task),
        };
        (server, store)
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        ctype: &str,
        body: Vec<u8>,
    ) -> hyper::Response<hyper::body::Incoming> {
        connect_and_send(&self.socket, method, path, ctype, body).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.call_bytes(method, path, "application/json", body)
            .await
    }

    async fn call_bytes(
        &self,
        method: &str,
        path: &str,
        ctype: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let resp = self.raw(method, path, ctype, body).await;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

async fn connect_and_send(
    socket: &Path,
    method: &str,
    path: &str,
    ctype: &str,
    body: Vec<u8>,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send.send_request(req).await.unwrap()
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// Reads watch lines until `n` events arrived (deadline-bounded).
async fn watch_lines(resp: hyper::Response<hyper::body::Incoming>, n: usize) -> Vec<Value> {
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("watch events did not arrive in time");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn discovery_and_health() {
    let s = Server::start().await;
    let (c, v) = s.call("GET", "/version", None).await;
    assert_eq!(c, 200);
    assert_eq!(v["gitVersion"], "v1.33.0-herd");
    let (c, v) = s.call("GET", "/healthz", None).await;
    assert_eq!((c, v), (200, json!("ok")));
    let (_, v) = s.call("GET", "/api", None).await;
    assert_eq!(v["versions"][0], "v1");
    let (_, v) = s.call("GET", "/api/v1", None).await;
    assert_eq!(v["kind"], "APIResourceList");
    let (_, v) = s.call("GET", "/apis", None).await;
    assert_eq!(v["groups"][0]["name"], "apps");
    let (c, v) = s.call("GET", "/nope", None).await;
    assert_eq!(
        (c, v["kind"].clone(), v["code"].clone()),
        (404, json!("Status"), json!(404))
    );
    // Default namespaces exist.
    let (c, v) = s.call("GET", "/api/v1/namespaces", None).await;
    assert_eq!(c, 200);
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "kube-system"]);
    s.shutdown().await;
}

#[tokio::test]
async fn crud_and_status_errors() {
    let s = Server::start().await;
    let base = "/api/v1/namespaces/default/configmaps";
    let (c, v) = s.call("POST", base, Some(cm("one", json!({})))).await;
    assert_eq!(c, 201, "{v}");
    assert_eq!(v["metadata"]["namespace"], "default");
    assert!(v["metadata"]["uid"].is_string());
    let rv1 = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (c, v) = s.call("POST", base, Some(cm("one", json!({})))).await;
    assert_eq!(c, 409);
    assert_eq!(v["reason"], "AlreadyExists");
    assert_eq!(v["message"], "configmaps \"one\" already exists");
    let (c, v) = s.call("GET", &format!("{base}/missing"), None).await;
    assert_eq!(c, 404);
    assert_eq!(v["message"], "configmaps \"missing\" not found");
    // Invalid name → 422 naming the field.
    let (c, v) = s.call("POST", base, Some(cm("Bad_Name", json!({})))).await;
    assert_eq!(c, 422, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    // Missing namespace → 404 like the API server.
    let (c, v) = s
        .call(
            "POST",
            "/api/v1/namespaces/nowhere/configmaps",
            Some(cm("x", json!({}))),
        )
        .await;
    assert_eq!(c, 404);
    assert_eq!(v["message"], "namespaces \"nowhere\" not found");
    // Body namespace differs from the URL → 400.
    let mut other = cm("y", json!({}));
    other["metadata"]["namespace"] = json!("kube-system");
    let (c, _) = s.call("POST", base, Some(other)).await;
    assert_eq!(c, 400);
    // Replace with a stale resourceVersion → 409 Conflict; current → 200.
    let (_, cur) = s.call("GET", &format!("{base}/one"), None).await;
    let mut upd = cur.clone();
    upd["data"]["k"] = json!("w");
    let (c, v) = s
        .call("PUT", &format!("{base}/one"), Some(upd.clone()))
        .await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["data"]["k"], "w");
    assert_ne!(v["metadata"]["resourceVersion"].as_str().unwrap(), rv1);
    let (c, v) = s.call("PUT", &format!("{base}/one"), Some(upd)).await;
    assert_eq!(c, 409);
    assert_eq!(v["reason"], "Conflict");
    // Name mismatch → 400.
    let (c, _) = s.call("PUT", &format!("{base}/two"), Some(cur)).await;
    assert_eq!(c, 400);
    // dryRun creates nothing.
    let (c, _) = s
        .call(
            "POST",
            &format!("{base}?dryRun=All"),
            Some(cm("dry", json!({}))),
        )
        .await;
    assert_eq!(c, 201);
    let (c, _) = s.call("GET", &format!("{base}/dry"), None).await;
    assert_eq!(c, 404);
    // A DELETE pinned to a stale resourceVersion stays a 409 (the server
    // retries lost write races only for unpinned deletes) and keeps the
    // object.
    let stale = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                       "preconditions": {"resourceVersion": rv1}});
    let (c, v) = s.call("DELETE", &format!("{base}/one"), Some(stale)).await;
    assert_eq!((c, v["reason"].clone()), (409, json!("Conflict")), "{v}");
    let (c, _) = s.call("GET", &format!("{base}/one"), None).await;
    assert_eq!(c, 200);
    // Delete at once (not a pod).
    let (c, v) = s.call("DELETE", &format!("{base}/one"), None).await;
    assert_eq!(c, 200);
    assert_eq!(v["metadata"]["name"], "one");
    let (c, _) = s.call("GET", &format!("{base}/one"), None).await;
    assert_eq!(c, 404);
    // A PATCH without a patch content type: 415.
    let (c, v) = s.call("PATCH", &format!("{base}/one"), None).await;
    assert_eq!(
        (c, v["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    // Wrong method.
    let (c, v) = s.call("POST", &format!("{base}/one"), None).await;
    assert_eq!((c, v["kind"].clone()), (405, json!("Status")));
    s.shutdown().await;
}

#[tokio::test]
async fn yaml_and_garbage_bodies() {
    let s = Server::start().await;
    let base = "/api/v1/namespaces/default/configmaps";
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    let (c, v) = s
        .call_bytes("POST", base, "application/yaml", yaml.as_bytes().to_vec())
        .await;
    assert_eq!(c, 201, "{v}");
    assert_eq!(v["data"]["a"], "b");
    for garbage in [
        &b"{\"kind\": "[..],
        b"\xff\xfe\x00",
        b"",
        b"- a\n- b\n",
        b"[1,2]",
    ] {
        let (c, v) = s
            .call_bytes("POST", base, "application/json", garbage.to_vec())
            .await;
        assert_eq!(c, 400, "{garbage:?}: {v}");
        assert_eq!(v["kind"], "Status");
    }
    // Unknown kind.
    let (c, _) = s
        .call(
            "POST",
            base,
            Some(json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}})),
        )
        .await;
    assert_eq!(c, 400);
    // Too large → 413 Status.
    let big = vec![b' '; 4 * 1024 * 1024];
    let (c, v) = s.call_bytes("POST", base, "application/json", big).await;
    assert_eq!(c, 413);
    assert_eq!(v["code"], 413);
    s.shutdown().await;
}

#[tokio::test]
async fn selectors_on_list() {
    let s = Server::start().await;
    let base = "/api/v1/namespaces/default/configmaps";
    for (n, l) in [
        ("a", json!({"app": "web"})),
        ("b", json!({"app": "db"})),
        ("c", json!({})),
    ] {
        let (c, _) = s.call("POST", base, Some(cm(n, l))).await;
        assert_eq!(c, 201);
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = s
        .call("GET", &format!("{base}?labelSelector=app%3Dweb"), None)
        .await;
    assert_eq!(names(&v), ["a"]);
    assert_eq!(v["kind"], "ConfigMapList");
    let (_, v) = s
        .call(
            "GET",
            &format!("{base}?labelSelector=app%20in%20(web,db)"),
            None,
        )
        .await;
    assert_eq!(names(&v), ["a", "b"]);
    let (_, v) = s
        .call("GET", &format!("{base}?labelSelector=!app"), None)
        .await;
    assert_eq!(names(&v), ["c"]);
    let (_, v) = s
        .call(
            "GET",
            "/api/v1/configmaps?fieldSelector=metadata.name%3Db",
            None,
        )
        .await;
    assert_eq!(names(&v), ["b"]);
    let (c, v) = s
        .call(
            "GET",
            &format!("{base}?fieldSelector=spec.nodeName%3Dx"),
            None,
        )
        .await;
    assert_eq!(c, 400, "{v}");
    s.shutdown().await;
}

#[tokio::test]
async fn watch_from_zero_from_rv_and_expired() {
    let s = Server::start().await;
    let base = "/api/v1/namespaces/default/configmaps";
    let (_, a) = s.call("POST", base, Some(cm("a", json!({})))).await;
    let rv_a: u64 = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // From 0: ADDED for what exists, then changes.
    let resp = s
        .raw(
            "GET",
            &format!("{base}?watch=true"),
            "application/json",
            vec![],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let w = tokio::spawn(watch_lines(resp, 3));
    let (_, _) = s.call("POST", base, Some(cm("b", json!({})))).await;
    let (c, _) = s.call("DELETE", &format!("{base}/a"), None).await;
    assert_eq!(c, 200);
    let ev = w.await.unwrap();
    let summary: Vec<(String, String)> = ev
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ADDED".into(), "a".into()),
            ("ADDED".into(), "b".into()),
            ("DELETED".into(), "a".into())
        ]
    );
    // From a version: only what came after it.
    let resp = s
        .raw(
            "GET",
            &format!("{base}?watch=1&resourceVersion={rv_a}"),
            "",
            vec![],
        )
        .await;
    let ev = watch_lines(resp, 2).await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["metadata"]["name"], "b");
    assert_eq!(ev[1]["type"], "DELETED");
    s.shutdown().await;
}

#[tokio::test]
async fn watch_expired_is_an_error_event() {
    let dir = tempfile::tempdir().unwrap();
    {
        let st = LocalStore::open(&dir.path().join("s.redb"), &dir.path().join("x.redb")).unwrap();
        use herd_agent::store::{Datastore, Key};
        for name in ["old", "older"] {
            st.create(
                &Key::namespaced(herd_agent::api::Resource::ConfigMaps, "default", name),
                cm(name, json!({})),
            )
            .unwrap();
        }
    }
    // Reopened: the ring starts after the existing revisions.
    let store = LocalStore::open(&dir.path().join("s.redb"), &dir.path().join("x.redb")).unwrap();
    let state = ApiState {
        store: Arc::new(store),
        runtime: None,
        node_name: "n".into(),
        bind_unscheduled: false,
    };
    let socket = dir.path().join("a.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sp = socket.clone();
    let task = tokio::spawn(async move {
        serve(router(state), &sp, None, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = connect_and_send(
        &socket,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1",
        "",
        vec![],
    )
    .await;
    let ev = watch_lines(resp, 5).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
    let _ = tx.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn graceful_pod_delete() {
    let s = Server::start().await;
    let base = "/api/v1/namespaces/default/pods";
    let (c, v) = s
        .call("POST", base, Some(pod("bound", Some("node-a"))))
        .await;
    assert_eq!(c, 201, "{v}");
    assert_eq!(v["status"]["phase"], "Pending");
    let (c, v) = s.call("DELETE", &format!("{base}/bound"), None).await;
    assert_eq!(c, 200);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 30);
    let (c, _) = s.call("GET", &format!("{base}/bound"), None).await;
    assert_eq!(c, 200, "still there until the kubelet finishes");
    // gracePeriodSeconds=0 deletes at once.
    let (c, _) = s
        .call(
            "DELETE",
            &format!("{base}/bound?gracePeriodSeconds=0"),
            None,
        )
        .await;
    assert_eq!(c, 200);
    let (c, _) = s.call("GET", &format!("{base}/bound"), None).await;
    assert_eq!(c, 404);
    // Unbound pod: at once.
    let (c, _) = s.call("POST", base, Some(pod("free", None))).await;
    assert_eq!(c, 201);
    let (c, _) = s
        .call(
            "DELETE",
            &format!("{base}/free"),
            Some(json!({"gracePeriodSeconds": 5})),
        )
        .await;
    assert_eq!(c, 200);
    let (c, _) = s.call("GET", &format!("{base}/free"), None).await;
    assert_eq!(c, 404);
    // Status goes through /status only.
    let (_, p) = s.call("POST", base, Some(pod("st", Some("node-a")))).await;
    let mut p2 = p.clone();
    p2["status"]["phase"] = json!("Running");
    let (c, v) = s.call("PUT", &format!("{base}/st"), Some(p2.clone())).await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["status"]["phase"], "Pending");
    p2["metadata"]["resourceVersion"] = v["metadata"]["resourceVersion"].clone();
    let (c, v) = s.call("PUT", &format!("{base}/st/status"), Some(p2)).await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(v["status"]["phase"], "Running");
    s.shutdown().await;
}

// ---- logs and exec with real runc ----

mod real {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use herd_agent::store::{Datastore, Key};
    use herd_images::{ImageStore, ImportOptions};
    use herd_integration::ImageOpts;
    use herd_runtime::oci::{RuntimeBinary, RuntimeKind};
    use herd_runtime::pod::{ContainerState, PodRuntime, RuntimeConfig};
    use herd_runtime::types::{
        ContainerConfig, ContainerResources, LogLimits, NamespaceOptions, PodSandboxConfig,
        SecurityContext,
    };
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const IMAGE: &str = "herd.test/busybox:latest";

    struct Rt {
        _tmp: tempfile::TempDir,
        rt: Arc<PodRuntime>,
    }

    impl Rt {
        fn new(name: &str) -> Rt {
            let tmp = tempfile::Builder::new()
                .prefix(&format!("herd-api-{name}-"))
                .tempdir()
                .unwrap();
            let root = tmp.path().to_path_buf();
            let layout = root.join("layout");
            herd_integration::write_oci_layout(&layout, &ImageOpts::new(IMAGE)).unwrap();
            let store = ImageStore::open(&root.join("images")).unwrap();
            store.import(&layout, &ImportOptions::default()).unwrap();
            let cfg = RuntimeConfig {
                run_dir: root.join("run"),
                log_dir: root.join("logs"),
                cgroup_root: PathBuf::from("/sys/fs/cgroup"),
                cgroup_base: format!("herd-api-{}-{name}", std::process::id()),
                runtime: RuntimeBinary {
                    kind: RuntimeKind::Runc,
                    path: PathBuf::from("/usr/sbin/runc"),
                    root: root.join("runc"),
                },
                monitor_exe: PathBuf::from(env!("CARGO_BIN_EXE_herd")),
                monitor_args: vec!["monitor".into()],
                node_memory_bytes: 8 << 30,
            };
            let rt = Arc::new(PodRuntime::new(cfg, store).unwrap());
            Rt { _tmp: tmp, rt }
        }

        /// A sandbox + one running container `main`, and its Pod object.
        fn pod(&self, store: &LocalStore, name: &str, uid: &str, script: &str) {
            let c = ContainerConfig {
                name: "main".into(),
                attempt: 0,
                image: IMAGE.to_string(),
                command: vec!["sh".into(), "-c".into(), script.into()],
                args: vec![],
                working_dir: None,
                env: vec![],
                mounts: vec![],
                resources: ContainerResources::default(),
                security: SecurityContext::default(),
                tty: false,
                stdin: false,
                log: LogLimits::default(),
            };
            let p = PodSandboxConfig {
                init_containers: vec![],
                uid: uid.to_string(),
                name: name.to_string(),
                namespace: "default".to_string(),
                hostname: name.to_string(),
                namespaces: NamespaceOptions::default(),
                containers: vec![c.resources],
                pids_limit: Some(256),
                shm_size_bytes: 16 << 20,
                dns: Default::default(),
                host_aliases: vec![],
                sysctls: Default::default(),
                pod_ip: None,
            };
            self.rt.run_pod_sandbox(&p).unwrap();
            let rec = self.rt.run_container(uid, &c).unwrap();
            let s = self.rt.wait_started(&rec, Duration::from_secs(10)).unwrap();
            assert!(!matches!(s, ContainerState::Created), "{s:?}");
            store
                .create(
                    &Key::namespaced(herd_agent::api::Resource::Pods, "default", name),
                    json!({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": "default", "uid": uid},
                           "spec": {"nodeName": "node-a",
                                    "containers": [{"name": "main", "image": IMAGE}]}}),
                )
                .unwrap();
        }
    }

    impl Drop for Rt {
        fn drop(&mut self) {
            if let Ok(pods) = self.rt.list_pods() {
                for uid in pods {
                    let _ = self.rt.remove_pod_sandbox(&uid);
                }
            }
            let _ = self.rt.cgroups().remove_tree();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logs_and_follow() {
        if !herd_integration::root_or_skip("api_logs", "runc, cgroups, mounts") {
            return;
        }
        let rt = Rt::new("logs");
        let (s, store) = Server::with_runtime(Some(rt.rt.clone())).await;
        rt.pod(
            &store,
            "logger",
            "uid-logger-1",
            "echo one; echo two >&2; sleep 1; echo three",
        );
        let base = "/api/v1/namespaces/default/pods/logger/log";
        // follow: everything until the container exits, then the stream ends.
        let resp = s
            .raw("GET", &format!("{base}?follow=true"), "", vec![])
            .await;
        assert_eq!(resp.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
            .await
            .expect("follow did not end after the container exited")
            .unwrap()
            .to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), "one\ntwo\nthree\n");
        let (c, v) = s.call("GET", &format!("{base}?tailLines=1"), None).await;
        assert_eq!((c, v), (200, json!("three\n")));
        let resp = s
            .raw(
                "GET",
                &format!("{base}?timestamps=true&limitBytes=5"),
                "",
                vec![],
            )
            .await;
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        // An RFC 3339 timestamp starts the line: "2026-".
        assert_eq!(body.len(), 5);
        assert_eq!(body[4], b'-');
        let (c, v) = s.call("GET", &format!("{base}?container=nope"), None).await;
        assert_eq!(c, 400);
        assert_eq!(v["message"], "container nope is not valid for pod logger");
        let (c, v) = s.call("GET", &format!("{base}?previous=true"), None).await;
        assert_eq!(c, 400, "{v}");
        let (c, _) = s
            .call("GET", "/api/v1/namespaces/default/pods/absent/log", None)
            .await;
        assert_eq!(c, 404);
        s.shutdown().await;
    }

    async fn ws_exec(socket: &Path, query: &str, stdin: &[u8]) -> (Vec<u8>, Vec<u8>, Value) {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let mut req = format!("ws://localhost/api/v1/namespaces/default/pods/sleeper/exec?{query}")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
        );
        let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
        assert_eq!(
            resp.headers().get("sec-websocket-protocol").unwrap(),
            "v5.channel.k8s.io"
        );
        if !stdin.is_empty() {
            let mut m = vec![0u8];
            m.extend_from_slice(stdin);
            ws.send(Message::Binary(m.into())).await.unwrap();
            ws.send(Message::Binary(vec![255u8, 0].into()))
                .await
                .unwrap();
        }
        let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Value::Null);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
            let Ok(Message::Binary(b)) = msg else {
                continue;
            };
            match b.first() {
                Some(1) => out.extend_from_slice(&b[1..]),
                Some(2) => err.extend_from_slice(&b[1..]),
                Some(3) => status = serde_json::from_slice(&b[1..]).unwrap(),
                _ => {}
            }
        }
        (out, err, status)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_over_websocket() {
        if !herd_integration::root_or_skip("api_exec", "runc, cgroups, mounts") {
            return;
        }
        let rt = Rt::new("exec");
        let (s, store) = Server::with_runtime(Some(rt.rt.clone())).await;
        rt.pod(&store, "sleeper", "uid-sleeper-1", "exec sleep 3600");
        let (out, err, status) = ws_exec(
            &s.socket,
            "command=sh&command=-c&command=echo%20out;echo%20err%20%3E%262&stdout=true&stderr=true",
            b"",
        )
        .await;
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(status["status"], "Success");
        let (out, _, status) = ws_exec(
            &s.socket,
            "command=cat&stdin=true&stdout=true",
            b"piped in\n",
        )
        .await;
        assert_eq!(out, b"piped in\n");
        assert_eq!(status["status"], "Success");
        let (_, _, status) = ws_exec(
            &s.socket,
            "command=sh&command=-c&command=exit%203&stdout=true",
            b"",
        )
        .await;
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        let (out, _, _) = ws_exec(&s.socket, "command=tty&tty=true&stdout=true", b"").await;
        assert!(String::from_utf8_lossy(&out).starts_with("/dev/pts/"));
        // Not a WebSocket request → 400 Status.
        let (c, v) = s
            .call(
                "POST",
                "/api/v1/namespaces/default/pods/sleeper/exec?command=ls",
                None,
            )
            .await;
        assert_eq!((c, v["kind"].clone()), (400, json!("Status")));
        s.shutdown().await;
    }
}
