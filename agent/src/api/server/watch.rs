//! `?watch=true`: a chunked stream of newline-delimited watch events.
//!
//! Without `resourceVersion` (or with `0`), every existing object that
//! matches is sent as `ADDED` first, then changes (the API server's
//! semantics). With a version, changes after it; a version older than the
//! store's window yields one `ERROR` event carrying a 410 `Status`, then the
//! stream ends. `timeoutSeconds` ends the stream (default 30 min);
//! `allowWatchBookmarks` sends a `BOOKMARK` every [`BOOKMARK_INTERVAL`].
//!
//! `sendInitialEvents=true` (WatchList; needs `resourceVersionMatch=
//! NotOlderThan` and `allowWatchBookmarks=true`, else 422): the current
//! state as `ADDED` events whatever the version (a version the store has
//! not reached is a 504), then a `BOOKMARK` annotated
//! `k8s.io/initial-events-end: "true"` at the list's version, then changes.
//!
//! With an `Accept` asking for a `meta.k8s.io` Table, each object event
//! carries a one-row Table; the first carries the column definitions
//! ([`super::table`]). Bookmarks and errors are not tabulated.
//!
//! Selectors filter events by the object's state in the event: an object
//! that stops matching is not reported as `DELETED` (the API server does);
//! watchers that need that re-list.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::query::Query;
use super::selectors::Selector;
use super::table::{self, TableRequest};
use super::{ApiResult, ApiState};
use crate::api::error::Reason;
use crate::api::{ApiError, Resource};
use crate::store::{EventType, Key, StoreError, WatchEvent, WatchStream};

pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(kind: &str, object: &Value) -> bytes::Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    bytes::Bytes::from(v)
}

fn error_line(e: StoreError) -> bytes::Bytes {
    line("ERROR", &ApiError::from(e).to_json())
}

/// Turns object events into lines, as Tables when asked.
struct Render {
    resource: Resource,
    table: Option<TableRequest>,
    columns_sent: bool,
}

impl Render {
    fn event(&mut self, kind: &str, object: &Value) -> bytes::Bytes {
        let Some(req) = self.table else {
            return line(kind, object);
        };
        let rv = object["metadata"]["resourceVersion"].clone();
        let meta = json!({"resourceVersion": rv});
        let with_columns = !self.columns_sent;
        match table::table(
            self.resource,
            req,
            std::slice::from_ref(object),
            meta,
            with_columns,
        ) {
            Ok(t) => {
                self.columns_sent = true;
                line(kind, &t)
            }
            Err(e) => line("ERROR", &e.to_json()),
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> bytes::Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end && let Some(m) = metadata.as_object_mut() {
            m.insert(
                "annotations".into(),
                json!({"k8s.io/initial-events-end": "true"}),
            );
        }
        let object = json!({
            "kind": self.resource.kind(),
            "apiVersion": self.resource.api_version(),
            "metadata": metadata,
        });
        line("BOOKMARK", &object)
    }
}

struct Watch {
    initial: VecDeque<bytes::Bytes>,
    stream: Option<WatchStream>,
    selector: Selector,
    render: Render,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    last_rv: u64,
    /// With a selector: the keys the client holds as matching, so that an
    /// object that stops matching is sent as DELETED and one that starts
    /// matching as ADDED (as the API server's watch cache does).
    matching: Option<std::collections::HashSet<Key>>,
}

impl Watch {
    /// The event type to send for `ev` through the selector, if any.
    fn filter(&mut self, ev: &WatchEvent) -> Option<&'static str> {
        let now = self.selector.matches(&ev.object);
        let Some(held) = self.matching.as_mut() else {
            return now.then(|| ev.kind.as_str());
        };
        let had = held.contains(&ev.key);
        match (ev.kind, had, now) {
            (EventType::Deleted, true, _) => {
                held.remove(&ev.key);
                Some("DELETED")
            }
            (EventType::Deleted, false, m) => m.then_some("DELETED"),
            (_, true, true) => Some(ev.kind.as_str()),
            (_, true, false) => {
                held.remove(&ev.key);
                Some("DELETED")
            }
            (_, false, true) => {
                held.insert(ev.key.clone());
                Some("ADDED")
            }
            (_, false, false) => None,
        }
    }

