//! Strategic merge patch, as k8s.io/apimachinery/pkg/util/strategicpatch
//! applies it on the server (`MergeParallelList`, `IgnoreUnmatchedNulls`).
//!
//! - Maps merge key by key; `null` deletes a key.
//! - Lists with a merge key ([`keys::strategic`]) merge item by item;
//!   scalar lists with `patchStrategy: merge` are unions; every other list
//!   is replaced.
//! - Directives: `$patch: replace|delete|merge` in maps and list items,
//!   `$retainKeys`, `$setElementOrder/<field>`,
//!   `$deleteFromPrimitiveList/<field>`. `$patch: delete` of a nested map
//!   leaves `{}`, as in Go.
//! - Order: items named in `$setElementOrder` (else in the patch list) come
//!   in that order; items only on the server keep their place relative to
//!   them, including Go's in-place slice effects ([`Alias`]). Checked against
//!   the real kubectl's strategicpatch (`tests_oracle`).
//!
//! Deliberate differences from Go, all on input kubectl never sends:
//! directives are never stored (values new to the object are merged into
//! an empty value, so their directives are consumed, where Go copies them
//! verbatim and the decoder later drops them); an unknown `$` key is 400
//! (Go stores it); a non-list where the schema merges a list is 400 naming
//! the field (Go stores it and decoding fails); `$setElementOrder` is not
//! checked against the patch list's order.
//!
//! Errors name the field path. Lookups are hashed, so a list of n items costs
//! O(n); nesting is bounded by the JSON parser's depth limit (128).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::PatchError;
use super::keys::{self, FieldMeta, ListStrategy};
use crate::api::Resource;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

struct Ctx {
    resource: Resource,
    path: Vec<String>,
}

impl Ctx {
    fn meta(&self) -> FieldMeta {
        let p: Vec<&str> = self.path.iter().map(String::as_str).collect();
        keys::strategic(self.resource, &p)
    }
    fn field(&self) -> String {
        if self.path.is_empty() {
            "<root>".to_string()
        } else {
            self.path.join(".")
        }
    }
    fn bad(&self, what: impl std::fmt::Display) -> PatchError {
        PatchError::Malformed(format!("{}: {what}", self.field()))
    }
}

/// Applies the strategic merge patch `patch` to `live`.
pub fn apply(live: &Value, patch: Value, resource: Resource) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Malformed(
            "strategic merge patch must be a JSON object".into(),
        ));
    };
    let mut ctx = Ctx {
        resource,
        path: Vec::new(),
    };
    let original = match live {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match merge_map(Some(original), p, &mut ctx)? {
        Some(m) => Ok(Value::Object(m)),
        None => Err(PatchError::Malformed(
            "$patch: delete of the whole object is not a patch; use DELETE".into(),
        )),
    }
}

/// Merges a map patch; `None` means the map is deleted (`$patch: delete`).
fn merge_map(
    original: Option<Map<String, Value>>,
    mut patch: Map<String, Value>,
    ctx: &mut Ctx,
) -> Result<Option<Map<String, Value>>, PatchError> {
    let mut original = original.unwrap_or_default();
    if let Some(d) = patch.remove(PATCH) {
        match d.as_str() {
            Some("delete") => return Ok(None),
            Some("replace") => original = Map::new(),
            Some("merge") => {}
            _ => return Err(ctx.bad(format_args!("unknown patch type {d}"))),
        }
    }
    if let Some(keep) = patch.remove(RETAIN_KEYS) {
        let Value::Array(keep) = keep else {
            return Err(ctx.bad("$retainKeys must be a list of strings"));
        };
        let mut retained = HashSet::new();
        for k in &keep {
            let Some(k) = k.as_str() else {
                return Err(ctx.bad("$retainKeys must be a list of strings"));
            };
            retained.insert(k.to_string());
        }
        // Every key the patch sets must be retained (Go's
        // ErrBadPatchFormatForRetainKeys).
        if let Some(k) = patch.iter().find_map(|(k, v)| {
            (!v.is_null() && !k.starts_with('$') && !retained.contains(k)).then_some(k)
        }) {
            return Err(ctx.bad(format_args!(
                "invalid patch format of retainKeys: {k:?} is set but not retained"
            )));
        }
        original.retain(|k, _| retained.contains(k));
    }
    // Deletions from primitive lists, then ordered lists, then the rest.
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with('$'))
        .cloned()
        .collect();
    for k in &directive_keys {
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let Some(Value::Array(del)) = patch.remove(k) else {
                return Err(ctx.bad(format_args!("{k} must be a list")));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                let gone: HashSet<String> = del.iter().map(Value::to_string).collect();
                list.retain(|v| !gone.contains(&v.to_string()));
            }
        }
    }
    for k in &directive_keys {
        let Some(field) = k.strip_prefix(SET_ORDER) else {
            continue;
        };
        let Some(Value::Array(order)) = patch.remove(k) else {
            return Err(ctx.bad(format_args!("{k} must be a list")));
        };
        ctx.path.push(field.to_string());
        let atomic = ctx.meta().list == ListStrategy::Atomic;
        ctx.path.pop();
        if atomic {
            continue;
        }
        let patch_list = match patch.get(field) {
            Some(Value::Null) => continue,
            None if !original.contains_key(field) => continue,
            Some(Value::Array(_)) | None => match patch.remove(field) {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            },
            Some(_) => return Err(ctx.bad(format_args!("{field} must be a list"))),
        };
        ctx.path.push(field.to_string());
        let orig_list = match original.remove(field) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(ctx.bad("expected a list in the live object")),
        };
        let merged = merge_list(orig_list, patch_list, Some(&order), ctx)?;
        ctx.path.pop();
        original.insert(field.to_string(), Value::Array(merged));
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            if k.starts_with(SET_ORDER) || k.starts_with(DELETE_PRIMITIVE) {
                continue;
            }
            return Err(ctx.bad(format_args!("unknown directive {k:?}")));
        }
        if v.is_null() {
            original.remove(&k);
            continue;
        }
        ctx.path.push(k.clone());
        let old = original.remove(&k);
        let merged = merge_value(old, v, ctx)?;
        ctx.path.pop();
        if let Some(m) = merged {
            original.insert(k, m);
        }
    }
    Ok(Some(original))
}

