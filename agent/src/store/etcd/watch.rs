//! One `Datastore` watch = one etcd watch on the resource's key range,
//! driven by a task on the store's runtime.
//!
//! The task delivers events in revision order and remembers the next
//! revision it needs. When the stream breaks (member restart, etcd leader
//! change, connection reset) it opens a new etcd watch from that revision:
//! nothing is lost or repeated. When etcd says the revision was compacted
//! the stream ends with `Expired`. It stops when the consumer drops the
//! stream.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType as EtcdEvent, WatchOptions};
use tokio::sync::mpsc;

use super::client::Conn;
use super::parse_key;
use super::store::Inner;
use crate::api::Resource;
use crate::store::{EventType, StoreError, WatchEvent, WatchStream};

/// Events buffered between the task and a slow consumer (etcd's stream
/// applies flow control beyond that).
const BUFFER: usize = 256;

/// Opens the etcd watch from `start` and waits until etcd has registered
/// it (its `created` answer): once this returns, a compaction can no longer
/// overtake the watch's start. A start etcd already compacted is `Expired`.
pub(super) async fn open(
    conn: &Conn,
    prefix: &str,
    start: i64,
) -> Result<etcd_client::WatchStream, StoreError> {
    let p = prefix.to_string();
    let (stream, first) = conn
        .retry(false, move |c| open_once(c, p.clone(), start))
        .await?;
    if first.compact_revision() > 0 || first.canceled() {
        return Err(StoreError::Expired {
            requested: u64::try_from(start - 1).unwrap_or(0),
            oldest: u64::try_from(first.compact_revision()).unwrap_or(0),
        });
    }
    Ok(stream)
}

async fn open_once(
    mut client: etcd_client::Client,
    prefix: String,
    start: i64,
) -> Result<(etcd_client::WatchStream, etcd_client::WatchResponse), etcd_client::Error> {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(start);
    let mut stream = client.watch(prefix, Some(opts)).await?;
    match stream.message().await? {
        Some(first) => Ok((stream, first)),
        None => Err(etcd_client::Error::WatchError(
            "the watch stream closed before etcd created the watch".into(),
        )),
    }
}

/// Runs the watch whose first etcd stream `first` was opened from `start`.
pub(super) fn start(
    inner: Arc<Inner>,
    prefix: String,
    resource: Resource,
    start: i64,
    first: etcd_client::WatchStream,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    inner
        .handle
        .spawn(run(inner.clone(), prefix, resource, start, first, tx));
    WatchStream::from_channel(rx)
}

type Tx = mpsc::Sender<Result<WatchEvent, StoreError>>;

async fn run(
    inner: Arc<Inner>,
    prefix: String,
    resource: Resource,
    mut next: i64,
    first: etcd_client::WatchStream,
    tx: Tx,
) {
    let mut pause = Duration::from_millis(50);
    let mut first = Some(first);
    loop {
        let opened = match first.take() {
            Some(s) => Ok(s),
            None => {
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_start_revision(next);
                let mut client = inner.conn.long.clone();
                tokio::select! {
                    _ = tx.closed() => return,
                    r = client.watch(prefix.clone(), Some(opts)) => r,
                }
            }
        };
        // Events below this were delivered by the previous stream.
        let floor = next;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, %prefix, "etcd watch: reconnecting");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => return,
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            pause = Duration::from_millis(50);
            if resp.compact_revision() > 0 {
                let _ = tx
                    .send(Err(StoreError::Expired {
                        requested: u64::try_from(next - 1).unwrap_or(0),
                        oldest: u64::try_from(resp.compact_revision()).unwrap_or(0),
                    }))
                    .await;
                return;
            }
            if resp.canceled() {
                // Canceled for another reason (e.g. the member is
                // shutting down): open it again.
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let rev = kv.mod_revision();
                if rev < floor {
                    continue;
                }
                next = rev + 1;
                let Some(key) = parse_key(&inner.prefix, kv.key()) else {
                    continue;
                };
                if key.resource != resource {
                    continue;
                }
                let item = match ev.event_type() {
                    EtcdEvent::Put => super::store::decode_kv(kv, None).map(|object| WatchEvent {
                        kind: if kv.create_revision() == kv.mod_revision() {
                            EventType::Added
                        } else {
                            EventType::Modified
                        },
                        key,
                        object,
                        resource_version: u64::try_from(rev).unwrap_or(0),
                    }),
                    EtcdEvent::Delete => match ev.prev_kv() {
                        Some(prev) => {
                            super::store::decode_kv(prev, Some(rev)).map(|object| WatchEvent {
                                kind: EventType::Deleted,
                                key,
                                object,
                                resource_version: u64::try_from(rev).unwrap_or(0),
                            })
                        }
                        // No previous value (compacted away): the key alone.
                        None => Ok(WatchEvent {
                            kind: EventType::Deleted,
                            object: serde_json::json!({"metadata": {
                                "name": key.name,
                                "namespace": key.namespace,
                                "resourceVersion": rev.to_string(),
                            }}),
                            key,
                            resource_version: u64::try_from(rev).unwrap_or(0),
                        }),
                    },
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        }
        tracing::debug!(%prefix, next, "etcd watch stream ended; resuming");
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
