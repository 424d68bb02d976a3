//! The `Join` service: admits a node that knows the join secret by issuing
//! it a certificate and handing it the cluster key and member list.
//!
//! A wrong secret gets `Unauthenticated` and no material. Failures are
//! logged with the remote address and counted per source IP; an IP that
//! reaches the limit within the window gets `ResourceExhausted` (secret
//! not even checked) until the window ends. The failure table is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_proto::v1::{JoinRequest, JoinResponse, join_server::Join};
use tonic::{Request, Response, Status};

use crate::cluster::pki::{ClusterSecrets, validate_node_name};

/// Peer addresses ("ip:port") of the current members, asked at each join.
pub type MemberList = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Most addresses a joining node may claim (each becomes an IP SAN).
const MAX_ADDRESSES: usize = 16;
/// Most source IPs remembered by the failure limiter.
const MAX_TRACKED: usize = 4096;

/// Limits on failed join attempts.
#[derive(Debug, Clone, Copy)]
pub struct JoinLimits {
    /// Failures allowed from one IP within `window`.
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for JoinLimits {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Serves `herd.v1.Join` on a node that holds the cluster secrets.
pub struct JoinService {
    secrets: Arc<ClusterSecrets>,
    members: MemberList,
    limits: JoinLimits,
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

impl std::fmt::Debug for JoinService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinService")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl JoinService {
    pub fn new(secrets: Arc<ClusterSecrets>, members: MemberList) -> Self {
        Self {
            secrets,
            members,
            limits: JoinLimits::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_limits(mut self, limits: JoinLimits) -> Self {
        self.limits = limits;
        self
    }

    fn blocked(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let Ok(failures) = self.failures.lock() else {
            return false;
        };
        failures.get(&ip).is_some_and(|(count, since)| {
            now.duration_since(*since) < self.limits.window && *count >= self.limits.max_failures
        })
    }

    fn record_failure(&self, ip: Option<IpAddr>, now: Instant) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 0;
        };
        if failures.len() >= MAX_TRACKED {
            let window = self.limits.window;
            failures.retain(|_, (_, since)| now.duration_since(*since) < window);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.limits.window {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0
    }
}

#[tonic::async_trait]
impl Join for JoinService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let remote = request.remote_addr();
        let ip = remote.map(|a| a.ip());
        let now = Instant::now();
        if self.blocked(ip, now) {
            tracing::warn!(?remote, "join refused: too many failed attempts");
            return Err(Status::resource_exhausted(
                "too many failed join attempts, retry later",
            ));
        }
        let msg = request.into_inner();
        if !self.secrets.join_token().secret_matches(&msg.secret) {
            let count = self.record_failure(ip, now);
            tracing::warn!(?remote, node = %msg.node_name.escape_debug(), failures = count, "join refused: wrong token secret");
            return Err(Status::unauthenticated("invalid join token"));
        }
        validate_node_name(&msg.node_name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if msg.addresses.len() > MAX_ADDRESSES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ADDRESSES} node addresses"
            )));
        }
        let ips = msg
            .addresses
            .iter()
            .map(|a| {
                a.parse::<IpAddr>().map_err(|_| {
                    Status::invalid_argument(format!(
                        "node address {:?} is not an IP address",
                        a.escape_debug().to_string()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cert = self
            .secrets
            .ca()
            .issue_node_cert(&msg.node_name, &ips, &[])
            .map_err(|e| {
                tracing::error!(error = %e, node = %msg.node_name, "issuing a node certificate failed");
                Status::internal("issuing the node certificate failed")
            })?;
        tracing::info!(?remote, node = %msg.node_name, ?ips, "node joined");
        Ok(Response::new(JoinResponse {
            ca_cert_pem: self.secrets.ca().cert_pem().to_owned(),
            node_cert_pem: cert.cert_pem().to_owned(),
            node_key_pem: cert.key_pem().to_owned(),
            cluster_key: self.secrets.cluster_key().to_vec(),
            members: (self.members)(),
            ca_key_pem: self.secrets.ca().key_pem(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(limits: JoinLimits) -> JoinService {
        let secrets = Arc::new(ClusterSecrets::create("t").unwrap());
        JoinService::new(secrets, Arc::new(Vec::<String>::new)).with_limits(limits)
    }

    #[test]
    fn limiter_blocks_after_max_failures_and_forgets_after_window() {
        let svc = service(JoinLimits {
            max_failures: 2,
            window: Duration::from_secs(10),
        });
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let other = Some(IpAddr::from([127, 0, 0, 2]));
        let t0 = Instant::now();
        assert!(!svc.blocked(ip, t0));
        svc.record_failure(ip, t0);
        assert!(!svc.blocked(ip, t0));
        svc.record_failure(ip, t0);
        assert!(svc.blocked(ip, t0));
        assert!(!svc.blocked(other, t0));
        assert!(!svc.blocked(ip, t0 + Duration::from_secs(11)));
        assert_eq!(svc.record_failure(ip, t0 + Duration::from_secs(11)), 1);
    }
}
