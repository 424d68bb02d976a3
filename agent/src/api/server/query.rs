//! Query strings (repeated keys kept: `command=a&command=b`) and request
//! bodies (JSON or YAML, bounded).

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{Failure, MAX_BODY};
use crate::api::ApiError;
use crate::api::manifest::parse_documents;

/// A decoded query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut out = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode(k), decode(v)));
        }
        Query(out)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `true`/`1` (Go's strconv.ParseBool subset the API server takes).
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(false),
            Some("true" | "1" | "True" | "TRUE" | "t" | "T") => Ok(true),
            Some("false" | "0" | "False" | "FALSE" | "f" | "F") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "invalid value for {key}: {v:?} is not a boolean"
            ))),
        }
    }

    /// A non-negative integer parameter.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }
}

/// Percent-decoding with `+` as space; invalid escapes are kept as is.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a body of at most [`MAX_BODY`] bytes (413 beyond).
pub async fn read_body(body: Body) -> Result<bytes::Bytes, Failure> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    let too_large = || Failure {
        error: ApiError::bad_request(format!("Request entity too large: limit is {MAX_BODY}")),
        code: Some(413),
    };
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > MAX_BODY {
            // Read (and drop) what the client is still sending, up to a
            // bound, so that it sees the 413 and not a reset connection.
            let drain = async {
                while let Some(Ok(f)) = body.frame().await {
                    total += f.data_ref().map_or(0, |d| d.len());
                    if total > DRAIN_LIMIT {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// How much of an oversized body is read and dropped before the 413.
const DRAIN_LIMIT: usize = 64 << 20;
/// How long an oversized body is drained at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// One object from a JSON or YAML body. The content type picks the
/// decoder; without a YAML content type, JSON is tried first and YAML only
/// when the body does not look like JSON.
pub fn parse_object(body: &[u8], content_type: Option<&str>) -> Result<Value, ApiError> {
    if content_type.is_some_and(|c| c.contains("protobuf")) {
        return super::protobuf::decode(body);
    }
    if let Some(ct) = content_type.filter(|c| c.contains("cbor")) {
        return Err(ApiError::new(
            crate::api::error::Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format ({ct}): herd accepts JSON, YAML and (for a few kinds) protobuf"
            ),
        ));
    }
    let yaml_ct = content_type.is_some_and(|c| c.contains("yaml"));
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("request body is empty"));
    }
    let looks_json = text.trim_start().starts_with('{');
    if !yaml_ct && looks_json {
        return serde_json::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(e.to_string()));
    }
    let mut docs =
        parse_documents(text, "request body").map_err(|e| ApiError::bad_request(e.to_string()))?;
    match (docs.pop(), docs.is_empty()) {
        (Some(v), true) if v.is_object() => Ok(v),
        (Some(_), true) => Err(ApiError::bad_request("request body is not an object")),
        (Some(_), false) => Err(ApiError::bad_request(
            "request body holds more than one object",
        )),
        (None, _) => Err(ApiError::bad_request("request body holds no object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_escaped() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo%20hi+there&x=%zz&y=%4",
        ));
        assert_eq!(q.all("command"), ["sh", "-c", "echo hi there"]);
        assert_eq!(q.get("x"), Some("%zz"));
        assert_eq!(q.get("y"), Some("%4"));
        assert_eq!(q.get("nope"), None);
    }

    #[test]
    fn flags() {
        let q = Query::parse(Some("watch=1&follow=true&bad=maybe"));
        assert!(q.flag("watch").unwrap());
        assert!(q.flag("follow").unwrap());
        assert!(!q.flag("absent").unwrap());
        assert_eq!(q.flag("bad").unwrap_err().code(), 400);
    }

    #[test]
    fn garbage_bodies() {
        assert_eq!(parse_object(b"{", None).unwrap_err().code(), 400);
        assert_eq!(parse_object(b"", None).unwrap_err().code(), 400);
        assert_eq!(parse_object(&[0xff, 0xfe], None).unwrap_err().code(), 400);
        assert_eq!(
            parse_object(b"[1]", Some("application/json"))
                .unwrap_err()
                .code(),
            400
        );
    }
}
