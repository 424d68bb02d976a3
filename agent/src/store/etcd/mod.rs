//! The `Datastore` on a real etcd v3 cluster (`--datastore etcd://...`),
//! for sites that outgrow the embedded Raft store or already run etcd.
//!
//! Layout: every object is one key, `<prefix>/<resource>/<namespace>/<name>`
//! (`<prefix>/<resource>/<name>` for cluster-scoped ones), its value the
//! object's JSON without `metadata.resourceVersion`. Guarantees:
//!
//! - **resourceVersion is etcd's revision**: an object's is its key's
//!   `mod_revision`; a list's is the revision the range was read at; a
//!   DELETED event's is the deletion's revision. The revision is shared by
//!   everything in that etcd, so it jumps when other keys change (clients
//!   treat it as opaque, as Kubernetes requires).
//! - **Optimistic concurrency**: create is a transaction on
//!   `create_revision == 0`, update and delete on the expected
//!   `mod_revision`; the losing side gets `Conflict` (or `AlreadyExists`,
//!   `NotFound`) with nothing written.
//! - **Watches** are etcd watches on the resource's key range from
//!   `since + 1`, so history survives restarts of herd: a watch may start
//!   anywhere etcd has not compacted. A start that etcd compacted — also
//!   one that fell behind a compaction mid-watch — ends with
//!   [`StoreError::Expired`] (410 Gone; the client lists again). When the
//!   connection breaks (a member restarts, etcd elects a new leader), the
//!   watch reconnects and resumes after the last revision it delivered:
//!   no gap, no duplicate.
//! - **Failures**: reads and writes that etcd certainly did not apply
//!   (connection refused, no leader) are retried until the request
//!   timeout; a write whose outcome is unknown is answered
//!   [`StoreError::Timeout`] (504: it may still complete). A value under
//!   the prefix that is not a JSON object (written by someone else) is an
//!   [`StoreError::Encoding`] naming the key; `list` fails with it rather
//!   than silently dropping objects.
//! - **Leadership** ([`election`]): nodes campaign through etcd's Election
//!   API with a lease; the leader's scheduler and controllers write through
//!   a store *fenced* on its election key ([`EtcdStore::fenced`]), so a
//!   deposed leader's writes are refused ([`StoreError::Fenced`]) even
//!   before it notices.
//!
//! Secrets are stored as they are (like kube-apiserver without an
//! encryption config): protect etcd with TLS client certificates.

mod client;
pub mod election;
mod store;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

pub use election::Election;
pub use store::{EtcdStore, Fence};

use crate::api::Resource;
use crate::store::Key;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` (or `https://` with TLS).
    pub endpoints: Vec<String>,
    /// Every key starts with this (no trailing `/`); several clusters can
    /// share one etcd with different prefixes.
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How long one operation (with its retries) may take.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: normalize_prefix(prefix),
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(5),
        }
    }

    pub(crate) fn tls(&self) -> bool {
        self.ca_file.is_some() || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

/// `/herd`, `herd/` and `/herd/` all become `/herd`.
fn normalize_prefix(p: &str) -> String {
    let t = p.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("/{t}")
    }
}

/// Endpoints of a `--datastore` URL: `etcd://h1:2379,h2:2379` (scheme
/// `https` when `tls`), or a comma list of `http(s)://host:port`.
pub fn parse_url(url: &str, tls: bool) -> Result<Vec<String>, String> {
    let scheme = if tls { "https" } else { "http" };
    let list = match url.strip_prefix("etcd://") {
        Some(rest) => rest
            .split(',')
            .map(|h| format!("{scheme}://{}", h.trim().trim_end_matches('/')))
            .collect::<Vec<_>>(),
        None => url
            .split(',')
            .map(|h| h.trim().trim_end_matches('/').to_string())
            .collect(),
    };
    if list.is_empty() {
        return Err(format!("--datastore {url:?}: no endpoints"));
    }
    for e in &list {
        let Some(hostport) = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
        else {
            return Err(format!(
                "--datastore {url:?}: {e:?} is not etcd://host:port[,host:port...] or http(s)://host:port"
            ));
        };
        let port_ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok || hostport.contains('/') {
            return Err(format!(
                "--datastore {url:?}: endpoint {e:?} needs host:port (etcd's client port, usually 2379)"
            ));
        }
    }
    Ok(list)
}

