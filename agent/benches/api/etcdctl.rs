//! The second etcd baseline: `etcdctl` (v3 API over gRPC), one process per
//! operation, so each sample also pays process start, gRPC dial and
//! teardown. Only meaningful as "what a shell script would see".

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Result, bail};
use bytes::Bytes;

use crate::etcd::key;
use crate::measure::{Lat, Rng};

/// Per-op latencies of `etcdctl get KEY`, `get --prefix --limit 500` and
/// `put KEY VALUE`.
#[derive(Clone, Debug, Default)]
pub struct Etcdctl {
    pub get: Lat,
    pub page: Lat,
    pub put: Lat,
}

fn run(lat: &mut Lat, endpoint: &str, args: &[&str]) -> Result<()> {
    let t0 = Instant::now();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    lat.0.push(t0.elapsed());
    if !out.status.success() {
        bail!(
            "etcdctl {}: {}: {}",
            args.first().copied().unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn measure(endpoint: &str, values: &[Bytes], n: usize, samples: usize) -> Result<Etcdctl> {
    let mut r = Etcdctl::default();
    let mut rng = Rng::new(11);
    for _ in 0..samples {
        run(&mut r.get, endpoint, &["get", &key(rng.below(n))])?;
    }
    for _ in 0..samples {
        let args = ["get", "--prefix", "--limit=500", "/registry/pods/bench/"];
        run(&mut r.page, endpoint, &args)?;
    }
    for _ in 0..samples {
        let i = rng.below(n);
        let value = String::from_utf8_lossy(values.get(i).map(|b| &b[..]).unwrap_or_default());
        run(&mut r.put, endpoint, &["put", &key(i), &value])?;
    }
    Ok(r)
}
