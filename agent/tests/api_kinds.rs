//! The cluster kinds through the real API server (unix socket, real
//! `LocalStore` in a temp dir): CRUD and watch of every new kind, defaults,
//! rejected manifests, Service IP/port allocation, status and scale
//! subresources, discovery, group paths, finalizers and propagation,
//! terminating namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use herd_agent::api::server::{ApiState, router_with, serve};
use herd_agent::api::services::ServiceNetwork;
use herd_agent::store::local::LocalStore;

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            LocalStore::open(
                &dir.path().join("store.redb"),
                &dir.path().join("run/secrets.redb"),
            )
            .unwrap(),
        );
        let state = ApiState {
            store,
            runtime: None,
            node_name: "node-a".into(),
            bind_unscheduled: false,
        };
        let net = ServiceNetwork::parse("10.97.0.0/24").unwrap();
        let socket = dir.path().join("agent.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = socket.clone();
        tokio::spawn(async move {
            serve(router_with(state, net), &s, None, async {
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
        Server {
            _dir: dir,
            socket,
            stop: Some(tx),
        }
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        send.send_request(req).await.unwrap()
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let resp = self.raw(method, path, body).await;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (c, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&c), "{method} {path}: {c} {v}");
        v
    }
}

/// Reads `n` watch events (deadline-bounded).
async fn watch_lines(resp: hyper::Response<hyper::body::Incoming>, n: usize) -> Vec<Value> {
    let mut body = resp.into_body();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
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

fn template(labels: Value, restart: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "busybox:1.36"}]});
    if let Some(r) = restart {
        spec["restartPolicy"] = json!(r);
    }
    json!({"metadata": {"labels": labels}, "spec": spec})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": template(json!({"app": name}), None)}})
}

fn service(name: &str, spec: Value) -> Value {
    let mut s = json!({"selector": {"app": name}, "ports": [{"port": 80}]});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": s})
}

/// (collection path, a valid object, a field to change on update).
fn kinds() -> Vec<(&'static str, Value)> {
    let sel = json!({"matchLabels": {"app": "x"}});
    vec![
        (
            "/apis/apps/v1/namespaces/default/deployments",
            deployment("x"),
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "metadata": {"name": "x"},
            "spec": {"selector": sel, "template": template(json!({"app": "x"}), None)}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/daemonsets",
            json!({"apiVersion": "apps/v1",
            "kind": "DaemonSet", "metadata": {"name": "x"},
            "spec": {"selector": sel, "template": template(json!({"app": "x"}), None)}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1",
            "kind": "Job", "metadata": {"name": "x"},
            "spec": {"template": template(json!({}), Some("Never"))}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            service("x", json!({})),
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "x"},
            "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x"},
            "spec": {"podCIDR": "10.42.1.0/24"}}),
        ),
        (
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1",
            "kind": "ServiceAccount", "metadata": {"name": "x"}}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x"},
            "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 10}}),
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "x", "labels": {"kubernetes.io/service-name": "x"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}],
            "ports": [{"port": 80}]}),
        ),
    ]
}

