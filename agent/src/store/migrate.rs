//! Moving a cluster's whole state between datastores (the embedded store
//! and etcd): `herd datastore export` / `import`.
//!
//! The file is JSON Lines. Line 1 is a header, `{"apiVersion":
//! "herd.dev/v1", "kind": "DatastoreExport", "resourceVersion": "<source
//! revision>", "exportedAt": "<RFC 3339>", "counts": {"<plural>": n, ...}}`;
//! then one line per object, `{"resource": "<plural>", "object": {...}}`,
//! resource by resource in [`ORDER`] (Namespaces first, owners before what
//! they own, Events last), each resource sorted by namespace and name.
//!
//! Guarantees:
//! - **Export** reads every resource ([`Resource::ALL`]; Events can be left
//!   out) with one `list` each, before writing anything: a store error
//!   fails the export with no output. Each resource is one consistent read;
//!   the header's resourceVersion is the source's revision before the first
//!   one. A store written to meanwhile (a running agent renews its Lease)
//!   gives a file in which each resource is consistent on its own, not one
//!   cross-resource snapshot: stop the writers for an exact copy.
//! - **Secrets are in plain text** in the file, as they are in the store.
//! - **Import validates the whole input before writing anything**: the
//!   header, that every line is a JSON object line of a known resource,
//!   that every object has `metadata.name` and has `metadata.namespace` iff
//!   its resource is namespaced, no object twice, and that the file holds
//!   as many objects of each resource as the header announces (a file
//!   truncated at a line boundary is refused). An error names the 1-based
//!   line ([`MigrateError::Invalid`]).
//! - Objects already in the target are refused all together, listed, and
//!   nothing is written ([`MigrateError::Exists`]), unless `overwrite`:
//!   then they are replaced. An object that appears in the target *during*
//!   the import (a running target's controller making the ReplicaSet of an
//!   imported Deployment) is replaced by the exported one: the file wins.
//! - Each object is written as exported without `metadata.resourceVersion`
//!   (the target assigns new ones); uid, creationTimestamp, ownerReferences,
//!   finalizers and status are kept. Resources are written in [`ORDER`],
//!   so owners exist before their dependents (a garbage collector never
//!   sees an orphan); objects of one resource are written in parallel.
//! - Import is not atomic and never deletes: a store failure mid-way leaves
//!   the objects written so far (the error says how many) and objects of
//!   the target that the file does not hold stay. A re-run with `overwrite`
//!   is idempotent and completes it.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Datastore, Key, StoreError};
use crate::api::Resource;

mod parse;

pub use parse::{Entry, ExportFile, describe, read};

/// The header's `apiVersion`.
pub const API_VERSION: &str = "herd.dev/v1";
/// The header's `kind`.
pub const KIND: &str = "DatastoreExport";
/// Threads writing the objects of one resource.
const PARALLEL: usize = 8;
/// Objects named in an [`MigrateError::Exists`] message (all are in the
/// error value).
const SHOWN: usize = 20;

/// The order resources are exported and imported in: Namespaces first,
/// then what others refer to, owners before their dependents, Events last.
pub const ORDER: [Resource; 15] = [
    Resource::Namespaces,
    Resource::Nodes,
    Resource::ServiceAccounts,
    Resource::Secrets,
    Resource::ConfigMaps,
    Resource::Services,
    Resource::Endpoints,
    Resource::EndpointSlices,
    Resource::Leases,
    Resource::Deployments,
    Resource::DaemonSets,
    Resource::Jobs,
    Resource::ReplicaSets,
    Resource::Pods,
    Resource::Events,
];

/// [`ORDER`], then any resource of [`Resource::ALL`] it misses (a resource
/// added to the API is still exported).
pub fn order() -> Vec<Resource> {
    let mut out = ORDER.to_vec();
    for r in Resource::ALL {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The input is not a valid export; nothing was written.
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
    #[error("line {line}: reading the input: {source}")]
    Read {
        line: usize,
        #[source]
        source: io::Error,
    },
    #[error("writing the export: {0}")]
    Output(#[source] io::Error),
    /// A read of the store (export, or the import's check of the target).
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    /// Objects of the file already in the target; nothing was written.
    #[error("{} already exist in the target (--overwrite replaces them): {}", count(.objects.len()), shown(.objects))]
    Exists { objects: Vec<String> },
    /// A write failed after `written` objects were written.
    #[error(
        "line {line}: writing {object}: {source} ({written} objects written before it; re-run with --overwrite to complete the import)"
    )]
    Write {
        line: usize,
        object: String,
        written: usize,
        #[source]
        source: StoreError,
    },
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 object".into()
    } else {
        format!("{n} objects")
    }
}