    async fn next(&mut self) -> Option<bytes::Bytes> {
        if let Some(b) = self.initial.pop_front() {
            return Some(b);
        }
        loop {
            let stream = self.stream.as_mut()?;
            let bookmark = async {
                match self.bookmarks.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = bookmark => return Some(self.render.bookmark(self.last_rv, false)),
                ev = stream.next() => match ev {
                    Ok(Some(ev)) => {
                        self.last_rv = ev.resource_version;
                        if let Some(kind) = self.filter(&ev) {
                            return Some(self.render.event(kind, &ev.object));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        self.stream = None;
                        return Some(error_line(e));
                    }
                },
            }
        }
    }
}

/// The store key of a listed object.
pub(super) fn key_of(resource: Resource, o: &Value) -> Key {
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    match o["metadata"]["namespace"].as_str() {
        Some(ns) if resource.namespaced() => Key::namespaced(resource, ns, name),
        _ => Key::cluster(resource, name),
    }
}

/// Whether `sendInitialEvents=true` was asked, checked as the API server
/// checks it.
fn initial_events(q: &Query) -> Result<bool, ApiError> {
    if !q.flag("sendInitialEvents")? {
        return Ok(false);
    }
    if q.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            Reason::Invalid,
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting \
             resourceVersionMatch to NotOlderThan",
        ));
    }
    if !q.flag("allowWatchBookmarks")? {
        return Err(ApiError::new(
            Reason::Invalid,
            "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting \
             allowWatchBookmarks to true",
        ));
    }
    Ok(true)
}

