//! Pod apply → Running on both runtime backends, with containerd's and
//! runc's own start as floors, in one run (`scripts/bench-pods-backends.sh`,
//! issue 8). Needs root.
//!
//! Sides, interleaved pod by pod so that load from other work on the
//! machine hits them alike:
//! - herd native: `POST …/pods` over the agent's unix socket until phase
//!   Running is seen on a pod watch (image present), then the pod is
//!   deleted (untimed) before the next;
//! - herd containerd: the same against an agent with `--runtime
//!   containerd`, on a containerd 1.6 started for the run
//!   (`herd_integration::containerd`);
//! - raw containerd: Snapshots.Prepare + Containers.Create + Tasks.Create +
//!   Tasks.Start of a `sleep 3600` busybox container through the gRPC API
//!   on a second containerd (the image imported by `ctr`), timed from the
//!   first call until Start returns;
//! - raw runc: `runc run --detach` of the same spec on an overlay rootfs
//!   mounted beforehand.
//!
//! Pods run one at a time (`--pods N`, default 100). A side that cannot
//! start (e.g. no containerd) is reported as such instead of failing the
//! others. Prints a markdown table: side, n, median, p99, total (sum of the
//! timed starts).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "pod_backends/raw.rs"]
mod raw;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use herd_integration::agent::{Agent, AgentOpts, ContainerdTarget, IMAGE};
use herd_integration::containerd::Containerd;
use herd_integration::{ImageOpts, write_oci_archive, write_oci_layout};

use common::{Event, arg, bench_pod, next_event, pod_watch};
use raw::{RawContainerd, RawRunc};

/// An agent with its pod watch.
struct Herd {
    agent: Agent,
    rx: mpsc::Receiver<Event>,
}

impl Herd {
    fn start(test: &str, opts: AgentOpts) -> Result<Herd> {
        let agent = Agent::start(env!("CARGO_BIN_EXE_herd"), test, opts)?;
        let rx = pod_watch(&agent)?;
        Ok(Herd { agent, rx })
    }

    /// Waits for `name` to reach (`ty`, `phase`) ("" = any).
    fn wait_event(&self, name: &str, ty: &str, phase: &str) -> Result<Instant> {
        next_event(&self.rx, name, ty, phase).with_context(|| {
            format!(
                "waiting for pod {name} {ty} {phase}; agent log tail:\n{}",
                herd_integration::agent::tail(&self.agent.agent_log(), 30)
            )
        })
    }

    /// One timed apply → Running; the pod is deleted after, untimed.
    fn run(&self, name: &str) -> Result<Duration> {
        let t0 = Instant::now();
        self.agent.create(&bench_pod(name))?;
        let took = self.wait_event(name, "", "Running")? - t0;
        self.agent.delete_pod(name, Some(0))?;
        self.wait_event(name, "DELETED", "")?;
        Ok(took)
    }
}

/// One side of the table: its timings, or why it did not run.
struct Side {
    name: &'static str,
    runs: Result<Vec<Duration>, String>,
}

impl Side {
    fn new<T>(name: &'static str, setup: Result<T>) -> (Side, Option<T>) {
        match setup {
            Ok(t) => (
                Side {
                    name,
                    runs: Ok(vec![]),
                },
                Some(t),
            ),
            Err(e) => {
                eprintln!("{name}: not measured: {e:#}");
                (
                    Side {
                        name,
                        runs: Err(format!("{e:#}")),
                    },
                    None,
                )
            }
        }
    }

    /// Records one run; the first failure stops the side.
    fn record(&mut self, r: Result<Duration>) {
        if let Ok(v) = &mut self.runs {
            match r {
                Ok(d) => v.push(d),
                Err(e) => {
                    eprintln!("{}: failed: {e:#}", self.name);
                    self.runs = Err(format!("{e:#}"));
                }
            }
        }
    }

    fn live(&self) -> bool {
        self.runs.is_ok()
    }