/// The datastore flags shared by `herd agent` and `herd datastore`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatastoreArgs {
    /// An etcd v3 cluster instead of the embedded store:
    /// `etcd://host1:2379,host2:2379` (or `https://host1:2379,...`).
    #[arg(long, value_name = "URL", env = "HERD_DATASTORE")]
    pub datastore: Option<String>,
    /// Key prefix in etcd (several herd clusters can share one etcd).
    #[arg(long, default_value = "/herd")]
    pub datastore_prefix: String,
    /// CA bundle that signed etcd's serving certificates (enables TLS).
    #[arg(long, value_name = "FILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd (with --datastore-keyfile).
    #[arg(long, value_name = "FILE", requires = "datastore_keyfile")]
    pub datastore_certfile: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "datastore_certfile")]
    pub datastore_keyfile: Option<PathBuf>,
}

impl DatastoreArgs {
    /// The etcd configuration, `None` for the embedded store.
    pub fn etcd(&self) -> Result<Option<EtcdConfig>, String> {
        let Some(url) = &self.datastore else {
            if self.datastore_cafile.is_some() || self.datastore_certfile.is_some() {
                return Err("--datastore-cafile/--datastore-certfile need --datastore".into());
            }
            return Ok(None);
        };
        let tls = self.datastore_cafile.is_some() || self.datastore_certfile.is_some();
        let endpoints = parse_url(url, tls)?;
        for f in [
            &self.datastore_cafile,
            &self.datastore_certfile,
            &self.datastore_keyfile,
        ]
        .into_iter()
        .flatten()
        {
            if !f.is_file() {
                return Err(format!("{}: no such file", f.display()));
            }
        }
        let mut cfg = EtcdConfig::new(endpoints, &self.datastore_prefix);
        cfg.ca_file = self.datastore_cafile.clone();
        cfg.cert_file = self.datastore_certfile.clone();
        cfg.key_file = self.datastore_keyfile.clone();
        Ok(Some(cfg))
    }
}

/// The key range of one resource (in one namespace, or all), ending in `/`.
pub(crate) fn range_prefix(prefix: &str, resource: Resource, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if resource.namespaced() => format!("{prefix}/{}/{ns}/", resource.plural()),
        _ => format!("{prefix}/{}/", resource.plural()),
    }
}

/// An object's key.
pub(crate) fn object_key(prefix: &str, key: &Key) -> String {
    match &key.namespace {
        Some(ns) => format!("{prefix}/{}/{ns}/{}", key.resource.plural(), key.name),
        None => format!("{prefix}/{}/{}", key.resource.plural(), key.name),
    }
}

/// The `Key` of an etcd key under `prefix`, if it is one of herd's.
pub(crate) fn parse_key(prefix: &str, raw: &[u8]) -> Option<Key> {
    let s = std::str::from_utf8(raw).ok()?;
    let rest = s.strip_prefix(prefix)?.strip_prefix('/')?;
    let (plural, rest) = rest.split_once('/')?;
    let resource = Resource::from_plural(plural)?;
    if resource.namespaced() {
        let (ns, name) = rest.split_once('/')?;
        (!name.contains('/')).then(|| Key::namespaced(resource, ns, name))
    } else {
        (!rest.contains('/')).then(|| Key::cluster(resource, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_endpoints() {
        assert_eq!(
            parse_url("etcd://10.0.0.1:2379,10.0.0.2:2379", false).unwrap_or_default(),
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(
            parse_url("etcd://e1:2379", true).unwrap_or_default(),
            vec!["https://e1:2379"]
        );
        assert_eq!(
            parse_url("https://e1:2379,https://e2:2379", false).unwrap_or_default(),
            vec!["https://e1:2379", "https://e2:2379"]
        );
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://host:x",
            "redis://h:1",
            "h:2379",
            "etcd://h:2379/path",
        ] {
            assert!(parse_url(bad, false).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        for k in [
            Key::namespaced(Resource::Pods, "default", "web-1"),
            Key::cluster(Resource::Nodes, "n1"),
            Key::cluster(Resource::Namespaces, "kube-system"),
        ] {
            let raw = object_key("/herd", &k);
            assert_eq!(parse_key("/herd", raw.as_bytes()), Some(k.clone()));
            assert!(raw.starts_with(&range_prefix("/herd", k.resource, None)));
        }
        assert_eq!(parse_key("/herd", b"/herd/pods/only-ns"), None);
        assert_eq!(parse_key("/herd", b"/herd/unknown/a/b"), None);
        assert_eq!(parse_key("/herd", b"/other/pods/a/b"), None);
        assert_eq!(parse_key("/herd", b"/herd-2/pods/a/b"), None);
        assert_eq!(normalize_prefix("herd/"), "/herd");
        assert_eq!(normalize_prefix("/"), "");
    }
}
