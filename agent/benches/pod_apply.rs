//! Pods through the whole agent (`scripts/bench-pods.sh`), same run:
//! (1) start latency from `POST /api/v1/namespaces/default/pods` over the
//! unix socket to phase Running seen on a watch (image present), one pod
//! after another (each deleted after, untimed), interleaved with raw
//! `runc run --detach` of a bundle made from herd's own config.json for the
//! same container (fresh namespaces instead of the sandbox's, rootfs
//! mounted beforehand, untimed);
//! (2) N pods POSTed at once: time until all Running, pods/s;
//! (3) agent RSS idle and with N pods running, mean per-pod monitor RSS.
//! The agent runs in its own network namespace (herd_integration::agent).
//! Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Event, arg, bench_pod, next_event, pod_watch};
use herd_integration::agent::{Agent, AgentOpts, IMAGE, pids_with_cmdline};
use serde_json::{Value, json};

/// Waits for `name` to reach (`ty`, `phase`) (phase "" = any).
fn wait_event(rx: &mpsc::Receiver<Event>, name: &str, ty: &str, phase: &str) -> Instant {
    next_event(rx, name, ty, phase)
        .unwrap_or_else(|e| panic!("waiting for {name} {ty} {phase}: {e}"))
}

fn delete(a: &Agent, rx: &mpsc::Receiver<Event>, name: &str) {
    a.delete_pod(name, Some(0)).unwrap();
    wait_event(rx, name, "DELETED", "");
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    (ms(v[v.len() / 2]), ms(v[p99]))
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP pod_apply benchmark: needs root");
        return;
    }
    let n = arg("--pods", 200);
    let burst = arg("--burst", 100);
    let a = Agent::start(env!("CARGO_BIN_EXE_herd"), "bench", AgentOpts::default()).unwrap();
    let agent_pid = a.pid().unwrap();
    let rx = pod_watch(&a).unwrap();
    // Idle: after start-up work settles.
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_kb(agent_pid);

    // A template bundle for raw runc, from herd's own warm-up pod.
    a.create(&bench_pod("warm")).unwrap();
    wait_event(&rx, "warm", "", "Running");
    let raw = RawRunc::new(&a);
    delete(&a, &rx, "warm");

    let mut herd = Vec::with_capacity(n);
    let mut raws = Vec::with_capacity(n);
    for i in 0..n {
        raws.push(raw.run(i));
        let name = format!("p{i}");
        let t0 = Instant::now();
        a.create(&bench_pod(&name)).unwrap();
        herd.push(wait_event(&rx, &name, "", "Running") - t0);
        delete(&a, &rx, &name);
    }
    let (hm, hp) = stats(herd);
    let (rm, rp) = stats(raws);

    let t0 = Instant::now();
    for i in 0..burst {
        a.create(&bench_pod(&format!("b{i}"))).unwrap();
    }
    let mut running = std::collections::HashSet::new();
    while running.len() < burst {
        let (_, name, phase, _) = rx.recv_timeout(Duration::from_secs(120)).unwrap();
        if phase == "Running" && name.starts_with('b') {
            running.insert(name);
        }
    }
    let all = t0.elapsed();
    let busy_rss = rss_kb(agent_pid);
    let run = a.run_dir().to_string_lossy().into_owned();
    let monitors: Vec<u64> = pids_with_cmdline(&["monitor", &run])
        .into_iter()
        .map(|p| rss_kb(p as u32))
        .collect();
    let monitor_mean = monitors.iter().sum::<u64>() as f64 / monitors.len().max(1) as f64;
    let monitor_exe = pids_with_cmdline(&["monitor", &run])
        .first()
        .and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for i in 0..burst {
        a.delete_pod(&format!("b{i}"), Some(0)).unwrap();
    }
    let mut gone = 0;
    while gone < burst {
        let (t, _, _, _) = rx.recv_timeout(Duration::from_secs(120)).unwrap();
        if t == "DELETED" {
            gone += 1;
        }
    }

    println!("herd pods end to end ({})", machine());
    println!();
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!("| apply → Running, {n} pods one after another: median | {hm:.1} ms | < 60 ms |");
    println!("| apply → Running: p99 | {hp:.1} ms | < 150 ms |");
    println!("| raw `runc run --detach`, same runs: median / p99 | {rm:.1} / {rp:.1} ms | |");
    println!(
        "| {burst} pods applied at once → all Running | {:.2} s ({:.1} pods/s) | < 5 s |",
        all.as_secs_f64(),
        burst as f64 / all.as_secs_f64()
    );
    println!(
        "| agent RSS idle | {:.1} MB | < 30 MB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| agent RSS with {burst} pods | {:.1} MB | |",
        busy_rss as f64 / 1024.0
    );
    println!(
        "| monitor RSS, mean of {} (`{monitor_exe}`) | {:.2} MB | < 2 MB (issue 3) |",
        monitors.len(),
        monitor_mean / 1024.0
    );
    // For profiling: run with RUST_LOG=herd_agent::kubelet=debug.
    if std::env::var_os("HERD_BENCH_AGENT_LOG").is_some() {
        eprintln!("{}", a.agent_log());
    }
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
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let runc = Command::new("runc").arg("--version").output().map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else {
        "cgroup v1/hybrid"
    };
    format!(
        "{cpu}, {cores} cores, {:.1} GiB, Linux {}, {}, {cgroup}",
        mem as f64 / 1048576.0,
        kernel.trim(),
        runc.unwrap_or_default()
    )
}

