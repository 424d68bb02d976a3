//! Server-side apply and the `Update` entries of plain writes.
//!
//! [`apply`] follows structured-merge-diff as kube-apiserver runs it:
//! - The applied configuration's field set ([`fields::of`]) becomes the
//!   manager's `Apply` entry in `metadata.managedFields`.
//! - A field the configuration sets to a value different from the live one,
//!   owned by another manager, is a conflict: 409 `Conflict` listing every
//!   field and manager, unless `force`, which takes the fields over.
//! - Fields the manager applied before and no longer applies are removed
//!   from the object unless another manager also owns them.
//! - The configuration merges into the live object: maps key by key,
//!   list-maps item by item (by their `x-kubernetes-list-map-keys`), sets by
//!   value, atomic lists and scalars replaced.
//! - Re-applying the same configuration returns the live object unchanged
//!   (managedFields timestamps included).
//!
//! The caller checks names and namespaces. A `metadata.resourceVersion` in
//! the configuration is kept in the result (never owned), so the caller's
//! optimistic-concurrency check makes it a precondition, as the API server
//! does. `status` is ignored, as on the main resource of the API server:
//! this is not the apply of the `status` or `scale` subresources.

use serde_json::{Map, Value};

use super::check_depth;
use super::fields::{self, Path, Set};
use super::keys::{self, ListType};
use crate::api::error::{FieldErrorKind, Reason};
use crate::api::{ApiError, FieldError, Resource};

/// One `managedFields` entry: its other keys as they were, and its set.
struct Entry {
    raw: Map<String, Value>,
    set: Set,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str) -> bool {
        self.raw.get("manager").and_then(Value::as_str) == Some(manager)
            && self.raw.get("operation").and_then(Value::as_str) == Some(operation)
            && self.raw.get("subresource").is_none()
    }
    /// `"name"` for appliers, `"name" using v1 at <time>` for updaters.
    fn describe(&self) -> String {
        let s = |k: &str| self.raw.get(k).and_then(Value::as_str).unwrap_or_default();
        let name = format!("{:?}", s("manager"));
        if s("operation") != "Update" {
            return name;
        }
        match self.raw.get("time").and_then(Value::as_str) {
            Some(t) => format!("{name} using {} at {t}", s("apiVersion")),
            None => format!("{name} using {}", s("apiVersion")),
        }
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    let Some(Value::Array(list)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let mut raw = e.as_object()?.clone();
            let set = match raw.remove("fieldsV1") {
                Some(Value::Object(s)) => s,
                _ => Set::new(),
            };
            Some(Entry { raw, set })
        })
        .collect()
}

fn store_entries(obj: &mut Value, list: Vec<Entry>) {
    let list: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|mut e| {
            e.raw.insert("fieldsType".into(), "FieldsV1".into());
            e.raw.insert("fieldsV1".into(), Value::Object(e.set));
            Value::Object(e.raw)
        })
        .collect();
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn new_entry(manager: &str, operation: &str, resource: Resource, now: &str, set: Set) -> Entry {
    let mut raw = Map::new();
    raw.insert("manager".into(), manager.into());
    raw.insert("operation".into(), operation.into());
    raw.insert("apiVersion".into(), resource.api_version().into());
    raw.insert("time".into(), now.into());
    Entry { raw, set }
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        meta.remove("managedFields");
    }
    v
}

