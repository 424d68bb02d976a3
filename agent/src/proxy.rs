//! The node's Service proxy (kube-proxy's job): Services and their
//! Endpoints from the store, turned into [`ServiceSpec`]s and applied with
//! [`ServiceProxy`] (one nftables table, incremental transactions).
//!
//! - Every node runs it on its own replica; a change to any Service or
//!   Endpoints object triggers a sync after a short debounce (bursts of
//!   endpoint changes become one transaction); a full resync runs every
//!   [`RESYNC`] as well, and after any failure.
//! - Only Services with a ClusterIP (not `None`, not ExternalName) and at
//!   least one port are programmed; ports are matched to Endpoints ports by
//!   name (the Endpoints controller copies the Service port names), ready
//!   addresses only. A Service whose spec the proxy refuses (e.g. an IPv6
//!   ClusterIP) is skipped with a log line; the others still apply.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use herd_net::{Protocol, ProxyConfig, ServicePort, ServiceProxy, ServiceSpec};
use serde_json::Value;
use tokio::sync::watch;

use crate::api::Resource;
use crate::store::Datastore;

/// Full resync period.
pub const RESYNC: Duration = Duration::from_secs(30);
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The proxy's view of one Service: `None` when it is not programmed.
pub fn service_spec(svc: &Value, endpoints: Option<&Value>) -> Option<ServiceSpec> {
    let spec = svc.get("spec")?;
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return None;
    }
    let cluster_ip: Ipv4Addr = spec.get("clusterIP")?.as_str()?.parse().ok()?;
    let meta = svc.get("metadata")?;
    let namespace = meta.get("namespace")?.as_str()?.to_string();
    let name = meta.get("name")?.as_str()?.to_string();
    // Endpoints: port name -> ready ip:port.
    let mut by_name: HashMap<String, Vec<SocketAddrV4>> = HashMap::new();
    for subset in endpoints
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ips: Vec<Ipv4Addr> = subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("ip")?.as_str()?.parse().ok())
            .collect();
        for p in subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let pname = p.get("name").and_then(Value::as_str).unwrap_or("");
            let Some(port) = p.get("port").and_then(Value::as_u64) else {
                continue;
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let list = by_name.entry(pname.to_string()).or_default();
            for ip in &ips {
                let ep = SocketAddrV4::new(*ip, port);
                if !list.contains(&ep) {
                    list.push(ep);
                }
            }
        }
    }
    let mut ports = Vec::new();
    for p in spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let protocol = Protocol::parse(
            &p.get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_ascii_lowercase(),
        )?;
        let port = u16::try_from(p.get("port")?.as_u64()?).ok()?;
        let node_port = p
            .get("nodePort")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0);
        let pname = p.get("name").and_then(Value::as_str).unwrap_or("");
        let mut endpoints = by_name.get(pname).cloned().unwrap_or_default();
        endpoints.sort();
        ports.push(ServicePort {
            protocol,
            port,
            node_port,
            endpoints,
        });
    }
    if ports.is_empty() {
        return None;
    }
    let affinity =
        (spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP")).then(|| {
            let secs = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10_800);
            Duration::from_secs(secs.clamp(1, 86_400))
        });
    Some(ServiceSpec {
        namespace,
        name,
        cluster_ip,
        ports,
        affinity,
    })
}

/// Every programmable Service in the store, each validated alone (a bad
/// one is skipped and logged).
pub fn desired(store: &dyn Datastore) -> Result<Vec<ServiceSpec>, crate::store::StoreError> {
    let (services, _) = store.list(Resource::Services, None)?;
    let (endpoints, _) = store.list(Resource::Endpoints, None)?;
    let key = |o: &Value| {
        (
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    let eps: HashMap<(String, String), &Value> = endpoints.iter().map(|e| (key(e), e)).collect();
    let mut out = Vec::new();
    for s in &services {
        let Some(spec) = service_spec(s, eps.get(&key(s)).copied()) else {
            continue;
        };
        match spec.validate() {
            Ok(()) => out.push(spec),
            Err(e) => tracing::warn!(service = %spec.key(), error = %e, "service not programmed"),
        }
    }
    Ok(out)
}

/// Keeps the node's nftables Services equal to the store until `stop`.
pub async fn run(store: Arc<dyn Datastore>, cfg: ProxyConfig, mut stop: watch::Receiver<bool>) {
    let proxy = match ServiceProxy::new(None, cfg) {
        Ok(p) => Arc::new(std::sync::Mutex::new(p)),
        Err(e) => {
            tracing::error!(error = %e, "service proxy disabled");
            return;
        }
    };
    loop {
        let watches = (
            store.watch(Resource::Services, None, None),
            store.watch(Resource::Endpoints, None, None),
        );
        let (Ok(mut svc_w), Ok(mut ep_w)) = watches else {
            tracing::warn!("service proxy: cannot watch the store; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut failed = false;
        loop {
            let (s, p) = (store.clone(), proxy.clone());
            let r = tokio::task::spawn_blocking(move || {
                let specs = desired(&*s).map_err(|e| e.to_string())?;
                let mut proxy = p.lock().map_err(|_| "proxy lock poisoned".to_string())?;
                proxy
                    .sync(&specs)
                    .map(|st| (specs.len(), st))
                    .map_err(|e| e.to_string())
            })
            .await;
            match r {
                Ok(Ok((n, st))) if !st.is_noop() => {
                    tracing::debug!(services = n, stats = ?st, "services synced");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "service sync failed; retrying");
                    failed = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service sync task");
                    failed = true;
                }
            }
            let wait = if failed {
                Duration::from_secs(1)
            } else {
                RESYNC
            };
            failed = false;
            let mut expired = false;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = svc_w.next() => expired = r.is_err(),
                r = ep_w.next() => expired = r.is_err(),
                _ = tokio::time::sleep(wait) => {}
            }
            if expired {
                break;
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_match_endpoints_by_name_and_skip_headless() {
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}});
        let eps = json!({"subsets": [
            {"addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.7"}],
             "notReadyAddresses": [{"ip": "10.244.3.9"}],
             "ports": [{"name": "http", "port": 8080}]}]});
        let s = service_spec(&svc, Some(&eps)).unwrap();
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(
            s.ports[0].endpoints,
            vec![
                "10.244.1.5:8080".parse().unwrap(),
                "10.244.2.7:8080".parse().unwrap()
            ]
        );
        assert!(s.ports[1].endpoints.is_empty());
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.affinity, Some(Duration::from_secs(10_800)));
        let headless = json!({"metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        assert!(service_spec(&headless, None).is_none());
    }
}
