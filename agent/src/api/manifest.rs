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

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiError, Resource};

mod yaml;

/// The largest manifest accepted (bytes), as one file or request body.
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;

/// The most objects one manifest may hold after `List` expansion.
pub const MAX_OBJECTS: usize = 10_000;

/// One decoded object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Box<Pod>),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Namespace(Namespace),
}

impl Object {
    pub fn resource(&self) -> Resource {
        match self {
            Object::Pod(_) => Resource::Pods,
            Object::ConfigMap(_) => Resource::ConfigMaps,
            Object::Secret(_) => Resource::Secrets,
            Object::Namespace(_) => Resource::Namespaces,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Pod(p) => &p.metadata,
            Object::ConfigMap(c) => &c.metadata,
            Object::Secret(s) => &s.metadata,
            Object::Namespace(n) => &n.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Pod(p) => &mut p.metadata,
            Object::ConfigMap(c) => &mut c.metadata,
            Object::Secret(s) => &mut s.metadata,
            Object::Namespace(n) => &mut n.metadata,
        }
    }

    /// `metadata.name`, empty when unset.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// The object as JSON, with `apiVersion` and `kind` set.
    pub fn to_value(&self) -> Value {
        // Serializing k8s-openapi types into a `Value` cannot fail: every map
        // has string keys and no type has a failing `Serialize`.
        let v = match self {
            Object::Pod(p) => serde_json::to_value(p),
            Object::ConfigMap(c) => serde_json::to_value(c),
            Object::Secret(s) => serde_json::to_value(s),
            Object::Namespace(n) => serde_json::to_value(n),
        };
        let mut v = v.unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            let r = self.resource();
            m.insert("apiVersion".into(), r.api_version().into());
            m.insert("kind".into(), r.kind().into());
        }
        v
    }

    /// Decodes a value already known to be good (read back from the store):
    /// no strict field check, type errors still reported.
    pub fn from_value_unchecked(resource: Resource, value: Value) -> Result<Object, ApiError> {
        decode_as(resource, value, false)
    }
}

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

fn decode_as(resource: Resource, value: Value, strict: bool) -> Result<Object, ApiError> {
    let obj = match resource {
        Resource::Pods => Object::Pod(Box::new(typed::<Pod>(resource, &value)?)),
        Resource::ConfigMaps => Object::ConfigMap(typed(resource, &value)?),
        Resource::Secrets => Object::Secret(typed(resource, &value)?),
        Resource::Namespaces => Object::Namespace(typed(resource, &value)?),
        other => {
            return Err(ApiError::bad_request(format!(
                "no matches for kind \"{}\" in version \"{}\"",
                other.kind(),
                other.api_version()
            )));
        }
    };
    if strict {
        let back = obj.to_value();
        let mut unknown = Vec::new();
        unknown_fields(&value, &back, &mut String::new(), &mut unknown);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .take(20)
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
    }
    Ok(obj)
}

fn typed<T: DeserializeOwned>(resource: Resource, value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let kind = resource.kind();
        let at = if path == "." || path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {at}{inner}"
        ))
    })
}

/// Fields of `input` that the typed object dropped, as JSON paths.
/// Null values are ignored (they decode to "unset").
fn unknown_fields(input: &Value, back: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    Some(bv) => unknown_fields(v, bv, path, out),
                    None if v.is_null() => {}
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, bv)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                unknown_fields(v, bv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
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

        let e = decode(json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap_err();
        assert_eq!(
            e.message,
            "no matches for kind \"Deployment\" in version \"apps/v1\""
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