/// Merges the patch value of the field at `ctx.path` into its old value.
fn merge_value(old: Option<Value>, v: Value, ctx: &mut Ctx) -> Result<Option<Value>, PatchError> {
    let meta = ctx.meta();
    match (old, v) {
        (_, Value::Object(_)) if meta.list != ListStrategy::Atomic => {
            Err(ctx.bad("expected a list, got object"))
        }
        (old, Value::Object(p)) => {
            let old = match old {
                Some(Value::Object(o)) => Some(o),
                _ => None,
            };
            // `$patch: delete` of a map leaves an empty map, as in Go.
            Ok(Some(Value::Object(
                merge_map(old, p, ctx)?.unwrap_or_default(),
            )))
        }
        (old, Value::Array(p)) => {
            let old = match old {
                Some(Value::Array(o)) if meta.list != ListStrategy::Atomic => o,
                _ => Vec::new(),
            };
            Ok(Some(Value::Array(merge_list(old, p, None, ctx)?)))
        }
        (_, v) => {
            if meta.list != ListStrategy::Atomic {
                return Err(ctx.bad(format_args!("expected a list, got {}", type_name(&v))));
            }
            Ok(Some(v))
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// The identity of a list item: its merge-key value, or the scalar itself.
fn identity(item: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(k) => item.get(k).map(Value::to_string),
        None => Some(item.to_string()),
    }
}

/// Merges one list; `order` is its `$setElementOrder`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    order: Option<&Vec<Value>>,
    ctx: &mut Ctx,
) -> Result<Vec<Value>, PatchError> {
    match ctx.meta().list {
        ListStrategy::Atomic => {
            // Replaced whole; directives inside its items are still consumed.
            let mut out = Vec::with_capacity(patch.len());
            for (i, item) in patch.into_iter().enumerate() {
                ctx.path.push(i.to_string());
                let m = match item {
                    Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => {
                        merge_map(None, m, ctx)?.map(Value::Object)
                    }
                    other => Some(other),
                };
                ctx.path.pop();
                out.extend(m);
            }
            Ok(out)
        }
        ListStrategy::MergePrimitive => {
            if let Some(bad) = patch
                .iter()
                .chain(order.into_iter().flatten())
                .find(|v| v.is_object() || v.is_array())
            {
                return Err(ctx.bad(format_args!(
                    "expected a list of scalars, got an item of type {}",
                    type_name(bad)
                )));
            }
            let mut seen = HashSet::new();
            let mut merged = Vec::new();
            for v in original.iter().chain(patch.iter()) {
                if seen.insert(v.to_string()) {
                    merged.push(v.clone());
                }
            }
            let merged = normalize(merged, &patch, &original, None);
            Ok(match order {
                Some(order) => normalize(merged, order, &original, None),
                None => merged,
            })
        }
        ListStrategy::MergeKey(key) => merge_keyed(original, patch, order, key, ctx),
    }
}

/// Merges a list of maps by `key`, as `mergeSlice` and, with `order`,
/// `mergePatchIntoOriginal`.
///
/// The second ordering pass uses the live list as Go sees it after the
/// merge: `mergeSlice` deletes and appends in place in the live list's
/// backing array, so the "server order" of the `$setElementOrder` pass is
/// that array, shifted by deletions and with appended items written into
/// the freed tail. [`Alias`] replays those writes; kube-apiserver's results
/// depend on them (e.g. where a server-only item lands next to a new one).
fn merge_keyed(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    order: Option<&Vec<Value>>,
    key: &'static str,
    ctx: &mut Ctx,
) -> Result<Vec<Value>, PatchError> {
    let mut alias = Alias::new(&original);
    let mut plain = Vec::new();
    let mut replace = false;
    for (i, item) in patch.into_iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(ctx.bad(format_args!(
                "item {i}: expected an object with merge key {key:?}, got {}",
                type_name(&item)
            )));
        };
        match m.get(PATCH).map(|d| d.as_str()) {
            None => plain.push(m),
            Some(Some("delete")) => {
                let Some(id) = m.get(key).map(Value::to_string) else {
                    return Err(ctx.bad(format_args!(
                        "item {i} does not contain declared merge key: {key}"
                    )));
                };
                original.retain(|o| identity(o, Some(key)).as_deref() != Some(id.as_str()));
                alias.delete(&id, key);
            }
            Some(Some("replace")) => replace = true,
            Some(Some("merge")) => {
                return Err(ctx.bad("merging lists cannot yet be specified in the patch"));
            }
            Some(_) => return Err(ctx.bad(format_args!("item {i}: unknown patch type"))),
        }
    }
    if replace {
        original.clear();
        alias.detach();
    }
    let server_order = original.clone();
    let patch_order: Vec<Value> = plain.iter().cloned().map(Value::Object).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, o) in original.iter().enumerate() {
        if let Some(id) = identity(o, Some(key)) {
            index.entry(id).or_insert(i);
        }
    }
    for (i, m) in plain.into_iter().enumerate() {
        let Some(id) = m.get(key).map(Value::to_string) else {
            return Err(ctx.bad(format_args!(
                "item {i} does not contain declared merge key: {key}"
            )));
        };
        let slot = index.get(&id).copied();
        let old = slot.and_then(|s| match original.get_mut(s) {
            Some(Value::Object(o)) => Some(std::mem::take(o)),
            _ => None,
        });
        let merged = merge_map(old, m, ctx)?.unwrap_or_default();
        match slot {
            Some(s) => {
                if let Some(o) = original.get_mut(s) {
                    *o = Value::Object(merged);
                }
            }
            None => {
                index.insert(id, original.len());
                alias.append(&merged);
                original.push(Value::Object(merged));
            }
        }
    }
    let merged = normalize(original, &patch_order, &server_order, Some(key));
    Ok(match order {
        Some(order) => normalize(merged, order, &alias.items, Some(key)),
        None => merged,
    })
}