#[tokio::test]
async fn crud_and_watch_every_kind() {
    let s = Server::start().await;
    for (base, obj) in kinds() {
        let created = s.ok("POST", base, Some(obj.clone())).await;
        assert_eq!(created["kind"], obj["kind"], "{base}");
        assert!(created["metadata"]["uid"].is_string(), "{base}");
        let item = format!("{base}/x");
        let got = s.ok("GET", &item, None).await;
        assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
        let list = s.ok("GET", base, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{base}");
        assert_eq!(list["apiVersion"], obj["apiVersion"]);
        // All namespaces: the collection without the namespace.
        let all = base.replace("/namespaces/default", "");
        let list = s
            .ok("GET", &format!("{all}?labelSelector=nope"), None)
            .await;
        assert_eq!(list["items"], json!([]), "{all}");
        let rv = got["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let resp = s
            .raw("GET", &format!("{base}?watch=1&resourceVersion={rv}"), None)
            .await;
        assert_eq!(resp.status(), 200);
        let w = tokio::spawn(watch_lines(resp, 2));
        let mut changed = got.clone();
        changed["metadata"]["labels"]["changed"] = json!("yes");
        let updated = s.ok("PUT", &item, Some(changed)).await;
        assert_eq!(updated["metadata"]["labels"]["changed"], "yes", "{base}");
        s.ok(
            "DELETE",
            &format!("{item}?propagationPolicy=Background"),
            None,
        )
        .await;
        let ev = w.await.unwrap();
        let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["MODIFIED", "DELETED"], "{base}");
        let (c, _) = s.call("GET", &item, None).await;
        assert_eq!(c, 404, "{base}");
    }
}

#[tokio::test]
async fn defaults_as_the_api_server_sets_them() {
    let s = Server::start().await;
    let d = s
        .ok(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some(deployment("web")),
        )
        .await;
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(d["metadata"]["generation"], 1);

    let (_, obj) = kinds().remove(2);
    let ds = s
        .ok(
            "POST",
            "/apis/apps/v1/namespaces/default/daemonsets",
            Some(obj),
        )
        .await;
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );

    let (_, obj) = kinds().remove(3);
    let j = s
        .ok("POST", "/apis/batch/v1/namespaces/default/jobs", Some(obj))
        .await;
    let spec = &j["spec"];
    assert_eq!(
        (spec["parallelism"].clone(), spec["completions"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(spec["template"]["metadata"]["labels"]["job-name"], "x");

    let svc = s
        .ok(
            "POST",
            "/api/v1/namespaces/default/services",
            Some(service(
                "web",
                json!({"ports": [{"port": 8080}], "sessionAffinity": "ClientIP"}),
            )),
        )
        .await;
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 8080);
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["clusterIPs"][0], spec["clusterIP"]);
    assert_eq!(
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
}

#[tokio::test]
async fn invalid_manifests_name_the_field_and_store_nothing() {
    let s = Server::start().await;
    let mut d = deployment("bad");
    d["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let mut rs = kinds().remove(1).1;
    rs["spec"]["replicas"] = json!(-1);
    let mut ds = kinds().remove(2).1;
    ds["spec"].as_object_mut().unwrap().remove("selector");
    let mut job = kinds().remove(3).1;
    job["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let cases = [
        (
            "/apis/apps/v1/namespaces/default/deployments",
            d,
            "spec.template.metadata.labels",
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            rs,
            "spec.replicas",
        ),
        (
            "/apis/apps/v1/namespaces/default/daemonsets",
            ds,
            "spec.selector",
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            job,
            "spec.template.spec.restartPolicy",
        ),
        (
            "/api/v1/namespaces/default/services",
            service("bad", json!({"ports": [{"port": 70000}]})),
            "spec.ports[0].port",
        ),
        (
            "/api/v1/namespaces/default/services",
            service(
                "bad",
                json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}),
            ),
            "spec.ports[1].name",
        ),
        (
            "/api/v1/namespaces/default/services",
            service("bad", json!({"ports": [{"port": 80, "nodePort": 30001}]})),
            "spec.ports[0].nodePort",
        ),
        (
            "/api/v1/namespaces/default/endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "bad"}, "subsets": [{"addresses": [{"ip": "nope"}]}]}),
            "subsets[0].addresses[0].ip",
        ),
        (
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bad"},
            "spec": {"podCIDR": "garbage"}}),
            "spec.podCIDR",
        ),
        (
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1",
            "kind": "ServiceAccount", "metadata": {"name": "Bad_Name"}}),
            "metadata.name",
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "bad"},
            "spec": {"leaseDurationSeconds": 0}}),
            "spec.leaseDurationSeconds",
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "bad"}, "addressType": "IPv5", "endpoints": []}),
            "addressType",
        ),
    ];
    for (base, obj, field) in cases {
        let (c, v) = s.call("POST", base, Some(obj)).await;
        assert_eq!(c, 422, "{base}: {v}");
        let fields: Vec<&str> = v["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{base}: {field} not in {fields:?}");
        let list = s.ok("GET", base, None).await;
        assert_eq!(list["items"], json!([]), "{base} stored something");
    }
    // Garbage and wrong groups are 400s.
    let (c, _) = s
        .call(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some(json!({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}})),
        )
        .await;
    assert_eq!(c, 400);
}

