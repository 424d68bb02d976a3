//! `GET` on a collection: selectors, `limit`/`continue` paging,
//! `resourceVersion`/`resourceVersionMatch`, and the Table form.
//!
//! Guarantees and limits:
//! - A list without `limit` is sorted by namespace then name.
//! - With `limit`, pages are range reads of the store
//!   ([`crate::store::Datastore::list_page`], [`ranged_page`]): a page
//!   reads its own objects (more when a selector filters some out), in key
//!   order (`namespace/name` bytewise, as etcd orders them), and `continue`
//!   resumes strictly after the last key read. The token is base64url (no
//!   padding) of `{"v":"meta.k8s.io/v1","rv":N,"start":KEY}`, as
//!   kube-apiserver's; clients treat it as opaque.
//! - On etcd the pages are a consistent snapshot at the first page's
//!   revision, and a token whose revision etcd compacted is 410. The
//!   embedded stores keep no snapshots: later pages read the *current*
//!   state (kube-apiserver's "inconsistent continue" semantics, always),
//!   the list's `metadata.resourceVersion` stays the first page's, and a
//!   token older than the store's watch window is 410 `Expired`.
//! - A token that does not decode is 400, as kube-apiserver answers.
//! - `remainingItemCount` is set on every page that has a `continue` and
//!   no selector (exact: the keys after the page are counted).
//! - `resourceVersion` with `resourceVersionMatch=Exact` succeeds only when
//!   it is the store's current revision (410 otherwise: no snapshots);
//!   `NotOlderThan` (or no match with a non-zero version) fails with 504
//!   `Timeout` only when asking for a version the store has not reached
//!   within [`CATCH_UP`].
//!   `resourceVersion=0` / unset: the current state.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::query::Query;
use super::selectors::Selector;
use super::table::{self, CONTENT_TYPE};
use super::{ApiResult, ApiState};
use crate::api::error::Reason;
use crate::api::{ApiError, Resource};

/// The position a `continue` token resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    /// The resourceVersion of the first page.
    pub rv: u64,
    /// `namespace/name` (or `name`) of the last object sent.
    pub start: String,
}

impl Continue {
    pub fn encode(&self) -> String {
        let doc = json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": self.start});
        b64::encode(doc.to_string().as_bytes())
    }

    pub fn decode(token: &str) -> Result<Continue, ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let bytes = b64::decode(token).ok_or_else(|| bad("not base64"))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
        if v["v"] != "meta.k8s.io/v1" {
            return Err(bad(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        let rv = v["rv"].as_u64().filter(|rv| *rv > 0);
        let start = v["start"].as_str().filter(|s| !s.is_empty());
        match (rv, start) {
            (Some(rv), Some(start)) => Ok(Continue {
                rv,
                start: start.to_string(),
            }),
            _ => Err(bad("missing resourceVersion or start key")),
        }
    }
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    let name = m["name"].as_str().unwrap_or_default();
    match m["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

fn sort_key(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

fn start_key(start: &str) -> (String, String) {
    match start.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), start.to_string()),
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    /// `metadata` of the list: resourceVersion, continue,
    /// remainingItemCount.
    pub metadata: Value,
}

const TOO_OLD: &str = "The provided continue parameter is too old to display a consistent \
                       list result. You can start a new list without the continue parameter.";

/// Checks `resourceVersion`/`resourceVersionMatch` against the store's
/// current revision `current`.
fn check_version(q: &Query, current: u64) -> Result<(), ApiError> {
    let rv = match q.get("resourceVersion") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {s:?}: not an integer"))
        })?),
    };
    match (q.get("resourceVersionMatch").unwrap_or(""), rv) {
        ("", Some(rv)) if rv > current => Err(too_large(rv)),
        ("", _) => Ok(()),
        (_, None) => Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        ("NotOlderThan", Some(rv)) if rv > current => Err(too_large(rv)),
        ("NotOlderThan", Some(_)) => Ok(()),
        ("Exact", Some(0)) => Err(ApiError::bad_request(
            "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        )),
        ("Exact", Some(rv)) if rv == current => Ok(()),
        ("Exact", Some(rv)) if rv > current => Err(too_large(rv)),
        ("Exact", Some(rv)) => Err(ApiError::expired(format!(
            "too old resource version: {rv} ({current}): this server keeps no snapshots"
        ))),
        (m, _) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: unsupported value {m:?} (supported: Exact, NotOlderThan)"
        ))),
    }
}

fn too_large(rv: u64) -> ApiError {
    ApiError::new(
        Reason::Timeout,
        format!("Too large resource version: {rv}, the store has not reached it"),
    )
}

