//! FieldsV1 sets: which fields of an object a manager owns.
//!
//! The format kube-apiserver writes in `metadata.managedFields[].fieldsV1`:
//! a tree whose keys are `f:<field>` (a struct or map field),
//! `k:{"name":"c"}` (a list-map item, by its keys, JSON with sorted keys),
//! `v:<json>` (a set item), and `.` (the node itself is owned, used for
//! list items). A leaf is `{}`. This module builds sets from objects,
//! walks them as lists of member paths, and finds and removes the values a
//! path names in an object.
//!
//! Fields nobody owns are not tracked, as the API server's strip set:
//! `apiVersion`, `kind`, `status` (main resource), and the `metadata` fields
//! the server sets (`name`, `namespace`, `uid`, `resourceVersion`,
//! `generation`, `creationTimestamp`, `managedFields`, deletion stamps).

use serde_json::{Map, Value};

use super::PatchError;
use super::keys::{self, ListType};
use crate::api::Resource;

/// A FieldsV1 tree.
pub type Set = Map<String, Value>;

/// One member: the keys from the root (`["f:spec", "f:replicas"]`); a path
/// ending at a list item names the item itself.
pub type Path = Vec<String>;

const STRIPPED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The set of fields `obj` sets (for an applied configuration or the
/// fields an update wrote).
pub fn of(resource: Resource, obj: &Value) -> Result<Set, PatchError> {
    let Value::Object(m) = obj else {
        return Err(PatchError::Malformed("object must be a JSON object".into()));
    };
    let mut out = Set::new();
    for (k, v) in m {
        if matches!(k.as_str(), "apiVersion" | "kind" | "status") {
            continue;
        }
        let child = if k == "metadata" {
            let Value::Object(meta) = v else {
                return Err(PatchError::Malformed("metadata: expected an object".into()));
            };
            let kept: Map<String, Value> = meta
                .iter()
                .filter(|(k, _)| !STRIPPED_METADATA.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if kept.is_empty() {
                continue;
            }
            let mut path = vec!["metadata".to_string()];
            walk_object(resource, &mut path, &kept)?
        } else {
            let mut path = vec![k.clone()];
            walk(resource, &mut path, v)?
        };
        out.insert(format!("f:{k}"), Value::Object(child));
    }
    Ok(out)
}

fn walk(resource: Resource, path: &mut Vec<String>, v: &Value) -> Result<Set, PatchError> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match v {
        Value::Object(_) if keys::atomic_struct(resource, &p) => Ok(Set::new()),
        Value::Object(m) => walk_object(resource, path, m),
        Value::Array(items) => match keys::list_type(resource, &p) {
            ListType::Atomic => Ok(Set::new()),
            ListType::Set => {
                let mut s = Set::new();
                for it in items {
                    if it.is_object() || it.is_array() {
                        return Err(PatchError::Malformed(format!(
                            "{}: expected a list of scalars",
                            path.join(".")
                        )));
                    }
                    s.insert(format!("v:{it}"), Value::Object(Set::new()));
                }
                Ok(s)
            }
            ListType::Map(keys) => {
                let mut s = Set::new();
                for (i, it) in items.iter().enumerate() {
                    let Value::Object(item) = it else {
                        return Err(PatchError::Malformed(format!(
                            "{}[{i}]: expected an object",
                            path.join(".")
                        )));
                    };
                    let mut child = walk_object(resource, path, item)?;
                    child.insert(".".into(), Value::Object(Set::new()));
                    s.insert(item_key(keys, item), Value::Object(child));
                }
                Ok(s)
            }
        },
        _ => Ok(Set::new()),
    }
}

fn walk_object(
    resource: Resource,
    path: &mut Vec<String>,
    m: &Map<String, Value>,
) -> Result<Set, PatchError> {
    let mut s = Set::new();
    for (k, v) in m {
        path.push(k.clone());
        let child = walk(resource, path, v);
        path.pop();
        s.insert(format!("f:{k}"), Value::Object(child?));
    }
    Ok(s)
}

/// A key field's value, with the defaults the API server fills in before it
/// computes ownership (`protocol: TCP`).
fn key_value(item: &Map<String, Value>, k: &str) -> Option<Value> {
    match item.get(k) {
        Some(v) => Some(v.clone()),
        None if k == "protocol" => Some(Value::String("TCP".into())),
        None => None,
    }
}

/// `k:{"containerPort":80,"protocol":"TCP"}` for a list-map item.
pub fn item_key(keys: &[&str], item: &Map<String, Value>) -> String {
    let mut k = Map::new();
    for name in keys {
        if let Some(v) = key_value(item, name) {
            k.insert((*name).to_string(), v);
        }
    }
    format!("k:{}", Value::Object(k))
}

/// Every member path of `set`.
pub fn members(set: &Set) -> Vec<Path> {
    let mut out = Vec::new();
    let mut stack: Vec<(Path, &Set)> = vec![(Vec::new(), set)];
    while let Some((prefix, s)) = stack.pop() {
        for (k, v) in s {
            if k == "." {
                out.push(prefix.clone());
                continue;
            }
            let mut p = prefix.clone();
            p.push(k.clone());
            match v {
                Value::Object(child) if !child.is_empty() => stack.push((p, child)),
                _ => out.push(p),
            }
        }
    }
    out
}

/// Whether `path` is a member of `set`.
pub fn contains(set: &Set, path: &[String]) -> bool {
    let mut cur = set;
    for k in path {
        match cur.get(k) {
            Some(Value::Object(c)) => cur = c,
            _ => return false,
        }
    }
    cur.is_empty() || cur.contains_key(".")
}

/// Adds `path` to `set`.
pub fn insert(set: &mut Set, path: &[String], is_item: bool) {
    let mut cur = set;
    for k in path {
        let next = cur
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Set::new()));
        if !next.is_object() {
            *next = Value::Object(Set::new());
        }
        let Value::Object(n) = next else { return };
        cur = n;
    }
    if is_item {
        cur.insert(".".into(), Value::Object(Set::new()));
    }
}