#[tokio::test]
async fn service_ips_and_node_ports() {
    let s = Arc::new(Server::start().await);
    let base = "/api/v1/namespaces/default/services";
    // Concurrent creates never share an IP.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.ok("POST", base, Some(service(&format!("s{i}"), json!({}))))
                .await
        }));
    }
    let mut ips = std::collections::BTreeSet::new();
    for t in tasks {
        let v = t.await.unwrap();
        let ip = v["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(
            ip.starts_with("10.97.0.") && ip != "10.97.0.1" && ip != "10.97.0.0",
            "{ip}"
        );
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
    }
    // A requested free IP is honoured; a taken or foreign one is a 422.
    // (Picks are random: request one the loop above did not get.)
    let free = (200..254)
        .map(|n| format!("10.97.0.{n}"))
        .find(|ip| !ips.contains(ip))
        .unwrap();
    let v = s
        .ok(
            "POST",
            base,
            Some(service("req", json!({"clusterIP": free}))),
        )
        .await;
    assert_eq!(v["spec"]["clusterIP"], free.as_str());
    for (name, ip) in [("dup", free.as_str()), ("far", "10.200.0.5")] {
        let (c, e) = s
            .call("POST", base, Some(service(name, json!({"clusterIP": ip}))))
            .await;
        assert_eq!(c, 422, "{e}");
        assert_eq!(e["details"]["causes"][0]["field"], "spec.clusterIP");
    }
    // Freed on delete.
    s.ok("DELETE", &format!("{base}/req"), None).await;
    s.ok(
        "POST",
        base,
        Some(service("again", json!({"clusterIP": free}))),
    )
    .await;
    // Headless.
    let v = s
        .ok(
            "POST",
            base,
            Some(service("headless", json!({"clusterIP": "None"}))),
        )
        .await;
    assert_eq!(v["spec"]["clusterIP"], "None");
    // NodePorts: allocated in range, requested honoured, conflicts refused.
    let v = s
        .ok(
            "POST",
            base,
            Some(service(
                "np",
                json!({"type": "NodePort",
            "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b", "nodePort": 30080}]}),
            )),
        )
        .await;
    let auto = v["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&auto), "{auto}");
    assert_eq!(v["spec"]["ports"][1]["nodePort"], 30080);
    let (c, e) = s
        .call(
            "POST",
            base,
            Some(service(
                "np2",
                json!({"type": "NodePort",
            "ports": [{"port": 80, "nodePort": 30080}]}),
            )),
        )
        .await;
    assert_eq!(
        (c, e["details"]["causes"][0]["field"].clone()),
        (422, json!("spec.ports[0].nodePort"))
    );
    // Update: a manifest without clusterIP/nodePort keeps them; changing
    // the IP is refused.
    let mut again = service(
        "np",
        json!({"type": "NodePort",
        "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b", "nodePort": 30080}]}),
    );
    again["metadata"]["labels"] = json!({"v": "2"});
    let u = s
        .ok("PUT", &format!("{base}/np"), Some(again.clone()))
        .await;
    assert_eq!(u["spec"]["clusterIP"], v["spec"]["clusterIP"]);
    assert_eq!(u["spec"]["ports"][0]["nodePort"], auto);
    again["spec"]["clusterIP"] = json!("10.97.0.201");
    let (c, e) = s.call("PUT", &format!("{base}/np"), Some(again)).await;
    assert_eq!(
        (c, e["details"]["causes"][0]["field"].clone()),
        (422, json!("spec.clusterIP"))
    );
}