fn shown(objects: &[String]) -> String {
    let mut s = objects
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if objects.len() > SHOWN {
        s.push_str(&format!(" and {} more", objects.len() - SHOWN));
    }
    s
}

/// Export options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// Leave Events out.
    pub skip_events: bool,
}

/// Import options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Replace objects that already exist in the target.
    pub overwrite: bool,
}

/// What an export or import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Export: the source's revision at the start; import: the target's
    /// revision after the last write.
    pub resource_version: u64,
    /// Objects exported or imported, by resource (plural).
    pub counts: BTreeMap<String, u64>,
    /// Import: how many of those replaced an object of the target.
    #[serde(default)]
    pub replaced: BTreeMap<String, u64>,
}

impl Summary {
    /// Every object counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// One `plural: n` line per resource with objects, in [`order`].
    pub fn lines(&self) -> Vec<String> {
        order()
            .into_iter()
            .filter_map(|r| {
                let n = *self.counts.get(r.plural())?;
                Some(match self.replaced.get(r.plural()) {
                    Some(&m) if m > 0 => format!("{}: {n} ({m} replaced)", r.plural()),
                    _ => format!("{}: {n}", r.plural()),
                })
            })
            .collect()
    }
}

/// Line 1 of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub api_version: String,
    pub kind: String,
    /// The source's revision when the export started.
    pub resource_version: String,
    pub exported_at: String,
    /// Objects in the file, by resource (plural).
    pub counts: BTreeMap<String, u64>,
}

/// An object line as written (field order: resource, object).
#[derive(Serialize)]
struct LineOut<'a> {
    resource: &'static str,
    object: &'a Value,
}

/// A source store's content, read and ready to write out.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub header: Header,
    /// In [`order`], each sorted by namespace and name.
    pub objects: Vec<(Resource, Vec<Value>)>,
}

/// Reads every resource of `store` (see the module docs).
pub fn snapshot(store: &dyn Datastore, opts: &ExportOptions) -> Result<Snapshot, MigrateError> {
    let revision = store.revision().map_err(|source| MigrateError::Store {
        what: "reading the store's revision".into(),
        source,
    })?;
    let mut counts = BTreeMap::new();
    let mut objects = Vec::new();
    for r in order() {
        if opts.skip_events && r == Resource::Events {
            continue;
        }
        let (items, _) = store.list(r, None).map_err(|source| MigrateError::Store {
            what: format!("listing {r}"),
            source,
        })?;
        counts.insert(r.plural().to_string(), items.len() as u64);
        objects.push((r, items));
    }
    let exported_at = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now());
    Ok(Snapshot {
        header: Header {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            resource_version: revision.to_string(),
            exported_at: exported_at.to_string(),
            counts,
        },
        objects,
    })
}

impl Snapshot {
    /// The header's counts and revision.
    pub fn summary(&self) -> Summary {
        Summary {
            resource_version: self.header.resource_version.parse().unwrap_or(0),
            counts: self.header.counts.clone(),
            replaced: BTreeMap::new(),
        }
    }

    /// Writes the file (header, then every object, one per line).
    pub fn write_to(&self, w: &mut dyn Write) -> Result<(), MigrateError> {
        serde_json::to_writer(&mut *w, &self.header).map_err(|e| MigrateError::Output(e.into()))?;
        w.write_all(b"\n").map_err(MigrateError::Output)?;
        for (r, items) in &self.objects {
            for object in items {
                let line = LineOut {
                    resource: r.plural(),
                    object,
                };
                serde_json::to_writer(&mut *w, &line)
                    .map_err(|e| MigrateError::Output(e.into()))?;
                w.write_all(b"\n").map_err(MigrateError::Output)?;
            }
        }
        w.flush().map_err(MigrateError::Output)
    }
}

/// Exports `store` to `writer`.
pub fn export(
    store: &dyn Datastore,
    writer: &mut dyn Write,
    opts: &ExportOptions,
) -> Result<Summary, MigrateError> {
    let snap = snapshot(store, opts)?;
    snap.write_to(writer)?;
    Ok(snap.summary())
}

