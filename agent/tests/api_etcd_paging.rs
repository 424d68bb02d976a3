//! The API server on the etcd store (a real Debian etcd on 127.0.0.1):
//! `limit`/`continue` pages read only their objects and form a consistent
//! snapshot at the first page's revision; selectors page over matching
//! objects; a token whose revision etcd compacted is 410.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_agent::api::server::{ApiState, router, serve};
use herd_agent::store::etcd::{EtcdConfig, EtcdStore};
use herd_integration::etcd::{EtcdCluster, EtcdOpts, etcd_or_skip};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

async fn call(socket: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
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
    let resp = send.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, v)
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// Follows `continue` until the end; every page's items and metadata.
async fn all_pages(socket: &Path, base: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut path = base.to_string();
    loop {
        let (code, page) = call(socket, "GET", &path, None).await;
        assert_eq!(code, 200, "{page}");
        let next = page["metadata"]["continue"].as_str().map(str::to_string);
        pages.push(page);
        match next {
            Some(c) => path = format!("{base}&continue={c}"),
            None => return pages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_a_consistent_snapshot_read_range_by_range() {
    if !etcd_or_skip("pages_are_a_consistent_snapshot_read_range_by_range") {
        return;
    }
    let etcd = EtcdCluster::start(EtcdOpts {
        members: 1,
        ..EtcdOpts::default()
    })
    .unwrap();
    let prefix = format!("/herd-paging-{}", std::process::id());
    let endpoints = etcd.endpoints();
    let store = tokio::task::spawn_blocking(move || {
        EtcdStore::connect(EtcdConfig::new(endpoints, &prefix)).unwrap()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("agent.sock");
    let state = ApiState {
        store: Arc::new(store.clone()),
        runtime: None,
        node_name: "node-a".into(),
        bind_unscheduled: false,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = socket.clone();
    let server = tokio::spawn(async move {
        serve(router(state), &s, None, async {
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

    // 30 ConfigMaps in two namespaces, every third one labelled.
    for ns in ["alpha", "beta"] {
        let (code, body) = call(
            &socket,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    for i in 0..30 {
        let ns = if i % 2 == 0 { "alpha" } else { "beta" };
        let labels = if i % 3 == 0 {
            json!({"pick": "yes"})
        } else {
            json!({})
        };
        let (code, body) = call(
            &socket,
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("cm-{i:02}"), "labels": labels},
                        "data": {"v": "1"}})),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }

    // First page: 10 items, a token, the exact remainder.
    let (code, first) = call(&socket, "GET", "/api/v1/configmaps?limit=10", None).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(names(&first).len(), 10);
    assert_eq!(first["metadata"]["remainingItemCount"], 20);
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();

    // Changes after the first page: an update, a delete, a create.
    let (code, cm) = call(
        &socket,
        "GET",
        "/api/v1/namespaces/beta/configmaps/cm-29",
        None,
    )
    .await;
    assert_eq!(code, 200);
    let mut changed = cm.clone();
    changed["data"]["v"] = json!("2");
    assert_eq!(
        call(
            &socket,
            "PUT",
            "/api/v1/namespaces/beta/configmaps/cm-29",
            Some(changed)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &socket,
            "DELETE",
            "/api/v1/namespaces/beta/configmaps/cm-27",
            None
        )
        .await
        .0,
        200
    );
    let (code, _) = call(
        &socket,
        "POST",
        "/api/v1/namespaces/beta/configmaps",
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-99"}})),
    )
    .await;
    assert_eq!(code, 201);

    // The rest of the pages still show the first page's revision.
    let mut seen: Vec<String> = names(&first);
    let mut path = format!("/api/v1/configmaps?limit=10&continue={token}");
    loop {
        let (code, page) = call(&socket, "GET", &path, None).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["metadata"]["resourceVersion"], rv.as_str());
        for o in page["items"].as_array().unwrap() {
            if o["metadata"]["name"] == "cm-29" {
                assert_eq!(
                    o["data"]["v"], "1",
                    "a later update leaked into the snapshot"
                );
            }
        }
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(c) => path = format!("/api/v1/configmaps?limit=10&continue={c}"),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 30, "{seen:?}");
    assert_eq!(unique.len(), 30, "duplicates across pages: {seen:?}");
    assert!(seen.contains(&"beta/cm-27".to_string()));
    assert!(!seen.contains(&"beta/cm-99".to_string()));

    // A selector pages over matching objects only (no remaining count).
    let pages = all_pages(
        &socket,
        "/api/v1/configmaps?limit=3&labelSelector=pick%3Dyes",
    )
    .await;
    let picked: Vec<String> = pages.iter().flat_map(names).collect();
    // Ten were labelled; cm-27 is gone since.
    assert_eq!(picked.len(), 9, "{picked:?}");
    assert!(
        pages
            .iter()
            .all(|p| p["items"].as_array().unwrap().len() <= 3)
    );
    assert!(
        pages
            .iter()
            .all(|p| p["metadata"].get("remainingItemCount").is_none())
    );
    // One namespace.
    let pages = all_pages(&socket, "/api/v1/namespaces/alpha/configmaps?limit=4").await;
    let alpha: Vec<String> = pages.iter().flat_map(names).collect();
    assert_eq!(alpha.len(), 15);
    assert!(alpha.iter().all(|n| n.starts_with("alpha/")));

    // A token whose revision etcd compacted: 410 Expired, as kube-apiserver.
    let current = tokio::task::spawn_blocking({
        let s = store.clone();
        move || {
            use herd_agent::store::Datastore;
            let r = s.revision().unwrap();
            s.compact(r).unwrap();
            r
        }
    })
    .await
    .unwrap();
    assert!(current > rv.parse::<u64>().unwrap());
    let (code, body) = call(
        &socket,
        "GET",
        &format!("/api/v1/configmaps?limit=10&continue={token}"),
        None,
    )
    .await;
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["reason"], "Expired");

    let _ = tx.send(());
    server.await.unwrap();
}