/// Raw `runc run --detach` of herd's own bundle config, for comparison.
struct RawRunc {
    dir: PathBuf,
    template: Value,
    files: HashMap<String, PathBuf>,
    store: herd_images::ImageStore,
    cgroup: String,
}

/// The first config.json under `dir` whose process runs `sleep`.
fn find_config(dir: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() && !ft.is_symlink() && !p.ends_with("rootfs") {
            if let Some(found) = find_config(&p) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|n| n == "config.json")
            && std::fs::read_to_string(&p).is_ok_and(|s| s.contains("\"sleep\""))
        {
            return Some(p);
        }
    }
    None
}

impl RawRunc {
    fn new(a: &Agent) -> RawRunc {
        let config = find_config(&a.run_dir())
            .or_else(|| find_config(&a.root()))
            .expect("no config.json of the warm-up pod under the run or root dir");
        let mut template: Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
        let dir = a.root().parent().unwrap().join("raw");
        let files_dir = dir.join("files");
        std::fs::create_dir_all(&files_dir).unwrap();
        // Copies of the sandbox's bind-mounted files (hosts, resolv.conf…).
        // The pod's own directories (its /dev/shm tmpfs) go with the pod:
        // decided here, once, a tmpfs of the same kind instead.
        let mut files = HashMap::new();
        let run_dir = a.run_dir();
        for m in template["mounts"].as_array_mut().unwrap() {
            let src = PathBuf::from(m["source"].as_str().unwrap_or(""));
            if src.is_file() {
                let copy = files_dir.join(files.len().to_string());
                std::fs::copy(&src, &copy).unwrap();
                files.insert(src.to_string_lossy().into_owned(), copy);
            } else if src.starts_with(&run_dir) {
                m["type"] = json!("tmpfs");
                m["source"] = json!("tmpfs");
                m["options"] = json!(["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"]);
            }
        }
        if let Some(ns) = template["linux"]["namespaces"].as_array_mut() {
            for n in ns.iter_mut() {
                if let Some(o) = n.as_object_mut() {
                    o.remove("path");
                }
            }
        }
        template["process"]["terminal"] = json!(false);
        let store = herd_images::ImageStore::open(&a.root().join("images")).unwrap();
        RawRunc {
            dir,
            template,
            files,
            store,
            cgroup: format!("herd-bench-raw-{}", std::process::id()),
        }
    }

    /// One timed `runc run --detach`, prepared and cleaned untimed.
    fn run(&self, i: usize) -> Duration {
        let id = format!("raw-{}-{i}", std::process::id());
        let bundle = self.dir.join(&id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        self.store.mount_rootfs(&id, IMAGE, &rootfs).unwrap();
        let mut cfg = self.template.clone();
        cfg["root"]["path"] = json!(rootfs);
        cfg["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", self.cgroup));
        for m in cfg["mounts"].as_array_mut().unwrap() {
            let src = m["source"].as_str().unwrap_or("").to_string();
            if let Some(copy) = self.files.get(&src) {
                m["source"] = json!(copy);
            }
        }
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        let state = self.dir.join("state");
        // A file, not a pipe: the detached container inherits runc's stdio.
        let err_path = self.dir.join(format!("{id}.stderr"));
        let err = std::fs::File::create(&err_path).unwrap();
        let t0 = Instant::now();
        let st = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .unwrap();
        let took = t0.elapsed();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&err_path);
        // Cleaned before any verdict, so a failed run leaves nothing.
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &id])
            .status();
        self.store.unmount_rootfs(&id).unwrap();
        let _ = std::fs::remove_dir_all(&bundle);
        assert!(st.success(), "runc run {id} failed: {stderr}");
        took
    }

    /// Removes the benchmark's cgroups (also on a panic, through Drop).
    fn cleanup(&self) {
        for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let dir = ctl.path().join(&self.cgroup);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

impl Drop for RawRunc {
    fn drop(&mut self) {
        self.cleanup();
    }
}