/// Reads one page of `resource` (in `namespace` or all) as `q` asks.
pub fn page(
    state: &ApiState,
    resource: Resource,
    namespace: Option<&str>,
    q: &Query,
) -> Result<Page, ApiError> {
    let sel = Selector::parse(resource, q.get("labelSelector"), q.get("fieldSelector"))?;
    let limit = q.int("limit")?.filter(|l| *l > 0);
    let cont = match q.get("continue") {
        None | Some("") => None,
        Some(t) => Some(Continue::decode(t)?),
    };
    if let Some(limit) = limit.and_then(|l| usize::try_from(l).ok())
        && let Some(p) = ranged_page(state, resource, namespace, q, &sel, limit, cont.as_ref())?
    {
        return Ok(p);
    }
    let (items, current) = state.store.list(resource, namespace)?;
    let rv = match &cont {
        Some(c) => {
            if q.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            // A token older than the watch window is too old, as a
            // compacted revision is on the API server.
            if let Err(crate::store::StoreError::Expired { .. }) =
                state.store.watch(resource, namespace, Some(c.rv))
            {
                return Err(ApiError::expired(TOO_OLD));
            }
            c.rv
        }
        None => {
            check_version(q, current)?;
            current
        }
    };
    let after = cont.as_ref().map(|c| start_key(&c.start));
    let mut matching = items
        .into_iter()
        .filter(|o| after.as_ref().is_none_or(|a| sort_key(o) > *a))
        .filter(|o| sel.matches(o));
    let mut out = Vec::new();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    match limit.and_then(|l| usize::try_from(l).ok()) {
        Some(limit) => {
            out.extend(matching.by_ref().take(limit));
            let remaining = matching.count();
            if remaining > 0
                && let (Some(last), Some(m)) = (out.last(), metadata.as_object_mut())
            {
                let token = Continue {
                    rv,
                    start: key_of(last),
                };
                m.insert("continue".into(), token.encode().into());
                m.insert("remainingItemCount".into(), remaining.into());
            }
        }
        None => out.extend(matching),
    }
    Ok(Page {
        items: out,
        metadata,
    })
}

/// A page read with [`crate::store::Datastore::list_page`] when the store
/// can read ranges (etcd): pages are a consistent snapshot at the first
/// page's revision, read `limit` at a time (more when a selector filters
/// objects out). `None` when the store cannot.
fn ranged_page(
    state: &ApiState,
    resource: Resource,
    namespace: Option<&str>,
    q: &Query,
    sel: &Selector,
    limit: usize,
    cont: Option<&Continue>,
) -> Result<Option<Page>, ApiError> {
    let mut at = match cont {
        Some(c) => {
            if q.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(c.rv)
        }
        None => {
            if q.get("resourceVersion")
                .is_some_and(|v| !v.is_empty() && v != "0")
            {
                check_version(q, state.store.revision()?)?;
            }
            None
        }
    };
    let mut after = cont.map(|c| c.start.clone());
    let mut out: Vec<Value> = Vec::new();
    let filtering = !sel.is_empty();
    let (more, remaining) = loop {
        let want = limit - out.len();
        let chunk = if filtering { want.max(500) } else { want };
        let page = match state
            .store
            .list_page(resource, namespace, after.as_deref(), chunk, at)
        {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(crate::store::StoreError::Expired { .. }) => {
                return Err(ApiError::expired(TOO_OLD));
            }
            Err(e) => return Err(e.into()),
        };
        at = Some(page.revision);
        let read = page.items.len() as u64;
        let mut taken = 0u64;
        let mut full = false;
        for o in page.items {
            taken += 1;
            after = Some(key_of(&o));
            if sel.matches(&o) {
                out.push(o);
                if out.len() == limit {
                    full = true;
                    break;
                }
            }
        }
        let left = page.remaining + (read - taken);
        if full || left == 0 || read == 0 {
            break (left > 0, left);
        }
    };
    let rv = at.unwrap_or_default();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if more && let (Some(last), Some(m)) = (out.last(), metadata.as_object_mut()) {
        let token = Continue {
            rv,
            start: after.unwrap_or_else(|| key_of(last)),
        };
        m.insert("continue".into(), token.encode().into());
        // Exact only without a selector (kube-apiserver omits it then).
        if !filtering {
            m.insert("remainingItemCount".into(), remaining.into());
        }
    }
    Ok(Some(Page {
        items: out,
        metadata,
    }))
}

/// How long a list asking for a resourceVersion the store has not reached
/// waits for it (a replica behind the node the client saw it on) before
/// answering 504, as kube-apiserver waits for its watch cache.
pub const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits (polling) until the store reaches the `resourceVersion` asked,
/// at most [`CATCH_UP`]; the page then reports [`too_large`] if it still
/// has not.
async fn catch_up(state: &ApiState, q: &Query) {
    let Some(rv) = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    while state.store.revision().is_ok_and(|r| r < rv) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `GET` on a collection: a `<Kind>List`, or a Table when asked. The store
/// read and the rendering run off the async workers.
pub async fn list(
    state: &ApiState,
    resource: Resource,
    namespace: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult {
    let as_table = table::requested(headers, q)?;
    catch_up(state, q).await;
    let (state, namespace, q) = (state.clone(), namespace.map(str::to_string), q.clone());
    let body = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let p = page(&state, resource, namespace.as_deref(), &q)?;
        match as_table {
            Some(req) => table::table(resource, req, &p.items, p.metadata, true),
            None => Ok(json!({
                "kind": format!("{}List", resource.kind()),
                "apiVersion": resource.api_version(),
                "metadata": p.metadata,
                "items": p.items,
            })),
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("list task failed: {e}")))??;
    Ok(match as_table {
        Some(_) => table_response(body),
        None => axum::Json(body).into_response(),
    })
}

/// `GET` on one object: the object, or a one-row Table when asked.
pub fn item(
    resource: Resource,
    obj: Value,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    match table::requested(headers, q)? {
        Some(req) => {
            let rv = obj["metadata"]["resourceVersion"].clone();
            let t = table::table(
                resource,
                req,
                std::slice::from_ref(&obj),
                json!({"resourceVersion": rv}),
                true,
            )?;
            Ok(table_response(t))
        }
        None => Ok(axum::Json(obj).into_response()),
    }
}

fn table_response(t: Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        axum::Json(t),
    )
        .into_response()
}

/// Base64url without padding (Go's `base64.RawURLEncoding`).
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(s).ok()
    }
}

#[cfg(test)]
#[path = "list_tests.rs"]
mod tests;