    fn row(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match &self.runs {
            Ok(v) if !v.is_empty() => {
                let mut v = v.clone();
                v.sort();
                let p99 = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
                let total: Duration = v.iter().sum();
                format!(
                    "| {} | {} | {:.1} | {:.1} | {:.2} |",
                    self.name,
                    v.len(),
                    ms(v[v.len() / 2]),
                    ms(v[p99]),
                    total.as_secs_f64()
                )
            }
            Ok(_) => format!("| {} | 0 | – | – | – |", self.name),
            Err(e) => {
                let e: String = e.chars().take(120).collect();
                format!(
                    "| {} | not measured: {} | | | |",
                    self.name,
                    e.replace('|', "/")
                )
            }
        }
    }
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP pod_backends benchmark: needs root");
        return;
    }
    let n = arg("--pods", 100);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let built = write_oci_layout(&layout, &ImageOpts::new(IMAGE)).unwrap();
    let archive = dir.path().join("busybox.oci.tar");
    write_oci_archive(&archive, &ImageOpts::new(IMAGE)).unwrap();

    // Declared before the agents that use them: dropped after them.
    let ctrd_agent = Containerd::start("bench-agent");
    let ctrd_raw = Containerd::start("bench-raw");

    let (mut native, native_herd) = Side::new(
        "herd, native backend",
        Herd::start("bnative", AgentOpts::default()),
    );
    let (mut ctrd, ctrd_herd) = Side::new(
        "herd, containerd backend",
        ctrd_agent
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|c| {
                Herd::start(
                    "bctrd",
                    AgentOpts {
                        containerd: Some(ContainerdTarget {
                            socket: c.socket.clone(),
                            namespace: c.namespace.clone(),
                        }),
                        ..Default::default()
                    },
                )
            }),
    );
    let (mut raw_ctrd, raw_ctrd_client) = Side::new(
        "raw containerd (gRPC task create + start)",
        ctrd_raw
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|c| RawContainerd::new(c, &archive, IMAGE, &built.manifest.diff_ids())),
    );
    let (mut raw_runc, raw_runc_driver) = Side::new(
        "raw `runc run --detach`",
        native_herd
            .as_ref()
            .context("needs the native agent's image store")
            .and_then(|h| {
                RawRunc::new(
                    &dir.path().join("runc"),
                    &h.agent.root().join("images"),
                    IMAGE,
                )
            }),
    );

    // Warm-up (untimed): first pod, first shim, page cache.
    if let Some(h) = &native_herd {
        native.record(h.run("warm").map(|_| Duration::ZERO));
    }
    if let Some(h) = &ctrd_herd {
        ctrd.record(h.run("warm").map(|_| Duration::ZERO));
    }
    if let Some(r) = &raw_ctrd_client {
        raw_ctrd.record(r.run(n).map(|_| Duration::ZERO));
    }
    if let Some(r) = &raw_runc_driver {
        raw_runc.record(r.run(n).map(|_| Duration::ZERO));
    }
    for side in [&mut native, &mut ctrd, &mut raw_ctrd, &mut raw_runc] {
        if let Ok(v) = &mut side.runs {
            v.clear();
        }
    }

    let load_before = load();
    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("p{i}");
        if let Some(h) = native_herd.as_ref().filter(|_| native.live()) {
            native.record(h.run(&name));
        }
        if let Some(h) = ctrd_herd.as_ref().filter(|_| ctrd.live()) {
            ctrd.record(h.run(&name));
        }
        if let Some(r) = raw_ctrd_client.as_ref().filter(|_| raw_ctrd.live()) {
            raw_ctrd.record(r.run(i));
        }
        if let Some(r) = raw_runc_driver.as_ref().filter(|_| raw_runc.live()) {
            raw_runc.record(r.run(i));
        }
    }
    let wall = t0.elapsed();
    let load_after = load();

    drop(raw_runc_driver);
    drop(raw_ctrd_client);
    drop(ctrd_herd);
    drop(native_herd);
    drop(ctrd_raw);
    drop(ctrd_agent);

    println!();
    println!(
        "pod apply → Running, {n} pods one at a time, sides interleaved ({}; containerd {}; \
         load average {load_before} before, {load_after} after; {:.0} s wall)",
        machine(),
        containerd_version(),
        wall.as_secs_f64()
    );
    println!();
    println!("| side | n | median ms | p99 ms | total s |");
    println!("|---|---|---|---|---|");
    for side in [&native, &ctrd, &raw_ctrd, &raw_runc] {
        println!("{}", side.row());
    }
}

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn containerd_version() -> String {
    std::process::Command::new(herd_integration::containerd::CONTAINERD)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_else(|_| "missing".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let runc = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}, {runc}", kernel.trim())
}
