//! The herd side: pods in namespace `bench` through node 0's HTTPS API
//! (`https://127.0.0.1:6443` inside node 0's netns, client certificate
//! from `herd kubeconfig`).
//!
//! The pods name `schedulerName: bench-none`, which herd's scheduler does
//! not serve: they stay Pending and no kubelet runs them, so the store
//! holds them and nothing else touches them.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::{Conn, Target};
use crate::measure::Side;

pub const NAMESPACE: &str = "bench";

pub fn pod_name(i: usize) -> String {
    format!("pod-{i:05}")
}

/// A small realistic pod (~1.5 KB of JSON).
pub fn pod(i: usize) -> Value {
    let name = pod_name(i);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "bench-api",
                "app.kubernetes.io/component": "backend",
                "app.kubernetes.io/part-of": "herd-bench",
                "tier": "backend",
                "shard": format!("{}", i % 16),
            },
            "annotations": {"bench.herd.dev/purpose": "api latency benchmark, never scheduled"},
        },
        "spec": {
            "schedulerName": "bench-none",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "app",
                "image": "registry.example.com/bench/backend:1.27.3",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/usr/local/bin/backend", "--listen=:8080", "--metrics=:9090",
                    "--log-level=info", "--cache-size=256Mi"],
                "env": [
                    {"name": "POD_INDEX", "value": format!("{i}")},
                    {"name": "DATABASE_URL", "value": "postgres://bench@db.bench.svc:5432/bench"},
                    {"name": "CACHE_TTL_SECONDS", "value": "300"},
                    {"name": "FEATURE_FLAGS", "value": "fast-path,compression,tracing"},
                    {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel.observability:4317"},
                ],
                "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": 8080},
                    "periodSeconds": 10,
                },
            }],
        },
    })
}

/// node 0's API; remembers the stored version of every pod (what etcd is
/// then filled with, and what updates start from).
pub struct Herd {
    pub target: Target,
    pub pid: u32,
    pub stored: Mutex<Vec<Bytes>>,
}

impl Herd {
    pub fn new(target: Target, pid: u32, objects: usize) -> Self {
        Herd {
            target,
            pid,
            stored: Mutex::new(vec![Bytes::new(); objects]),
        }
    }

    fn keep(&self, i: usize, body: Bytes) {
        if let Ok(mut s) = self.stored.lock()
            && let Some(slot) = s.get_mut(i)
        {
            *slot = body;
        }
    }

    pub async fn create_namespace(&self) -> Result<()> {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        let mut c = self.conn().await?;
        c.call("POST", "/api/v1/namespaces", Some(ns.to_string().into()))
            .await?;
        Ok(())
    }
}

fn pods_path() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/pods")
}

impl Side for Herd {
    async fn conn(&self) -> Result<Conn> {
        Conn::open(&self.target).await
    }

    async fn create(&self, c: &mut Conn, i: usize) -> Result<()> {
        let body = c
            .call("POST", &pods_path(), Some(pod(i).to_string().into()))
            .await?;
        self.keep(i, body);
        Ok(())
    }

    async fn get(&self, c: &mut Conn, i: usize) -> Result<Bytes> {
        c.call("GET", &format!("{}/{}", pods_path(), pod_name(i)), None)
            .await
    }

    async fn list(&self, c: &mut Conn, limit: Option<usize>) -> Result<Bytes> {
        let path = match limit {
            Some(l) => format!("{}?limit={l}", pods_path()),
            None => pods_path(),
        };
        c.call("GET", &path, None).await
    }

    fn count(&self, body: &[u8]) -> Result<usize> {
        let v: Value = serde_json::from_slice(body)?;
        v["items"].as_array().map(Vec::len).context("no items")
    }

    async fn update(&self, c: &mut Conn, i: usize, seq: usize) -> Result<()> {
        let last = self
            .stored
            .lock()
            .ok()
            .and_then(|s| s.get(i).cloned())
            .context("no stored pod")?;
        let mut obj: Value = serde_json::from_slice(&last)?;
        obj["metadata"]["labels"]["bench-seq"] = json!(seq.to_string());
        let path = format!("{}/{}", pods_path(), pod_name(i));
        let body = c.call("PUT", &path, Some(obj.to_string().into())).await?;
        self.keep(i, body);
        Ok(())
    }

    async fn watch(&self) -> Result<mpsc::UnboundedReceiver<(Instant, Value)>> {
        let mut c = self.conn().await?;
        let page = c
            .call("GET", &format!("{}?limit=1", pods_path()), None)
            .await?;
        let v: Value = serde_json::from_slice(&page)?;
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .context("list without resourceVersion")?
            .to_string();
        let path = format!("{}?watch=true&resourceVersion={rv}", pods_path());
        c.stream("GET", &path, None).await
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn is_event(&self, v: &Value, i: usize, seq: usize) -> bool {
        let meta = &v["object"]["metadata"];
        v["type"] == "MODIFIED"
            && meta["name"] == pod_name(i).as_str()
            && meta["labels"]["bench-seq"] == seq.to_string().as_str()
    }
}