/// Removes `path` from `set`, pruning nodes left empty.
pub fn remove(set: &mut Set, path: &[String]) {
    fn go(s: &mut Set, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Some(Value::Object(child)) = s.get_mut(first) else {
            return;
        };
        if rest.is_empty() {
            // The node's own mark; members below it stay.
            child.remove(".");
        } else {
            go(child, rest);
        }
        if child.is_empty() {
            s.remove(first);
        }
    }
    go(set, path);
}

/// Whether a member path names a list item (ends in `k:` or `v:`).
pub fn is_item(path: &[String]) -> bool {
    path.last()
        .is_some_and(|k| k.starts_with("k:") || k.starts_with("v:"))
}

fn matches_item(item: &Value, elem: &str) -> bool {
    if let Some(k) = elem.strip_prefix("k:") {
        let (Ok(Value::Object(want)), Value::Object(have)) =
            (serde_json::from_str::<Value>(k), item)
        else {
            return false;
        };
        return want
            .iter()
            .all(|(name, v)| key_value(have, name).as_ref() == Some(v));
    }
    if let Some(v) = elem.strip_prefix("v:") {
        return serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item);
    }
    false
}

/// The value at `path` in `obj`.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, elem| {
        if let Some(f) = elem.strip_prefix("f:") {
            cur.as_object()?.get(f)
        } else {
            cur.as_array()?.iter().find(|it| matches_item(it, elem))
        }
    })
}

/// Removes the value at `path` from `obj`; a missing path is a no-op.
pub fn remove_value(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for elem in parents {
        let next = if let Some(f) = elem.strip_prefix("f:") {
            cur.as_object_mut().and_then(|m| m.get_mut(f))
        } else {
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|it| matches_item(it, elem)))
        };
        let Some(n) = next else { return };
        cur = n;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(a) = cur.as_array_mut() {
        a.retain(|it| !matches_item(it, last));
    }
}

/// `.spec.template.spec.containers[name="c"].image`: a path as the API
/// server prints it in conflict messages.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for elem in path {
        if let Some(f) = elem.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = elem.strip_prefix("k:") {
            let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                _ => vec![k.to_string()],
            };
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = elem.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}
