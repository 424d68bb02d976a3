//! The measures, the same for both sides ([`Side`]): creates/s with 1 and
//! N concurrent writers (each on its own keep-alive connection), GET one,
//! LIST all, LIST limit=500 (first page), sequential updates, and watch
//! latency (an update, then the time until the watcher holds its event).
//!
//! Every measure is timed on the client around one complete request:
//! send, server work, and reading the whole response body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::client::Conn;

/// A store under test, reached over HTTP/1.1 + JSON.
pub trait Side: Send + Sync + 'static {
    fn conn(&self) -> impl Future<Output = Result<Conn>> + Send;
    /// Creates object `i`.
    fn create(&self, c: &mut Conn, i: usize) -> impl Future<Output = Result<()>> + Send;
    fn get(&self, c: &mut Conn, i: usize) -> impl Future<Output = Result<Bytes>> + Send;
    /// Lists all objects, or the first page of `limit`.
    fn list(
        &self,
        c: &mut Conn,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<Bytes>> + Send;
    /// How many objects a [`Side::list`] answer holds.
    fn count(&self, body: &[u8]) -> Result<usize>;
    /// Replaces object `i`, marking it with `seq`.
    fn update(&self, c: &mut Conn, i: usize, seq: usize)
    -> impl Future<Output = Result<()>> + Send;
    /// A watch of all objects from now on.
    fn watch(
        &self,
    ) -> impl Future<Output = Result<mpsc::UnboundedReceiver<(Instant, Value)>>> + Send;
    /// Whether watch message `v` carries update `seq` of object `i`.
    fn is_event(&self, v: &Value, i: usize, seq: usize) -> bool;
    /// The serving process (node 0's agent, the etcd member talked to).
    fn pid(&self) -> u32;
}

/// VmRSS of `pid` in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub objects: usize,
    /// Objects created by the single writer (the rest by `writers`).
    pub serial: usize,
    pub writers: usize,
    pub get_samples: usize,
    pub list_samples: usize,
    pub update_samples: usize,
    pub watch_samples: usize,
}

/// Latency samples of one measure.
#[derive(Clone, Debug, Default)]
pub struct Lat(pub Vec<Duration>);

impl Lat {
    pub fn pct(&self, q: f64) -> Option<Duration> {
        let mut s = self.0.clone();
        s.sort();
        let last = s.len().checked_sub(1)?;
        s.get(((last as f64) * q).round() as usize).copied()
    }
}

/// One side's results.
#[derive(Clone, Debug, Default)]
pub struct Results {
    pub creates_serial: f64,
    pub creates_concurrent: f64,
    pub get: Lat,
    pub list: Lat,
    pub list_bytes: usize,
    pub page: Lat,
    pub update: Lat,
    /// Event arrival after the update's response returned (0 when the
    /// event came first).
    pub watch_after_return: Lat,
    /// Event arrival after the update was sent.
    pub watch_after_send: Lat,
    /// The serving process's RSS (KiB) after each phase.
    pub rss: Vec<(&'static str, u64)>,
}

/// xorshift64*: reproducible, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

async fn timed<T>(lat: &mut Lat, f: impl Future<Output = Result<T>>) -> Result<T> {
    let t0 = Instant::now();
    let v = f.await?;
    lat.0.push(t0.elapsed());
    Ok(v)
}

/// Creates objects `from..to` with `writers` tasks; returns objects/s.
async fn create_all<S: Side>(side: &Arc<S>, from: usize, to: usize, writers: usize) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(from));
    let t0 = Instant::now();
    let mut tasks = vec![];
    for _ in 0..writers.max(1) {
        let (side, next) = (side.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = side.conn().await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return anyhow::Ok(());
                }
                side.create(&mut c, i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((to - from) as f64 / t0.elapsed().as_secs_f64())
}

/// Fills the store with `plan.objects` objects (the write benchmark).
pub async fn fill<S: Side>(side: &Arc<S>, plan: &Plan, r: &mut Results) -> Result<()> {
    r.rss.push(("start", rss_kib(side.pid())));
    let serial = plan.serial.min(plan.objects);
    r.creates_serial = create_all(side, 0, serial, 1).await?;
    r.creates_concurrent = create_all(side, serial, plan.objects, plan.writers).await?;
    r.rss.push(("creates", rss_kib(side.pid())));
    Ok(())
}

/// The read, update and watch measures on a filled store.
pub async fn reads<S: Side>(side: &Arc<S>, plan: &Plan, r: &mut Results) -> Result<()> {
    let n = plan.objects;
    let mut rng = Rng::new(0x5eed);
    let mut c = side.conn().await?;
    for _ in 0..plan.get_samples {
        let i = rng.below(n);
        timed(&mut r.get, side.get(&mut c, i)).await?;
    }
    r.rss.push(("GETs", rss_kib(side.pid())));
    for k in 0..plan.list_samples {
        let body = timed(&mut r.list, side.list(&mut c, None)).await?;
        if k == 0 {
            let got = side.count(&body)?;
            ensure!(got == n, "list holds {got} objects, expected {n}");
            r.list_bytes = body.len();
        }
    }
    r.rss.push(("LISTs", rss_kib(side.pid())));
    for k in 0..plan.list_samples {
        let body = timed(&mut r.page, side.list(&mut c, Some(500))).await?;
        if k == 0 {
            let got = side.count(&body)?;
            ensure!(got == n.min(500), "page holds {got} objects");
        }
    }
    r.rss.push(("pages", rss_kib(side.pid())));
    let mut seq = 0;
    for _ in 0..plan.update_samples {
        seq += 1;
        timed(&mut r.update, side.update(&mut c, rng.below(n), seq)).await?;
    }
    r.rss.push(("updates", rss_kib(side.pid())));
    let mut events = side.watch().await?;
    for _ in 0..plan.watch_samples {
        seq += 1;
        let i = rng.below(n);
        let sent = Instant::now();
        side.update(&mut c, i, seq).await?;
        let returned = Instant::now();
        let deadline = sent + Duration::from_secs(10);
        let at = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, events.recv())
                .await
                .with_context(|| format!("no watch event for update {seq} of object {i}"))?;
            let Some((at, v)) = msg else {
                bail!("watch ended before update {seq} of object {i}");
            };
            if side.is_event(&v, i, seq) {
                break at;
            }
        };
        r.watch_after_return
            .0
            .push(at.saturating_duration_since(returned));
        r.watch_after_send
            .0
            .push(at.saturating_duration_since(sent));
    }
    r.rss.push(("watch", rss_kib(side.pid())));
    Ok(())
}
