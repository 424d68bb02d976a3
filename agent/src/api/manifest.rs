//! Manifests: YAML (multi-document) or JSON, decoded into k8s-openapi
//! objects.
//!
//! Guarantees:
//! - [`parse_documents`] reads a YAML stream (serde-saphyr, YAML 1.2) or a
//!   JSON text (one value, or several concatenated); empty and null
//!   documents are skipped and a `List` (`kind` ending in `List` with
//!   `items`) expands to its items. Hostile input is bounded: at most
//!   [`MAX_MANIFEST_BYTES`] per manifest, nesting depth, node, alias and
//!   document counts capped by a parser budget; errors carry the 1-based
//!   document number and, where the parser knows it, line and column.
//! - [`decode`] picks the type by `apiVersion`/`kind`, names the JSON path of
//!   a type error, and rejects unknown fields as the API server does under
//!   kubectl's default strict field validation.
//!
//! Nothing here panics on any input.

use serde_json::Value;

use super::{ApiError, Resource};

mod object;
mod yaml;

use object::decode_as;
pub use object::{Object, strip_unknown};

/// The largest manifest accepted (bytes), as one file or request body.
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;

/// The most objects one manifest may hold after `List` expansion.
pub const MAX_OBJECTS: usize = 10_000;

/// A manifest that cannot be read: which document, where, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: document {index}: {message}")]
pub struct ManifestError {
    pub source_name: String,
    /// 1-based document number.
    pub index: usize,
    pub message: String,
}

fn manifest_error(source_name: &str, index: usize, message: impl Into<String>) -> ManifestError {
    ManifestError {
        source_name: source_name.to_string(),
        index,
        message: message.into(),
    }
}

/// Splits a manifest (YAML stream or JSON; a `List` expands to its items)
/// into one JSON value per object. Empty documents are skipped.
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Value>, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(manifest_error(
            source_name,
            1,
            format!(
                "manifest is {} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
                text.len()
            ),
        ));
    }
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let docs = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        parse_json(trimmed, source_name)?
    } else {
        yaml::parse(text, source_name)?
    };
    let mut out = Vec::new();
    for (i, doc) in docs {
        expand(doc, i, source_name, &mut out)?;
        if out.len() > MAX_OBJECTS {
            return Err(manifest_error(
                source_name,
                i,
                format!("more than {MAX_OBJECTS} objects"),
            ));
        }
    }
    Ok(out)
}