fn conflict_error(conflicts: &[(String, Path)]) -> ApiError {
    let message = if let [(who, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {who}: {}",
            fields::display(path)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in conflicts.iter().filter(|(w, _)| w == m) {
                lines.push(format!("- {}", fields::display(p)));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::new(Reason::Conflict, message);
    e.causes = conflicts
        .iter()
        .map(|(who, path)| FieldError {
            kind: FieldErrorKind::ManagerConflict,
            field: fields::display(path),
            value: None,
            detail: format!("conflict with {who}"),
        })
        .collect();
    e
}

/// Server-side apply of `applied` by `manager` onto `live` (`None`: create).
pub fn apply(
    live: Option<&Value>,
    mut applied: Value,
    manager: &str,
    force: bool,
    resource: Resource,
    now: &str,
) -> Result<Value, ApiError> {
    check_depth(&applied)?;
    let Value::Object(cfg) = &mut applied else {
        return Err(ApiError::bad_request(
            "applied configuration must be an object",
        ));
    };
    let want = resource.api_version();
    match cfg.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == want => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
        None => return Err(ApiError::bad_request("apiVersion must be set")),
    }
    match cfg.get("kind").and_then(Value::as_str) {
        Some(k) if k == resource.kind() => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind()
            )));
        }
        None => return Err(ApiError::bad_request("kind must be set")),
    }
    cfg.remove("status");
    if let Some(Value::Object(meta)) = cfg.get_mut("metadata") {
        for k in ["managedFields", "uid", "generation", "creationTimestamp"] {
            meta.remove(k);
        }
    }
    let new_set = fields::of(resource, &applied)?;
    let mut base = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut list = entries(&base);
    let mine = list.iter().position(|e| e.is(manager, "Apply"));
    let prev_set = mine.map(|i| list[i].set.clone()).unwrap_or_default();

    // Conflicts: members whose value would change and another manager owns.
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for path in fields::members(&new_set) {
        if fields::is_item(&path) {
            continue;
        }
        let Some(have) = fields::get(&base, &path) else {
            continue;
        };
        if fields::get(&applied, &path) == Some(have) {
            continue;
        }
        for (i, e) in list.iter().enumerate() {
            if Some(i) != mine && fields::contains(&e.set, &path) {
                conflicts.push((e.describe(), path.clone()));
                taken.push((i, path.clone()));
            }
        }
    }
    conflicts.sort_by_key(|(m, p)| (fields::display(p), m.clone()));
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for (i, path) in taken {
        if let Some(e) = list.get_mut(i) {
            fields::remove(&mut e.set, &path);
        }
    }

    // Fields this manager stopped applying go unless someone else owns them.
    for path in fields::members(&prev_set) {
        if fields::contains(&new_set, &path) {
            continue;
        }
        let shared = list
            .iter()
            .enumerate()
            .any(|(i, e)| Some(i) != mine && fields::contains(&e.set, &path));
        if !shared {
            fields::remove_value(&mut base, &path);
        }
    }
    let mut path = Vec::new();
    merge_applied(&mut base, &applied, resource, &mut path);

    if let Some(old) = live
        && new_set == prev_set
        && without_managed_fields(old) == without_managed_fields(&base)
    {
        return Ok(old.clone());
    }
    let entry = new_entry(manager, "Apply", resource, now, new_set);
    match mine {
        Some(i) => list[i] = entry,
        None => list.push(entry),
    }
    store_entries(&mut base, list);
    Ok(base)
}

/// Merges an applied configuration into `target` (the live object).
fn merge_applied(target: &mut Value, applied: &Value, resource: Resource, path: &mut Vec<String>) {
    let atomic = {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        keys::atomic_struct(resource, &p)
    };
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) if !atomic => {
            for (k, v) in a {
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                path.push(k.clone());
                match t.get_mut(k) {
                    Some(old) => merge_applied(old, v, resource, path),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(t), Value::Array(a)) => {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            match keys::list_type(resource, &p) {
                ListType::Atomic => *t = a.clone(),
                ListType::Set => {
                    for v in a {
                        if !t.contains(v) {
                            t.push(v.clone());
                        }
                    }
                }
                ListType::Map(keys) => {
                    for item in a {
                        let Value::Object(im) = item else { continue };
                        let key = fields::item_key(keys, im);
                        let slot = t.iter_mut().find(|old| {
                            old.as_object()
                                .is_some_and(|om| fields::item_key(keys, om) == key)
                        });
                        match slot {
                            Some(old) => merge_applied(old, item, resource, path),
                            None => t.push(item.clone()),
                        }
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Records an `Update` entry for `manager` in `new`'s managedFields: the
/// fields whose value differs from `old` (all of them on create) become
/// the manager's and stop being anyone else's. `new` without managedFields
/// inherits `old`'s. Objects of kinds not served are left alone.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let kind = new.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(resource) = Resource::from_kind(api_version, kind) else {
        return;
    };
    if new.pointer("/metadata/managedFields").is_none()
        && let Some(mf) = old.and_then(|o| o.pointer("/metadata/managedFields"))
        && let Some(Value::Object(meta)) = new.get_mut("metadata")
    {
        meta.insert("managedFields".into(), mf.clone());
    }
    let Ok(set) = fields::of(resource, new) else {
        return;
    };
    let changed: Vec<Path> = fields::members(&set)
        .into_iter()
        .filter(|p| match old {
            None => true,
            Some(o) => fields::get(o, p) != fields::get(new, p),
        })
        .collect();
    if changed.is_empty() {
        return;
    }
    let mut list = entries(new);
    for e in &mut list {
        if !e.is(manager, "Update") {
            for p in &changed {
                fields::remove(&mut e.set, p);
            }
        }
    }
    let i = match list.iter().position(|e| e.is(manager, "Update")) {
        Some(i) => i,
        None => {
            list.push(new_entry(manager, "Update", resource, now, Set::new()));
            list.len() - 1
        }
    };
    if let Some(e) = list.get_mut(i) {
        for p in &changed {
            fields::insert(&mut e.set, p, fields::is_item(p));
        }
        e.raw.insert("time".into(), now.into());
        e.raw
            .insert("apiVersion".into(), resource.api_version().into());
    }
    store_entries(new, list);
}