#[tokio::test]
async fn status_generation_and_scale() {
    let s = Server::start().await;
    let base = "/apis/apps/v1/namespaces/default/deployments";
    let d = s.ok("POST", base, Some(deployment("web"))).await;
    // A PUT of the main resource ignores status; a label change keeps the
    // generation, a spec change bumps it.
    let mut next = d.clone();
    next["status"] = json!({"replicas": 9});
    next["metadata"]["labels"] = json!({"a": "b"});
    let u = s.ok("PUT", &format!("{base}/web"), Some(next)).await;
    assert_eq!(
        (u["metadata"]["generation"].clone(), u["status"].clone()),
        (json!(1), Value::Null)
    );
    let mut next = u.clone();
    next["spec"]["replicas"] = json!(3);
    let u = s.ok("PUT", &format!("{base}/web"), Some(next)).await;
    assert_eq!(u["metadata"]["generation"], 2);
    // /status changes only status.
    let mut st = u.clone();
    st["status"] = json!({"replicas": 3, "readyReplicas": 2, "observedGeneration": 2});
    st["spec"]["replicas"] = json!(7);
    let u = s.ok("PUT", &format!("{base}/web/status"), Some(st)).await;
    assert_eq!(
        (
            u["spec"]["replicas"].clone(),
            u["status"]["readyReplicas"].clone()
        ),
        (json!(3), json!(2))
    );
    assert_eq!(u["metadata"]["generation"], 2);
    // Scale.
    let sc = s.ok("GET", &format!("{base}/web/scale"), None).await;
    assert_eq!(sc["kind"], "Scale");
    assert_eq!(sc["apiVersion"], "autoscaling/v1");
    assert_eq!(
        (
            sc["spec"]["replicas"].clone(),
            sc["status"]["replicas"].clone()
        ),
        (json!(3), json!(3))
    );
    assert_eq!(sc["status"]["selector"], "app=web");
    let mut up = sc.clone();
    up["spec"]["replicas"] = json!(5);
    let sc2 = s
        .ok("PUT", &format!("{base}/web/scale"), Some(up.clone()))
        .await;
    assert_eq!(sc2["spec"]["replicas"], 5);
    let d = s.ok("GET", &format!("{base}/web"), None).await;
    assert_eq!(
        (
            d["spec"]["replicas"].clone(),
            d["metadata"]["generation"].clone()
        ),
        (json!(5), json!(3))
    );
    // Stale resourceVersion and negative counts are refused.
    let (c, _) = s
        .call("PUT", &format!("{base}/web/scale"), Some(up.clone()))
        .await;
    assert_eq!(c, 409);
    up["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    up["spec"]["replicas"] = json!(-1);
    let (c, e) = s.call("PUT", &format!("{base}/web/scale"), Some(up)).await;
    assert_eq!(
        (c, e["details"]["causes"][0]["field"].clone()),
        (422, json!("spec.replicas"))
    );
    // Selector is immutable.
    let mut d2 = d.clone();
    d2["spec"]["selector"] = json!({"matchLabels": {"app": "web", "x": "y"}});
    d2["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
    let (c, e) = s.call("PUT", &format!("{base}/web"), Some(d2)).await;
    assert_eq!(
        (c, e["details"]["causes"][0]["field"].clone()),
        (422, json!("spec.selector"))
    );
    // No scale on daemonsets, no status on configmaps.
    let (c, _) = s
        .call(
            "GET",
            "/apis/apps/v1/namespaces/default/daemonsets/x/scale",
            None,
        )
        .await;
    assert_eq!(c, 404);
    let (c, _) = s
        .call(
            "GET",
            "/api/v1/namespaces/default/configmaps/x/status",
            None,
        )
        .await;
    assert_eq!(c, 404);
}

#[tokio::test]
async fn discovery_and_group_paths() {
    let s = Server::start().await;
    let core = s.ok("GET", "/api/v1", None).await;
    let names: Vec<String> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    for n in [
        "services",
        "services/status",
        "nodes",
        "nodes/status",
        "endpoints",
        "serviceaccounts",
    ] {
        assert!(names.iter().any(|x| x == n), "{n}");
    }
    assert!(!names.iter().any(|x| x == "deployments"));
    let groups = s.ok("GET", "/apis", None).await;
    let g: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        g,
        ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io"]
    );
    let apps = s.ok("GET", "/apis/apps/v1", None).await;
    let dep = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap()
        .clone();
    assert_eq!(dep["shortNames"], json!(["deploy"]));
    assert!(
        apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale")
    );
    let batch = s.ok("GET", "/apis/batch", None).await;
    assert_eq!(batch["preferredVersion"]["groupVersion"], "batch/v1");
    for bad in [
        "/api/v1/namespaces/default/deployments",
        "/api/v1/jobs",
        "/apis/apps/v1/namespaces/default/pods",
        "/apis/apps/v2/deployments",
        "/apis/extensions/v1beta1",
    ] {
        let (c, _) = s.call("GET", bad, None).await;
        assert_eq!(c, 404, "{bad}");
    }
}

#[tokio::test]
async fn finalizers_and_propagation() {
    let s = Server::start().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    s.ok(
        "POST",
        cms,
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["example.com/x"]}})),
    )
    .await;
    let v = s.ok("DELETE", &format!("{cms}/held"), None).await;
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let mut held = s.ok("GET", &format!("{cms}/held"), None).await;
    // No finalizer may be added now; removing the last one removes it.
    held["metadata"]["finalizers"] = json!(["example.com/x", "more"]);
    let (c, _) = s
        .call("PUT", &format!("{cms}/held"), Some(held.clone()))
        .await;
    assert_eq!(c, 422);
    held["metadata"]["finalizers"] = json!([]);
    s.ok("PUT", &format!("{cms}/held"), Some(held)).await;
    let (c, _) = s.call("GET", &format!("{cms}/held"), None).await;
    assert_eq!(c, 404);

    let deps = "/apis/apps/v1/namespaces/default/deployments";
    for (name, policy, finalizer) in [
        ("fg", "Foreground", Some("foregroundDeletion")),
        ("or", "Orphan", Some("orphan")),
        ("bg", "Background", None),
    ] {
        s.ok("POST", deps, Some(deployment(name))).await;
        s.ok(
            "DELETE",
            &format!("{deps}/{name}?propagationPolicy={policy}"),
            None,
        )
        .await;
        let (c, v) = s.call("GET", &format!("{deps}/{name}"), None).await;
        match finalizer {
            Some(f) => {
                assert_eq!(c, 200, "{policy}");
                assert_eq!(v["metadata"]["finalizers"], json!([f]));
                assert!(v["metadata"]["deletionTimestamp"].is_string());
            }
            None => assert_eq!(c, 404, "{policy}"),
        }
    }
    // The body's DeleteOptions work too; batch/v1 Jobs orphan by default.
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    s.ok("POST", jobs, Some(kinds().remove(3).1)).await;
    s.ok("DELETE", &format!("{jobs}/x"), None).await;
    let v = s.ok("GET", &format!("{jobs}/x"), None).await;
    assert_eq!(v["metadata"]["finalizers"], json!(["orphan"]));
    s.ok(
        "DELETE",
        &format!("{jobs}/x"),
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    let (c, _) = s.call("GET", &format!("{jobs}/x"), None).await;
    assert_eq!(c, 404);
}

#[tokio::test]
async fn terminating_namespace_refuses_creates() {
    let s = Server::start().await;
    s.ok(
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team"}})),
    )
    .await;
    let v = s.ok("DELETE", "/api/v1/namespaces/team", None).await;
    assert_eq!(v["status"]["phase"], "Terminating");
    assert_eq!(v["spec"]["finalizers"], json!(["kubernetes"]));
    let (c, e) = s
        .call(
            "POST",
            "/apis/apps/v1/namespaces/team/deployments",
            Some(deployment("web")),
        )
        .await;
    assert_eq!((c, e["reason"].clone()), (403, json!("Forbidden")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("being terminated"));
    // Clearing the finalizer through /finalize removes the namespace.
    let mut ns = s.ok("GET", "/api/v1/namespaces/team", None).await;
    ns["spec"]["finalizers"] = json!([]);
    s.ok("PUT", "/api/v1/namespaces/team/finalize", Some(ns))
        .await;
    let (c, _) = s.call("GET", "/api/v1/namespaces/team", None).await;
    assert_eq!(c, 404);
    let (c, _) = s.call("DELETE", "/api/v1/namespaces/default", None).await;
    assert_eq!(c, 403);
}