/// The key of an object `store` listed.
fn key_of(resource: Resource, object: &Value) -> Option<Key> {
    let name = object.pointer("/metadata/name")?.as_str()?;
    Some(if resource.namespaced() {
        Key::namespaced(
            resource,
            object.pointer("/metadata/namespace")?.as_str()?,
            name,
        )
    } else {
        Key::cluster(resource, name)
    })
}

/// Reads and validates `reader` whole, then writes it into `store`.
pub fn import(
    store: &dyn Datastore,
    reader: &mut dyn BufRead,
    opts: &ImportOptions,
) -> Result<Summary, MigrateError> {
    let file = read(reader)?;
    apply(store, &file, opts)
}

/// Writes a validated file into `store` (see the module docs).
pub fn apply(
    store: &dyn Datastore,
    file: &ExportFile,
    opts: &ImportOptions,
) -> Result<Summary, MigrateError> {
    let mut by_resource: BTreeMap<Resource, Vec<&Entry>> = BTreeMap::new();
    for e in &file.entries {
        by_resource.entry(e.key.resource).or_default().push(e);
    }
    let mut existing: HashSet<Key> = HashSet::new();
    for &r in by_resource.keys() {
        let (items, _) = store.list(r, None).map_err(|source| MigrateError::Store {
            what: format!("listing {r} in the target"),
            source,
        })?;
        existing.extend(items.iter().filter_map(|o| key_of(r, o)));
    }
    if !opts.overwrite {
        let clashes: Vec<String> = order()
            .into_iter()
            .flat_map(|r| by_resource.get(&r).into_iter().flatten())
            .filter(|e| existing.contains(&e.key))
            .map(|e| describe(&e.key))
            .collect();
        if !clashes.is_empty() {
            return Err(MigrateError::Exists { objects: clashes });
        }
    }
    let written = AtomicUsize::new(0);
    let mut summary = Summary::default();
    for r in order() {
        // Resources the header counts (with none) are reported too.
        let entries = match by_resource.get(&r) {
            Some(e) => e.as_slice(),
            None if file.header.counts.contains_key(r.plural()) => &[],
            None => continue,
        };
        let replaced = write_all(store, entries, &existing, &written)?;
        summary
            .counts
            .insert(r.plural().to_string(), entries.len() as u64);
        summary.replaced.insert(r.plural().to_string(), replaced);
    }
    summary.resource_version = store.revision().map_err(|source| MigrateError::Store {
        what: "reading the target's revision".into(),
        source,
    })?;
    Ok(summary)
}

/// Writes `entries` with up to [`PARALLEL`] threads; how many replaced
/// an object, or the failure of the lowest line.
fn write_all(
    store: &dyn Datastore,
    entries: &[&Entry],
    existing: &HashSet<Key>,
    written: &AtomicUsize,
) -> Result<u64, MigrateError> {
    let failed = AtomicBool::new(false);
    let errors: Mutex<Vec<(&Entry, StoreError)>> = Mutex::new(Vec::new());
    let replaced = AtomicUsize::new(0);
    let chunk = entries.len().div_ceil(PARALLEL).max(1);
    std::thread::scope(|s| {
        for part in entries.chunks(chunk) {
            let (failed, errors, replaced) = (&failed, &errors, &replaced);
            s.spawn(move || {
                for e in part {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    match put(store, e, existing.contains(&e.key)) {
                        Ok(r) => {
                            written.fetch_add(1, Ordering::Relaxed);
                            if r {
                                replaced.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(err) => {
                            failed.store(true, Ordering::Relaxed);
                            errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((e, err));
                            return;
                        }
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some((e, source)) = errors.into_iter().min_by_key(|(e, _)| e.line) {
        return Err(MigrateError::Write {
            line: e.line,
            object: describe(&e.key),
            written: written.load(Ordering::Relaxed),
            source,
        });
    }
    Ok(replaced.load(Ordering::Relaxed) as u64)
}

/// Creates or replaces one object; true when it replaced one.
fn put(store: &dyn Datastore, e: &Entry, exists: bool) -> Result<bool, StoreError> {
    let mut object = e.object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    if exists {
        match store.update(&e.key, object.clone(), None) {
            Ok(_) => return Ok(true),
            // Deleted since the check: create it.
            Err(StoreError::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    match store.create(&e.key, object.clone()) {
        Ok(_) => Ok(false),
        // Made meanwhile (a controller of the target): the file wins.
        Err(StoreError::AlreadyExists { .. }) => store.update(&e.key, object, None).map(|_| true),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