pub async fn watch(
    state: ApiState,
    resource: Resource,
    namespace: Option<String>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult {
    let selector = Selector::parse(resource, q.get("labelSelector"), q.get("fieldSelector"))?;
    let send_initial = initial_events(q)?;
    let since = match q.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {s:?}: not an integer"))
        })?),
    };
    let timeout = q
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t.unsigned_abs()));
    let mut render = Render {
        resource,
        table: table::requested(headers, q)?,
        columns_sent: false,
    };
    let store = state.store.clone();
    let mut initial = VecDeque::new();
    let mut last_rv = 0;
    let mut matching = None;
    let stream = match since {
        Some(rv) if !send_initial => match store.watch(resource, namespace.as_deref(), Some(rv)) {
            Ok(s) => {
                last_rv = rv;
                if !selector.is_empty() {
                    // What the client listed at `rv` is not known; what
                    // matches now is the closest guess (an object that
                    // started matching meanwhile comes as MODIFIED).
                    let (items, _) = store.list(resource, namespace.as_deref())?;
                    matching = Some(
                        items
                            .iter()
                            .filter(|o| selector.matches(o))
                            .map(|o| key_of(resource, o))
                            .collect(),
                    );
                }
                Some(s)
            }
            Err(e @ StoreError::Expired { .. }) => {
                initial.push_back(error_line(e));
                None
            }
            Err(e) => return Err(e.into()),
        },
        _ => {
            let (items, rv) = store.list(resource, namespace.as_deref())?;
            if let Some(asked) = since.filter(|s| *s > rv) {
                return Err(ApiError::new(
                    Reason::Timeout,
                    format!("Too large resource version: {asked}, current: {rv}"),
                )
                .into());
            }
            let mut held = std::collections::HashSet::new();
            for o in items.iter().filter(|o| selector.matches(o)) {
                initial.push_back(render.event("ADDED", o));
                held.insert(key_of(resource, o));
            }
            if !selector.is_empty() {
                matching = Some(held);
            }
            if send_initial {
                initial.push_back(render.bookmark(rv, true));
            }
            last_rv = rv;
            Some(store.watch(resource, namespace.as_deref(), Some(rv))?)
        }
    };
    let bookmarks = q.flag("allowWatchBookmarks")?.then(|| {
        let mut i = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let w = Watch {
        initial,
        stream,
        selector,
        render,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        last_rv,
        matching,
    };
    let body = futures_util::stream::unfold(w, |mut w| async move {
        w.next()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), w))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use axum::http::HeaderValue;
    use http_body_util::BodyExt;

    use super::*;
    use crate::store::Datastore;
    use crate::store::local::LocalStore;

    fn state() -> (tempfile::TempDir, ApiState) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(
            &dir.path().join("s.redb"),
            &dir.path().join("run/secrets.redb"),
        )
        .unwrap();
        for name in ["a", "b"] {
            store
                .create(
                    &Key::namespaced(Resource::ConfigMaps, "d", name),
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": "d"}}),
                )
                .unwrap();
        }
        let state = ApiState {
            store: Arc::new(store),
            runtime: None,
            node_name: "n".into(),
            bind_unscheduled: false,
        };
        (dir, state)
    }

    /// The first `n` events of a watch response.
    async fn events(r: axum::response::Response, n: usize) -> Vec<Value> {
        let mut body = r.into_body();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            let frame = body.frame().await.unwrap().unwrap();
            buf.extend_from_slice(frame.data_ref().unwrap());
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                out.push(serde_json::from_slice(&line).unwrap());
            }
        }
        out
    }

    #[tokio::test]
    async fn initial_events_end_with_an_annotated_bookmark() {
        let (_d, state) = state();
        let rv = state.store.revision().unwrap();
        let q = Query::parse(Some(
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=1",
        ));
        let r = watch(
            state.clone(),
            Resource::ConfigMaps,
            Some("d".into()),
            &q,
            &HeaderMap::new(),
        )
        .await
        .unwrap();
        let ev = events(r, 3).await;
        assert_eq!(ev[0]["type"], "ADDED");
        assert_eq!(ev[1]["object"]["metadata"]["name"], "b");
        assert_eq!(ev[2]["type"], "BOOKMARK");
        assert_eq!(
            ev[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert_eq!(
            ev[2]["object"]["metadata"]["resourceVersion"],
            rv.to_string()
        );
        for bad in [
            "sendInitialEvents=true&allowWatchBookmarks=true",
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        ] {
            let e = watch(
                state.clone(),
                Resource::ConfigMaps,
                None,
                &Query::parse(Some(bad)),
                &HeaderMap::new(),
            )
            .await
            .unwrap_err();
            assert_eq!(e.code(), 422, "{bad}");
        }
    }

    #[tokio::test]
    async fn table_events_carry_columns_once() {
        let (_d, state) = state();
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::ACCEPT,
            HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
        );
        let r = watch(
            state,
            Resource::ConfigMaps,
            Some("d".into()),
            &Query::default(),
            &h,
        )
        .await
        .unwrap();
        let ev = events(r, 2).await;
        assert_eq!(ev[0]["object"]["kind"], "Table");
        assert_eq!(ev[0]["object"]["rows"][0]["cells"][0], "a");
        assert!(
            !ev[0]["object"]["columnDefinitions"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(ev[1]["object"]["columnDefinitions"], json!([]));
        assert_eq!(ev[1]["object"]["rows"][0]["cells"][0], "b");
    }

    #[tokio::test]
    async fn objects_leaving_and_entering_the_selector() {
        let (_d, state) = state();
        let rv = state.store.revision().unwrap();
        let q = Query::parse(Some(&format!("labelSelector=app%3Dx&resourceVersion={rv}")));
        let r = watch(
            state.clone(),
            Resource::ConfigMaps,
            Some("d".into()),
            &q,
            &HeaderMap::new(),
        )
        .await
        .unwrap();
        let key = Key::namespaced(Resource::ConfigMaps, "d", "a");
        let label = |app: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "namespace": "d", "labels": {"app": app}}})
        };
        for app in ["x", "x", "y", "y", "x"] {
            state.store.update(&key, label(app), None).unwrap();
        }
        state.store.delete(&key, None).unwrap();
        let ev = events(r, 5).await;
        let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        // starts matching, changes, stops (DELETED), y→y is not seen,
        // matches again (ADDED), then is deleted.
        assert_eq!(types, ["ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"]);
    }
}
