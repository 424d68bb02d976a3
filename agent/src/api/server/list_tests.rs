#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::http::{HeaderValue, header};

use super::*;
use crate::store::Key;
use crate::store::local::LocalStore;

fn state() -> (tempfile::TempDir, ApiState) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(
        &dir.path().join("s.redb"),
        &dir.path().join("run/secrets.redb"),
    )
    .unwrap();
    let state = ApiState {
        store: Arc::new(store),
        runtime: None,
        node_name: "n".into(),
        bind_unscheduled: false,
    };
    (dir, state)
}

fn cm(ns: &str, name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}})
}

fn names(p: &Page) -> Vec<String> {
    p.items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn fill(state: &ApiState) {
    for (ns, name, app) in [
        ("a", "c1", "x"),
        ("a", "c2", "y"),
        ("a", "c3", "x"),
        ("b", "c1", "x"),
        ("b", "c4", "x"),
    ] {
        state
            .store
            .create(
                &Key::namespaced(Resource::ConfigMaps, ns, name),
                cm(ns, name, app),
            )
            .unwrap();
    }
}

#[test]
fn token_round_trip_and_garbage() {
    let t = Continue {
        rv: 42,
        start: "ns/name-ü".into(),
    };
    assert_eq!(Continue::decode(&t.encode()).unwrap(), t);
    for bad in [
        "%%%",
        "e30",
        "bm90IGpzb24",
        &b64::encode(br#"{"v":"x","rv":1,"start":"a"}"#),
    ] {
        assert_eq!(Continue::decode(bad).unwrap_err().code(), 400, "{bad}");
    }
    for n in 0..7 {
        let bytes: Vec<u8> = (0..n).map(|i| i * 37 + 1).collect();
        assert_eq!(b64::decode(&b64::encode(&bytes)).unwrap(), bytes);
    }
}

#[test]
fn pages_cover_everything_once_across_namespaces_with_selectors() {
    let (_d, state) = state();
    fill(&state);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let raw = match &token {
            Some(t) => format!("limit=2&labelSelector=app%3Dx&continue={t}"),
            None => "limit=2&labelSelector=app%3Dx".to_string(),
        };
        let p = page(
            &state,
            Resource::ConfigMaps,
            None,
            &Query::parse(Some(&raw)),
        )
        .unwrap();
        pages += 1;
        seen.extend(p.items.iter().map(key_of));
        match p.metadata["continue"].as_str() {
            Some(t) => {
                // With a selector the count of what remains is unknown:
                // kube-apiserver omits it.
                assert!(p.metadata.get("remainingItemCount").is_none());
                token = Some(t.to_string());
            }
            None => {
                assert!(p.metadata.get("remainingItemCount").is_none());
                break;
            }
        }
    }
    assert_eq!(seen, ["a/c1", "a/c3", "b/c1", "b/c4"]);
    assert_eq!(pages, 2);
    let first = page(
        &state,
        Resource::ConfigMaps,
        Some("a"),
        &Query::parse(Some("limit=1")),
    )
    .unwrap();
    assert_eq!(names(&first), ["c1"]);
    assert_eq!(first.metadata["remainingItemCount"], 2);
    let all = page(&state, Resource::ConfigMaps, Some("a"), &Query::default()).unwrap();
    assert_eq!(names(&all), ["c1", "c2", "c3"]);
    assert!(all.metadata.get("continue").is_none());
}

#[test]
fn resource_version_semantics() {
    let (_d, state) = state();
    fill(&state);
    let current = state.store.revision().unwrap();
    let q = |s: String| Query::parse(Some(&s));
    let ok = |s: String| page(&state, Resource::ConfigMaps, None, &q(s));
    assert!(
        ok(format!(
            "resourceVersion={current}&resourceVersionMatch=Exact"
        ))
        .is_ok()
    );
    assert!(ok("resourceVersion=1&resourceVersionMatch=NotOlderThan".to_string()).is_ok());
    assert!(ok("resourceVersion=0".into()).is_ok());
    let code = |s: String| ok(s).unwrap_err().code();
    assert_eq!(
        code("resourceVersion=1&resourceVersionMatch=Exact".to_string()),
        410
    );
    assert_eq!(code(format!("resourceVersion={}", current + 5)), 504);
    assert_eq!(code("resourceVersionMatch=Exact".into()), 400);
    assert_eq!(
        code("resourceVersion=1&resourceVersionMatch=Newest".into()),
        400
    );
    assert_eq!(code("resourceVersion=x".into()), 400);
    assert_eq!(code("continue=garbage!".into()), 400);
    let t = Continue {
        rv: current,
        start: "a/c1".into(),
    }
    .encode();
    assert_eq!(code(format!("continue={t}&resourceVersion=3")), 400);
}

async fn body(r: Response) -> Value {
    use http_body_util::BodyExt;
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn item_and_list_as_table() {
    let (_d, state) = state();
    fill(&state);
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
    );
    let q = Query::parse(Some("limit=1"));
    let r = list(&state, Resource::ConfigMaps, Some("b"), &q, &h)
        .await
        .unwrap();
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    );
    let t = body(r).await;
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"][0]["cells"][0], "c1");
    assert_eq!(t["metadata"]["remainingItemCount"], 1);
    assert!(t["metadata"]["continue"].is_string());
    let r = list(
        &state,
        Resource::ConfigMaps,
        None,
        &Query::default(),
        &HeaderMap::new(),
    )
    .await
    .unwrap();
    let l = body(r).await;
    assert_eq!(l["kind"], "ConfigMapList");
    assert_eq!(l["items"].as_array().unwrap().len(), 5);
    let r = item(
        Resource::ConfigMaps,
        cm("a", "c1", "x"),
        &Query::default(),
        &h,
    )
    .unwrap();
    let t = body(r).await;
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    let r = item(
        Resource::ConfigMaps,
        cm("a", "c1", "x"),
        &Query::default(),
        &HeaderMap::new(),
    )
    .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
}

#[tokio::test(start_paused = true)]
async fn a_future_version_waits_then_times_out() {
    let (_d, state) = state();
    let current = state.store.revision().unwrap();
    let q = Query::parse(Some(&format!("resourceVersion={}", current + 1)));
    let started = tokio::time::Instant::now();
    let e = list(&state, Resource::ConfigMaps, None, &q, &HeaderMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), 504);
    assert!(started.elapsed() >= CATCH_UP);
}
