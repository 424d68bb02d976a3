//! `meta.k8s.io/v1 Table` responses: what `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`.
//!
//! Guarantees:
//! - The columns are the CLI's ([`crate::cli::printers`]), which follow
//!   kubectl's printers kind by kind; the `-o wide` extras have
//!   `priority: 1`, the others `0`. The NAMESPACE column is never sent:
//!   kubectl adds it itself from each row's object with `-A`.
//! - Each row carries `object` per `includeObject` (`None`, `Metadata` = a
//!   `PartialObjectMetadata`, the default, or `Object`).
//! - Watch events carry a one-row Table; only the first carries the column
//!   definitions (as kube-apiserver does).
//! - A row that cannot be rendered (an object that does not decode as its
//!   kind) is a 500 `Status` naming the object, never a panic.

use axum::http::HeaderMap;
use axum::http::header;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::query::Query;
use crate::api::{ApiError, Resource};
use crate::cli::printers;

/// The content type of a Table answer (what kubectl asked for).
pub const CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// What `includeObject` asks each row to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// A Table request: the version asked for and `includeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRequest {
    /// `v1` or `v1beta1`: answered with the same `apiVersion`.
    pub version: &'static str,
    pub include: IncludeObject,
}

/// `Some` when the Accept header lists a `meta.k8s.io` Table in a version
/// served (`v1`, `v1beta1`); the first acceptable range wins, so a plain
/// `application/json` before it means plain JSON.
pub fn requested(headers: &HeaderMap, q: &Query) -> Result<Option<TableRequest>, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(version) = table_version(accept) else {
        return Ok(None);
    };
    let include = match q.get("includeObject") {
        None | Some("") | Some("Metadata") => IncludeObject::Metadata,
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "includeObject: unsupported value {v:?} (supported: None, Metadata, Object)"
            )));
        }
    };
    Ok(Some(TableRequest { version, include }))
}

/// The Table version of the first media range that is a Table or plain
/// JSON (`None` for plain JSON or no Table at all).
fn table_version(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/json" && media != "*/*" {
            continue;
        }
        let (mut as_, mut g, mut v) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => as_ = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        if as_.is_empty() {
            return None;
        }
        if as_ == "Table" && g == "meta.k8s.io" {
            match v {
                "v1" => return Some("v1"),
                "v1beta1" => return Some("v1beta1"),
                _ => {}
            }
        }
    }
    None
}

/// `NOMINATED NODE` → `Nominated Node`, `CLUSTER-IP` → `Cluster-IP` (the
/// API server's names; kubectl upper-cases them again).
fn title(h: &str) -> String {
    let word = |w: &str| {
        if w == "IP" || w == "IPS" {
            return w.replace("IPS", "IPs");
        }
        let mut c = w.chars();
        match c.next() {
            Some(f) => f.to_string() + &c.as_str().to_ascii_lowercase(),
            None => String::new(),
        }
    };
    h.split(' ')
        .map(|w| w.split('-').map(word).collect::<Vec<_>>().join("-"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The column definitions of a resource: the normal columns (priority 0)
/// then the wide ones (priority 1).
pub fn columns(resource: Resource) -> Vec<Value> {
    let normal = printers::header(resource, false, false);
    printers::header(resource, true, false)
        .into_iter()
        .map(|h| {
            let name = title(h);
            let format = if h == "NAME" { "name" } else { "" };
            json!({
                "name": name,
                "type": "string",
                "format": format,
                "description": format!("{name} of the {}", resource.kind()),
                "priority": if normal.contains(&h) { 0 } else { 1 },
            })
        })
        .collect()
}

/// One row: the wide cells and the object as `include` asks.
pub fn row(
    resource: Resource,
    obj: &Value,
    now: Timestamp,
    include: IncludeObject,
) -> Result<Value, ApiError> {
    let cells = printers::row(resource, obj, now, true, false)
        .map_err(|e| ApiError::internal(format!("rendering a table row: {e}")))?;
    let mut row = Map::new();
    row.insert("cells".into(), json!(cells));
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row.insert(
                "object".into(),
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
            );
        }
        IncludeObject::Object => {
            row.insert("object".into(), obj.clone());
        }
    }
    Ok(Value::Object(row))
}

/// A Table of `items`; `metadata` is the list metadata (resourceVersion,
/// continue, remainingItemCount). `with_columns` false sends an empty
/// `columnDefinitions` (watch events after the first).
pub fn table(
    resource: Resource,
    req: TableRequest,
    items: &[Value],
    metadata: Value,
    with_columns: bool,
) -> Result<Value, ApiError> {
    let now = Timestamp::now();
    let rows = items
        .iter()
        .map(|o| row(resource, o, now, req.include))
        .collect::<Result<Vec<_>, _>>()?;
    let columns = if with_columns {
        columns(resource)
    } else {
        Vec::new()
    };
    Ok(json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{}", req.version),
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation() {
        let q = Query::default();
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,\
                       application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let r = requested(&accept(kubectl), &q).unwrap().unwrap();
        assert_eq!(r.version, "v1");
        assert_eq!(r.include, IncludeObject::Metadata);
        let beta = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
        assert_eq!(
            requested(&accept(beta), &q).unwrap().unwrap().version,
            "v1beta1"
        );
        for plain in [
            "application/json",
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json;as=Table;v=v2;g=meta.k8s.io",
            "application/yaml",
        ] {
            assert!(requested(&accept(plain), &q).unwrap().is_none(), "{plain}");
        }
        assert!(requested(&HeaderMap::new(), &q).unwrap().is_none());
        let q = Query::parse(Some("includeObject=Object"));
        assert_eq!(
            requested(&accept(kubectl), &q).unwrap().unwrap().include,
            IncludeObject::Object
        );
        let q = Query::parse(Some("includeObject=All"));
        assert_eq!(requested(&accept(kubectl), &q).unwrap_err().code(), 400);
    }

    #[test]
    fn pod_columns_match_kubectl() {
        let cols = columns(Resource::Pods);
        let names: Vec<(&str, i64)> = cols
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1),
            ]
        );
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(title("CLUSTER-IP"), "Cluster-IP");
        assert_eq!(title("EXTERNAL-IPS"), "External-IPs");
    }

    #[test]
    fn rows_carry_cells_and_metadata() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"},
        });
        let req = TableRequest {
            version: "v1",
            include: IncludeObject::Metadata,
        };
        let t = table(
            Resource::Pods,
            req,
            std::slice::from_ref(&pod),
            json!({}),
            true,
        )
        .unwrap();
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let row = &t["rows"][0];
        assert_eq!(row["cells"][0], "p");
        assert_eq!(row["cells"][2], "Running");
        assert_eq!(row["cells"][5], "10.0.0.5");
        assert_eq!(row["cells"][6], "n1");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["namespace"], "d");
        assert!(row["object"].get("spec").is_none());
        let none = TableRequest {
            include: IncludeObject::None,
            ..req
        };
        let t = table(Resource::Pods, none, &[pod], json!({}), false).unwrap();
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(t["columnDefinitions"], json!([]));
        let bad = json!({"metadata": {"name": "x"}, "spec": {"containers": 5}});
        assert_eq!(
            table(Resource::Pods, req, &[bad], json!({}), true)
                .unwrap_err()
                .code(),
            500
        );
    }
}