/// The live list's backing array as Go's in-place `append`s leave it.
struct Alias {
    items: Vec<Value>,
    len: usize,
    attached: bool,
}

impl Alias {
    fn new(original: &[Value]) -> Alias {
        Alias {
            items: original.to_vec(),
            len: original.len(),
            attached: true,
        }
    }
    /// `deleteMatchingEntries`: shifts left within the first `len` slots.
    fn delete(&mut self, id: &str, key: &str) {
        if !self.attached {
            return;
        }
        while let Some(k) = self.items[..self.len]
            .iter()
            .position(|o| identity(o, Some(key)).as_deref() == Some(id))
        {
            // `append(s[:k], s[k+1:]...)`: the last slot keeps its value.
            for j in k..self.len - 1 {
                self.items[j] = self.items[j + 1].clone();
            }
            self.len -= 1;
        }
    }
    /// `append`: writes into the tail while capacity (the live length) lasts.
    fn append(&mut self, item: &Map<String, Value>) {
        if self.attached && self.len < self.items.len() {
            self.items[self.len] = Value::Object(item.clone());
            self.len += 1;
        } else {
            self.attached = false;
        }
    }
    fn detach(&mut self) {
        self.attached = false;
    }
}

/// `normalizeElementOrder`: items named in `order` come in that order;
/// server-only items keep their place relative to the live list.
fn normalize(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let position = |list: &[Value]| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (i, v) in list.iter().enumerate() {
            if let Some(id) = identity(v, key) {
                m.entry(id).or_insert(i);
            }
        }
        m
    };
    let in_order = position(order);
    let in_server = position(server);
    let (mut patched, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| identity(v, key).is_some_and(|id| in_order.contains_key(&id)));
    patched.sort_by_key(|v| identity(v, key).and_then(|id| in_order.get(&id).copied()));
    let pos = |v: &Value| identity(v, key).and_then(|id| in_server.get(&id).copied());
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        patched.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((pos(l), pos(r)), (Some(a), Some(b)) if a < b),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}
