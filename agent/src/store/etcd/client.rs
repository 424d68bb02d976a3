//! The etcd connection: the client, the runtime it runs on, and which
//! failures may be retried.
//!
//! A failure is retried (until the request timeout) only when etcd
//! certainly did not apply the request: the connection could not be made,
//! or the member had no leader to propose to. Reads are retried on any
//! unavailability. A write that failed any other way (the connection broke
//! after sending, etcd timed out waiting for the commit) may have been
//! applied: it is reported as [`StoreError::Timeout`].

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, Error as EtcdError};
use tonic::Code;

use super::EtcdConfig;
use crate::store::StoreError;

/// What a failed call means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not applied (not sent, or refused before proposing): retry.
    NotApplied,
    /// Maybe applied: a read may retry, a write may not.
    Unknown,
    /// A definite answer (bad request, compacted, ...): no retry.
    Final,
}

pub(crate) fn classify(e: &EtcdError) -> Failure {
    match e {
        EtcdError::TransportError(_) | EtcdError::IoError(_) => Failure::NotApplied,
        EtcdError::GRpcStatus(s) => {
            let msg = s.message();
            match s.code() {
                Code::Unavailable
                    if msg.contains("connect")
                        || msg.contains("no leader")
                        || msg.contains("not capable")
                        || msg.contains("dns error") =>
                {
                    Failure::NotApplied
                }
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
                | Code::Aborted => Failure::Unknown,
                _ => Failure::Final,
            }
        }
        _ => Failure::Final,
    }
}

/// `mvcc: required revision has been compacted`.
pub(crate) fn is_compacted(e: &EtcdError) -> bool {
    matches!(e, EtcdError::GRpcStatus(s) if s.message().contains("compacted"))
}

pub(crate) fn backend(endpoints: &[String], e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: format!("etcd {}", endpoints.join(",")),
        reason: e.to_string(),
    }
}

/// The client and its settings (cheap to clone: the client is a handle).
#[derive(Clone)]
pub(crate) struct Conn {
    pub client: Client,
    /// The same endpoints without a per-request timeout, for calls that
    /// block until something happens (an election campaign, observe).
    pub long: Client,
    pub endpoints: Vec<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Conn {
    /// Connects (lazily: the first request dials).
    pub async fn connect(cfg: &EtcdConfig) -> Result<Conn, StoreError> {
        let client = Conn::client(cfg, Some(cfg.request_timeout)).await?;
        let long = Conn::client(cfg, None).await?;
        Ok(Conn {
            client,
            long,
            endpoints: cfg.endpoints.clone(),
            timeout: cfg.request_timeout,
        })
    }

    async fn client(cfg: &EtcdConfig, timeout: Option<Duration>) -> Result<Client, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(t) = timeout {
            opts = opts.with_timeout(t);
        }
        if cfg.tls() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                let pem = read_file(ca).map_err(|e| backend(&cfg.endpoints, e))?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
                let cert = read_file(cert).map_err(|e| backend(&cfg.endpoints, e))?;
                let key = read_file(key).map_err(|e| backend(&cfg.endpoints, e))?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        }
        Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| backend(&cfg.endpoints, e))
    }

    /// Runs `call` until it succeeds, fails for good (a compacted revision
    /// is `Expired`, to be completed by the caller), or the request
    /// timeout passes; `write` says whether an unknown outcome may be
    /// retried (reads) or must be reported (writes).
    pub async fn retry<T, F, Fut>(&self, write: bool, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let res = tokio::time::timeout(
                left.max(Duration::from_millis(1)),
                call(self.client.clone()),
            )
            .await;
            let e = match res {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) if write => {
                    return Err(StoreError::Timeout {
                        reason: format!("etcd did not answer within {:?}", self.timeout),
                    });
                }
                Err(_) => {
                    return Err(backend(
                        &self.endpoints,
                        format!("no answer within {:?}", self.timeout),
                    ));
                }
            };
            if is_compacted(&e) {
                // The caller knows which revision it asked for.
                return Err(StoreError::Expired {
                    requested: 0,
                    oldest: 0,
                });
            }
            let kind = classify(&e);
            let retry = match kind {
                Failure::NotApplied => true,
                Failure::Unknown => !write,
                Failure::Final => false,
            };
            if !retry || Instant::now() + pause >= deadline {
                return Err(if write && kind != Failure::Final {
                    StoreError::Timeout {
                        reason: format!("etcd: {e}"),
                    }
                } else {
                    backend(&self.endpoints, e)
                });
            }
            tracing::debug!(error = %e, "etcd request failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Runs `fut` on `handle` and waits for it from any (non-runtime) thread.
pub(crate) fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| StoreError::Backend {
        path: "etcd".into(),
        reason: "the etcd client runtime stopped".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_requests_are_retried_for_writes() {
        let st = |code, msg: &str| EtcdError::GRpcStatus(tonic::Status::new(code, msg));
        assert_eq!(
            classify(&st(
                Code::Unavailable,
                "error trying to connect: tcp connect error"
            )),
            Failure::NotApplied
        );
        assert_eq!(
            classify(&st(Code::Unavailable, "etcdserver: no leader")),
            Failure::NotApplied
        );
        assert_eq!(
            classify(&st(Code::Unavailable, "transport is closing")),
            Failure::Unknown
        );
        assert_eq!(
            classify(&st(Code::DeadlineExceeded, "etcdserver: request timed out")),
            Failure::Unknown
        );
        assert_eq!(
            classify(&st(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )),
            Failure::Final
        );
        assert!(is_compacted(&st(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )));
    }
}
