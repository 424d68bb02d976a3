//! `herd apply -f FILE|DIR|- [-R]`: kubectl's client-side apply.
//!
//! Each object is read (`GET`); absent → `POST` (`pod/web created`);
//! present → `PUT` of the live object merged with the manifest at the live
//! `resourceVersion` (`pod/web configured`; a 409 is retried with a fresh
//! read, up to 5 times), unless every field the manifest
//! sets already has that value and nothing was removed since the last
//! apply (`pod/web unchanged`). As kubectl, the manifest is recorded in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, so fields
//! dropped from a manifest are removed on the next apply. Lists of objects
//! that carry a `name` (containers, env, volumes, ports) merge by name,
//! other lists are replaced. A bad file or document is reported (naming
//! file and document) after the others were applied, and the command exits
//! 1, as kubectl does.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value};

use crate::api::Resource;
use crate::api::manifest::parse_documents;

use super::client::ClientError;
use super::{Ctx, Exit, client_error_message};

/// The annotation kubectl's client-side apply keeps.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `herd apply` flags.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory (*.yaml, *.yml, *.json) or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Walk directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// One manifest source and its documents (or why it could not be read).
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub docs: Result<Vec<Value>, String>,
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                collect_dir(&p, recursive, out)?;
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads every `-f` argument: files, directories (sorted), `-` (stdin).
pub fn read_sources(files: &[String], recursive: bool) -> Vec<Source> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            let docs = std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("error reading STDIN: {e}"))
                .and_then(|_| parse_documents(&text, "STDIN").map_err(|e| e.to_string()));
            out.push(Source {
                name: "STDIN".into(),
                docs,
            });
            continue;
        }
        let path = Path::new(f);
        let mut paths = Vec::new();
        if path.is_dir() {
            if let Err(e) = collect_dir(path, recursive, &mut paths) {
                out.push(Source {
                    name: f.clone(),
                    docs: Err(format!("error reading {f:?}: {e}")),
                });
                continue;
            }
        } else {
            paths.push(path.to_path_buf());
        }
        for p in paths {
            let name = p.display().to_string();
            let docs = match std::fs::read_to_string(&p) {
                Ok(text) => parse_documents(&text, &name).map_err(|e| e.to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(format!("the path \"{name}\" does not exist"))
                }
                Err(e) => Err(format!("error reading {name:?}: {e}")),
            };
            out.push(Source { name, docs });
        }
    }
    out
}

/// An object of a manifest, located.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: Resource,
    pub namespace: String,
    pub name: String,
    pub object: Value,
}

/// Works out what a manifest document is and where it goes.
pub fn target_of(ctx: &Ctx, source: &str, index: usize, mut obj: Value) -> Result<Target, String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let Some(resource) = Resource::from_kind(&api_version, &kind) else {
        return Err(format!(
            "error: resource mapping not found for {source:?} (document {index}): \
             no matches for kind \"{kind}\" in version \"{api_version}\""
        ));
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(format!(
            "error: {source:?} (document {index}): resource name may not be empty"
        ));
    }
    let mut namespace = ctx.namespace.clone();
    if resource.namespaced() {
        if let Some(ns) = obj["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if ctx.namespace_explicit && ns != ctx.namespace {
                return Err(format!(
                    "error: the namespace from the provided object \"{ns}\" does not match \
                     the namespace \"{}\". You must pass '--namespace={ns}' to perform this \
                     operation.",
                    ctx.namespace
                ));
            }
            namespace = ns.to_string();
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.insert("namespace".into(), namespace.clone().into());
        }
    }
    Ok(Target {
        resource,
        namespace,
        name,
        object: obj,
    })
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

fn annotations_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let ann = meta
        .as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ann.is_object() {
        *ann = Value::Object(Map::new());
    }
    ann.as_object_mut()
}

/// True when every field `a` sets has the same value in `b` (`null`s and
/// empty collections in `a` match absent fields).
pub fn subset(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| match b.get(k) {
            Some(bv) => subset(v, bv),
            None => is_empty(v),
        }),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| subset(x, y))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (a, Value::Null) => is_empty(a),
        _ => a == b,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The parts of a manifest compared with the live object.