fn parse_json(text: &str, source_name: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    let mut out = Vec::new();
    // serde_json caps recursion at 128 levels.
    for (i, v) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let v = v.map_err(|e| {
            manifest_error(
                source_name,
                i + 1,
                format!(
                    "invalid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        out.push((i + 1, v));
    }
    Ok(out)
}

/// Appends `doc` (or a List's items) to `out`.
fn expand(
    doc: Value,
    index: usize,
    source_name: &str,
    out: &mut Vec<Value>,
) -> Result<(), ManifestError> {
    match doc {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        Value::Object(mut m) => {
            let is_list = m
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.contains_key("items");
            if !is_list {
                out.push(Value::Object(m));
                return Ok(());
            }
            match m.remove("items") {
                Some(Value::Array(items)) => {
                    for (j, item) in items.into_iter().enumerate() {
                        if !item.is_object() {
                            return Err(manifest_error(
                                source_name,
                                index,
                                format!("items[{j}]: expected an object, got {}", type_name(&item)),
                            ));
                        }
                        out.push(item);
                    }
                    Ok(())
                }
                Some(Value::Null) | None => Ok(()),
                Some(other) => Err(manifest_error(
                    source_name,
                    index,
                    format!("items: expected an array, got {}", type_name(&other)),
                )),
            }
        }
        other => Err(manifest_error(
            source_name,
            index,
            format!("expected an object, got {}", type_name(&other)),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The body quoted in "missing" messages, cut to stay readable.
fn excerpt(value: &Value) -> String {
    let s = value.to_string();
    if s.len() <= 200 {
        return s;
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Decodes one object by its `apiVersion`/`kind`; unknown kinds and
/// type errors are `BadRequest`s naming the field.
pub fn decode(value: Value) -> Result<Object, ApiError> {
    let Some(m) = value.as_object() else {
        return Err(ApiError::bad_request(format!(
            "expected an object, got {}",
            type_name(&value)
        )));
    };
    let kind = match m.get("kind") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{}'",
                excerpt(&value)
            )));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "kind: invalid type: {}, expected a string",
                type_name(other)
            )));
        }
    };
    let api_version = match m.get("apiVersion") {
        Some(Value::String(v)) if !v.is_empty() => v.clone(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err(ApiError::bad_request(format!(
                "Object 'apiVersion' is missing in '{}'",
                excerpt(&value)
            )));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "apiVersion: invalid type: {}, expected a string",
                type_name(other)
            )));
        }
    };
    let resource = Resource::from_kind(&api_version, &kind)
        .filter(|r| *r != Resource::Events)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no matches for kind \"{kind}\" in version \"{api_version}\""
            ))
        })?;
    decode_as(resource, value, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_stream_skips_empty_and_expands_lists() {
        let text = "# c\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n...\n\
                    ---\nkind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n\
                    - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n---\n";
        let docs = parse_documents(text, "t.yaml").unwrap();
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn yaml_error_names_document_and_line() {
        let text = "apiVersion: v1\nkind: Namespace\n---\na: b\n  c: [\n";
        let e = parse_documents(text, "f.yaml").unwrap_err();
        assert_eq!(e.index, 2);
        assert!(e.message.contains("line"), "{e}");
        assert!(e.to_string().starts_with("f.yaml: document 2: "), "{e}");
    }

    #[test]
    fn json_concatenated_documents() {
        let text = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}"#;
        assert_eq!(parse_documents(text, "x.json").unwrap().len(), 2);
        let e = parse_documents("{} {", "x.json").unwrap_err();
        assert_eq!(e.index, 2);
    }

    #[test]
    fn alias_bomb_and_size_are_bounded() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("a{}", i - 1)
            };
            bomb.push_str(&format!(
                "a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(parse_documents(&bomb, "bomb").is_err());
        let big = "a".repeat(MAX_MANIFEST_BYTES + 1);
        assert!(
            parse_documents(&big, "big")
                .unwrap_err()
                .message
                .contains("limit")
        );
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_documents(&deep, "deep").is_err());
        let deep_yaml = format!("a: {}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_documents(&deep_yaml, "deep").is_err());
    }

    #[test]
    fn decode_kinds_and_errors() {
        let o = decode(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "n"}, "data": {"k": "v"}}))
        .unwrap();
        assert_eq!(o.resource(), Resource::ConfigMaps);
        assert_eq!(o.name(), "x");
        assert_eq!(o.namespace(), Some("n"));
        assert_eq!(o.to_value()["kind"], "ConfigMap");

        let e = decode(json!({"apiVersion": "apps/v1", "kind": "StatefulSet"})).unwrap_err();
        assert_eq!(
            e.message,
            "no matches for kind \"StatefulSet\" in version \"apps/v1\""
        );
        let e = decode(json!({"apiVersion": "v1", "kind": "Deployment"})).unwrap_err();
        assert_eq!(e.code(), 400);
        for (api_version, kind) in [
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "DaemonSet"),
            ("batch/v1", "Job"),
            ("v1", "Service"),
            ("v1", "Endpoints"),
            ("v1", "Node"),
            ("v1", "ServiceAccount"),
            ("coordination.k8s.io/v1", "Lease"),
        ] {
            let o =
                decode(json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}))
                    .unwrap();
            assert_eq!(o.resource().kind(), kind);
            assert_eq!(o.to_value()["apiVersion"], api_version);
        }
        let e = decode(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"replicas": "x"}}))
        .unwrap_err();
        assert!(
            e.message.starts_with("Deployment in version \"apps/v1\""),
            "{e}"
        );
        let e = decode(json!({"apiVersion": "v1"})).unwrap_err();
        assert!(
            e.message.starts_with("Object 'Kind' is missing in '"),
            "{e}"
        );
        assert_eq!(e.code(), 400);
    }

    #[test]
    fn decode_type_error_names_path() {
        let e = decode(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "ports": [{"containerPort": "x"}]}]}}),
        )
        .unwrap_err();
        assert!(
            e.message.ends_with(
                "spec.containers[0].ports[0].containerPort: invalid type: string \"x\", expected i32"
            ),
            "{e}"
        );
    }

    #[test]
    fn decode_rejects_unknown_fields() {
        let e = decode(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}]}}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "strict decoding error: unknown field \"spec.containers[0].imagePullPolicyy\""
        );
        // Nulls, empty maps and lists are not unknown.
        decode(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {}, "annotations": null},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [], "args": null}]},
            "status": {}}))
        .unwrap();
    }
}
