//! `?watch=true`: a chunked stream of newline-delimited watch events.
//!
//! Without `resourceVersion` (or with `0`), every existing object that
//! matches is sent as `ADDED` first, then changes (the API server's
//! semantics). With a version, changes after it; a version older than the
//! store's window yields one `ERROR` event carrying a 410 `Status`, then the
//! stream ends. `timeoutSeconds` ends the stream (default 30 min);
//! `allowWatchBookmarks` sends a `BOOKMARK` every [`BOOKMARK_INTERVAL`].
//!
//! Selectors filter events by the object's state in the event: an object
//! that stops matching is not reported as `DELETED` (the API server does);
//! watchers that need that re-list.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::query::Query;
use super::selectors::Selector;
use super::{ApiResult, ApiState};
use crate::api::{ApiError, Resource};
use crate::store::{StoreError, WatchStream};

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

struct Watch {
    initial: VecDeque<bytes::Bytes>,
    stream: Option<WatchStream>,
    selector: Selector,
    resource: Resource,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    last_rv: u64,
}

impl Watch {
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
                _ = bookmark => {
                    let object = json!({
                        "kind": self.resource.kind(),
                        "apiVersion": self.resource.api_version(),
                        "metadata": {"resourceVersion": self.last_rv.to_string()},
                    });
                    return Some(line("BOOKMARK", &object));
                }
                ev = stream.next() => match ev {
                    Ok(Some(ev)) => {
                        self.last_rv = ev.resource_version;
                        if self.selector.matches(&ev.object) {
                            return Some(line(ev.kind.as_str(), &ev.object));
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

pub async fn watch(
    state: ApiState,
    resource: Resource,
    namespace: Option<String>,
    q: &Query,
) -> ApiResult {
    let selector = Selector::parse(resource, q.get("labelSelector"), q.get("fieldSelector"))?;
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
    let store = state.store.clone();
    let mut initial = VecDeque::new();
    let mut last_rv = 0;
    let stream = match since {
        Some(rv) => match store.watch(resource, namespace.as_deref(), Some(rv)) {
            Ok(s) => {
                last_rv = rv;
                Some(s)
            }
            Err(e @ StoreError::Expired { .. }) => {
                initial.push_back(error_line(e));
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            let (items, rv) = store.list(resource, namespace.as_deref())?;
            for o in items.iter().filter(|o| selector.matches(o)) {
                initial.push_back(line("ADDED", o));
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
        resource,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        last_rv,
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