fn comparable(manifest: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = manifest.as_object() {
        for (k, v) in m {
            if !matches!(
                k.as_str(),
                "apiVersion" | "kind" | "metadata" | "status" | "stringData"
            ) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let mut meta = Map::new();
    for k in ["labels", "annotations"] {
        if let Some(v) = manifest["metadata"].get(k) {
            meta.insert(k.into(), v.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    Value::Object(out)
}

fn named(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|i| i["name"].is_string())
}

/// Merges `manifest` into `live`: objects recursively, lists of named
/// objects by name, other values replaced; fields in `last` (the previous
/// manifest) that `manifest` no longer sets are removed.
pub fn merge(live: &Value, manifest: &Value, last: Option<&Value>) -> Value {
    match (live, manifest) {
        (Value::Object(l), Value::Object(m)) => {
            let mut out = l.clone();
            if let Some(Value::Object(prev)) = last {
                for k in prev.keys() {
                    if !m.contains_key(k) {
                        out.remove(k);
                    }
                }
            }
            for (k, v) in m {
                let merged = match out.get(k) {
                    Some(lv) => merge(lv, v, last.and_then(|p| p.get(k))),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(m)) if named(l) && named(m) => Value::Array(
            m.iter()
                .map(|mi| {
                    let key = &mi["name"];
                    let prev = last
                        .and_then(Value::as_array)
                        .and_then(|p| p.iter().find(|p| &p["name"] == key));
                    match l.iter().find(|li| &li["name"] == key) {
                        Some(li) => merge(li, mi, prev),
                        None => mi.clone(),
                    }
                })
                .collect(),
        ),
        (_, m) => m.clone(),
    }
}

/// Applies one object; a conflict (a controller wrote the object between
/// our read and our write) is retried with a fresh read, as kubectl does.
pub async fn apply_one(ctx: &Ctx, t: &Target) -> Result<Outcome, ClientError> {
    let mut attempt = 0;
    loop {
        match apply_once(ctx, t).await {
            Err(e) if e.is_conflict() && attempt < 5 => attempt += 1,
            other => return other,
        }
    }
}

async fn apply_once(ctx: &Ctx, t: &Target) -> Result<Outcome, ClientError> {
    let mut desired = t.object.clone();
    let record = format!("{}\n", t.object);
    if let Some(a) = annotations_mut(&mut desired) {
        a.insert(LAST_APPLIED.into(), record.clone().into());
    }
    let live = match ctx
        .client
        .get::<Value>(t.resource, &t.namespace, &t.name)
        .await
    {
        Ok(v) => v,
        Err(e) if e.is_not_found() => {
            let _: Value = ctx
                .client
                .create(t.resource, &t.namespace, &desired)
                .await?;
            return Ok(Outcome::Created);
        }
        Err(e) => return Err(e),
    };
    let live_record = live["metadata"]["annotations"][LAST_APPLIED].as_str();
    let last: Option<Value> = live_record.and_then(|r| serde_json::from_str(r).ok());
    let same_record = last.as_ref() == Some(&t.object);
    if same_record && subset(&comparable(&t.object), &live) {
        return Ok(Outcome::Unchanged);
    }
    let mut body = merge(&live, &desired, last.as_ref());
    if let Some(m) = body["metadata"].as_object_mut() {
        m.insert(
            "resourceVersion".into(),
            live["metadata"]["resourceVersion"].clone(),
        );
    }
    let _: Value = ctx
        .client
        .replace(t.resource, &t.namespace, &t.name, &body)
        .await?;
    Ok(Outcome::Configured)
}

/// Runs `herd apply`.
pub async fn run(ctx: &Ctx, args: ApplyArgs) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let mut any = false;
    for src in read_sources(&args.files, args.recursive) {
        let docs = match src.docs {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("error: {e}"));
                continue;
            }
        };
        for (i, doc) in docs.into_iter().enumerate() {
            any = true;
            let t = match target_of(ctx, &src.name, i + 1, doc) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match apply_one(ctx, &t).await {
                Ok(o) => println!(
                    "{}/{} {}",
                    super::printers::kind_name(t.resource),
                    t.name,
                    o.as_str()
                ),
                Err(e @ ClientError::Connect { .. }) => return Err(e.into()),
                Err(e) => errors.push(client_error_message(&e)),
            }
        }
    }
    if !any && errors.is_empty() {
        errors.push("error: no objects passed to apply".into());
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Exit { code: 1 }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keeps_server_defaults_and_drops_removed_fields() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}], "restartPolicy": "Always", "hostname": "h"}});
        let last = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "hostname": "h"}});
        let manifest = json!({"spec": {"containers": [{"name": "a", "image": "y"}]}});
        let m = merge(&live, &manifest, Some(&last));
        assert_eq!(
            m,
            json!({"spec": {"containers": [{"name": "a", "image": "y", "imagePullPolicy": "IfNotPresent"}], "restartPolicy": "Always"}})
        );
    }

    #[test]
    fn subset_ignores_defaults_but_sees_changes() {
        let live = json!({"metadata": {"labels": {"a": "1"}, "uid": "u"}, "data": {"k": "v"}});
        assert!(subset(
            &json!({"metadata": {"labels": {"a": "1"}}, "data": {"k": "v"}}),
            &live
        ));
        assert!(!subset(&json!({"data": {"k": "w"}}), &live));
        assert!(subset(
            &json!({"data": {"k": "v"}, "binaryData": {}}),
            &live
        ));
        assert!(subset(&json!({"n": 1}), &json!({"n": 1.0})));
    }
}
