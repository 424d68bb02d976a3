//! The raw etcd side: a member of a 3-member Debian `etcd` cluster
//! ([`herd_integration::etcd::EtcdCluster`] on 127.0.0.1), driven through
//! its v3 gRPC-gateway JSON API (`POST /v3/kv/range|put`, `/v3/watch`) with
//! the same values herd stored, under `/registry/pods/bench/pod-NNNNN` as
//! Kubernetes lays them out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::{Conn, Target};
use crate::herd::{NAMESPACE, pod_name};
use crate::measure::Side;

pub fn key(i: usize) -> String {
    format!("/registry/pods/{NAMESPACE}/{}", pod_name(i))
}

const PREFIX: &str = "/registry/pods/bench/";
/// The end of the prefix range: its last byte plus one.
const PREFIX_END: &str = "/registry/pods/bench0";

/// One etcd member's gateway, with herd's stored values.
pub struct Etcd {
    pub target: Target,
    pub pid: u32,
    pub values: Arc<Vec<Bytes>>,
    /// Range reads with `serializable` (local, no ReadIndex round).
    pub serializable: bool,
}

impl Etcd {
    async fn put(&self, c: &mut Conn, i: usize) -> Result<()> {
        let value = self.values.get(i).context("no value")?;
        let body = json!({"key": B64.encode(key(i)), "value": B64.encode(value)});
        c.call("POST", "/v3/kv/put", Some(body.to_string().into()))
            .await?;
        Ok(())
    }
}

impl Side for Etcd {
    async fn conn(&self) -> Result<Conn> {
        Conn::open(&self.target).await
    }

    async fn create(&self, c: &mut Conn, i: usize) -> Result<()> {
        self.put(c, i).await
    }

    async fn get(&self, c: &mut Conn, i: usize) -> Result<Bytes> {
        let body = json!({"key": B64.encode(key(i)), "serializable": self.serializable});
        c.call("POST", "/v3/kv/range", Some(body.to_string().into()))
            .await
    }

    async fn list(&self, c: &mut Conn, limit: Option<usize>) -> Result<Bytes> {
        let mut body = json!({"key": B64.encode(PREFIX), "range_end": B64.encode(PREFIX_END),
            "serializable": self.serializable});
        if let Some(l) = limit {
            body["limit"] = json!(l);
        }
        c.call("POST", "/v3/kv/range", Some(body.to_string().into()))
            .await
    }

    fn count(&self, body: &[u8]) -> Result<usize> {
        let v: Value = serde_json::from_slice(body)?;
        Ok(v["kvs"].as_array().map(Vec::len).unwrap_or(0))
    }

    async fn update(&self, c: &mut Conn, i: usize, _seq: usize) -> Result<()> {
        self.put(c, i).await
    }

    async fn watch(&self) -> Result<mpsc::UnboundedReceiver<(Instant, Value)>> {
        let c = self.conn().await?;
        let body = json!({"create_request": {"key": B64.encode(PREFIX),
            "range_end": B64.encode(PREFIX_END)}});
        let mut rx = c
            .stream("POST", "/v3/watch", Some(body.to_string().into()))
            .await?;
        // The first message confirms the watch; events follow.
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?;
        match first {
            Some((_, v)) if v["result"]["created"] == true => Ok(rx),
            other => bail!("watch not created: {other:?}"),
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn is_event(&self, v: &Value, i: usize, _seq: usize) -> bool {
        let want = B64.encode(key(i));
        v["result"]["events"]
            .as_array()
            .is_some_and(|evs| evs.iter().any(|e| e["kv"]["key"] == want.as_str()))
    }
}
