//! Reading an export: every line parsed and checked before anything is
//! written (the rules are in the parent module's docs). Errors name the
//! 1-based line.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use serde::Deserialize;
use serde_json::Value;

use super::{API_VERSION, Header, KIND, MigrateError, Summary};
use crate::api::Resource;
use crate::store::Key;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    resource: String,
    object: Value,
}

fn invalid(line: usize, reason: impl Into<String>) -> MigrateError {
    MigrateError::Invalid {
        line,
        reason: reason.into(),
    }
}

/// One object of an export file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// 1-based line in the file.
    pub line: usize,
    pub key: Key,
    pub object: Value,
}

/// A parsed and validated export file.
#[derive(Debug, Clone)]
pub struct ExportFile {
    pub header: Header,
    /// In file order.
    pub entries: Vec<Entry>,
}

impl ExportFile {
    /// Objects per resource, as in the header.
    pub fn summary(&self) -> Summary {
        Summary {
            resource_version: self.header.resource_version.parse().unwrap_or(0),
            counts: self.header.counts.clone(),
            replaced: BTreeMap::new(),
        }
    }
}

/// `plural ns/name` (or `plural name`), as errors name objects.
pub fn describe(key: &Key) -> String {
    match &key.namespace {
        Some(ns) => format!("{} {ns}/{}", key.resource, key.name),
        None => format!("{} {}", key.resource, key.name),
    }
}

/// Reads and validates a whole export (see the module docs); blank lines
/// are ignored.
pub fn read(reader: &mut dyn BufRead) -> Result<ExportFile, MigrateError> {
    let mut header: Option<(usize, Header)> = None;
    let mut entries = Vec::new();
    let mut seen: HashMap<Key, usize> = HashMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut line = 0;
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|source| MigrateError::Read {
                line: line + 1,
                source,
            })?;
        if n == 0 {
            break;
        }
        line += 1;
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        if header.is_none() {
            header = Some((line, parse_header(line, text)?));
            continue;
        }
        let entry = parse_entry(line, text)?;
        if let Some(first) = seen.insert(entry.key.clone(), line) {
            return Err(invalid(
                line,
                format!("{} is also on line {first}", describe(&entry.key)),
            ));
        }
        *counts
            .entry(entry.key.resource.plural().to_string())
            .or_default() += 1;
        entries.push(entry);
    }
    let Some((header_line, header)) = header else {
        return Err(invalid(1, "empty input: no DatastoreExport header"));
    };
    let mut plurals: Vec<&String> = header.counts.keys().chain(counts.keys()).collect();
    plurals.sort();
    plurals.dedup();
    for p in plurals {
        let announced = header.counts.get(p).copied().unwrap_or(0);
        let found = counts.get(p).copied().unwrap_or(0);
        if announced != found {
            return Err(invalid(
                line.max(header_line),
                format!(
                    "the header (line {header_line}) announces {announced} {p}, the file holds {found}: truncated or edited"
                ),
            ));
        }
    }
    Ok(ExportFile { header, entries })
}

fn parse_header(line: usize, text: &str) -> Result<Header, MigrateError> {
    let header: Header = serde_json::from_str(text)
        .map_err(|e| invalid(line, format!("not a {KIND} header: {e}")))?;
    if header.api_version != API_VERSION || header.kind != KIND {
        return Err(invalid(
            line,
            format!(
                "header is {}/{}, expected {API_VERSION}/{KIND}",
                header.api_version, header.kind
            ),
        ));
    }
    if header.resource_version.parse::<u64>().is_err() {
        return Err(invalid(
            line,
            format!(
                "header resourceVersion {:?} is not a number",
                header.resource_version
            ),
        ));
    }
    if let Some(p) = header
        .counts
        .keys()
        .find(|p| Resource::from_plural(p).is_none())
    {
        return Err(invalid(
            line,
            format!("header counts unknown resource {p:?}"),
        ));
    }
    Ok(header)
}

/// A name or namespace as the store keys it.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && !s.contains('/') && s != "." && s != ".."
}

fn parse_entry(line: usize, text: &str) -> Result<Entry, MigrateError> {
    let l: LineIn = serde_json::from_str(text).map_err(|e| {
        invalid(
            line,
            format!("not a {{\"resource\": ..., \"object\": ...}} line: {e}"),
        )
    })?;
    let resource = Resource::from_plural(&l.resource)
        .ok_or_else(|| invalid(line, format!("unknown resource {:?}", l.resource)))?;
    if !l.object.is_object() {
        return Err(invalid(
            line,
            format!("{resource}: object is not a JSON object"),
        ));
    }
    let name = match l.object.pointer("/metadata/name") {
        Some(Value::String(n)) if valid_segment(n) => n.clone(),
        Some(Value::String(n)) if !n.is_empty() => {
            return Err(invalid(
                line,
                format!("{resource}: invalid metadata.name {n:?}"),
            ));
        }
        _ => {
            return Err(invalid(
                line,
                format!("{resource} object without metadata.name"),
            ));
        }
    };
    let namespace = match l.object.pointer("/metadata/namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if ns.is_empty() => None,
        Some(Value::String(ns)) if valid_segment(ns) => Some(ns.clone()),
        Some(other) => {
            return Err(invalid(
                line,
                format!("{resource} {name}: invalid metadata.namespace {other}"),
            ));
        }
    };
    let key = match (resource.namespaced(), namespace) {
        (true, Some(ns)) => Key::namespaced(resource, &ns, &name),
        (true, None) => {
            return Err(invalid(
                line,
                format!("{resource} {name}: namespaced, but metadata.namespace is missing"),
            ));
        }
        (false, None) => Key::cluster(resource, &name),
        (false, Some(ns)) => {
            return Err(invalid(
                line,
                format!("{resource} {name} is cluster-scoped but has metadata.namespace {ns:?}"),
            ));
        }
    };
    if let Some(kind) = l.object.get("kind").and_then(Value::as_str)
        && kind != resource.kind()
    {
        return Err(invalid(
            line,
            format!(
                "{} is of kind {kind:?}, not {}",
                describe(&key),
                resource.kind()
            ),
        ));
    }
    Ok(Entry {
        line,
        key,
        object: l.object,
    })
}
