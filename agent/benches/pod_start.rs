//! Pod start latency and throughput: herd's pod runtime vs raw `runc run`
//! of an equivalent bundle, in the same run (`scripts/bench-runtime.sh`).
//!
//! herd: `run_pod_sandbox` + `run_container` → the monitor reports the
//! container's pid (sandbox namespaces, pod cgroup, monitor process,
//! overlay rootfs, bundle, `runc run --detach`).
//! raw: `runc run --detach` of a bundle with the same config.json contents
//! (its own new namespaces instead of the sandbox's, the same overlay
//! rootfs prepared beforehand, untimed), stdio to /dev/null.
//! Cleanup is never timed. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_images::{ImageStore, ImportOptions};
use herd_integration::ImageOpts;
use herd_runtime::oci::{RuntimeBinary, RuntimeKind};
use herd_runtime::pod::{PodRuntime, RuntimeConfig};
use herd_runtime::types::{
    ContainerConfig, ContainerResources, LogLimits, NamespaceOptions, PodSandboxConfig,
    SecurityContext,
};

const IMAGE: &str = "herd.test/busybox:latest";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(uid: &str, c: &ContainerConfig) -> PodSandboxConfig {
    PodSandboxConfig {
        init_containers: vec![],
        uid: uid.to_string(),
        name: uid.to_string(),
        namespace: "bench".to_string(),
        hostname: uid.to_string(),
        namespaces: NamespaceOptions::default(),
        containers: vec![c.resources],
        pids_limit: Some(1024),
        shm_size_bytes: 64 << 20,
        dns: Default::default(),
        host_aliases: vec![],
        sysctls: Default::default(),
        pod_ip: None,
    }
}

fn container() -> ContainerConfig {
    ContainerConfig {
        name: "c".to_string(),
        attempt: 0,
        image: IMAGE.to_string(),
        command: vec!["sleep".into(), "3600".into()],
        args: vec![],
        working_dir: None,
        env: vec![],
        mounts: vec![],
        resources: ContainerResources {
            cpu_request_millis: Some(100),
            cpu_limit_millis: Some(200),
            memory_request_bytes: Some(32 << 20),
            memory_limit_bytes: Some(64 << 20),
        },
        security: SecurityContext::default(),
        tty: false,
        stdin: false,
        log: LogLimits::default(),
    }
}

struct Stats {
    median: f64,
    p99: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let idx = |q: f64| ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    Stats {
        median: ms(v[v.len() / 2]),
        p99: ms(v[idx(0.99)]),
    }
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP pod_start benchmark: needs root");
        return;
    }
    let n = arg("--pods", 200);
    let tp = arg("--throughput-pods", 100);
    let threads = arg("--threads", 4);
    let tmp = tempfile::Builder::new()
        .prefix("herd-bench-rt-")
        .tempdir()
        .unwrap();
    let root = tmp.path().to_path_buf();
    let layout = root.join("layout");
    herd_integration::write_oci_layout(&layout, &ImageOpts::new(IMAGE)).unwrap();
    let store = ImageStore::open(&root.join("images")).unwrap();
    store.import(&layout, &ImportOptions::default()).unwrap();
    let base = format!("herd-bench-{}", std::process::id());
    let runc = PathBuf::from("/usr/sbin/runc");
    // Like /run/herd in production: the run dir is on tmpfs.
    let run_tmp = tempfile::Builder::new()
        .prefix("herd-bench-run-")
        .tempdir_in("/dev/shm")
        .unwrap();
    // The monitor the agent would choose: `herd-monitor` next to `herd`
    // (scripts/bench-runtime.sh installs the static one) or `herd monitor`.
    let monitor =
        herd_runtime::monitor::choose_monitor(None, Path::new(env!("CARGO_BIN_EXE_herd"))).unwrap();
    println!(
        "monitor: {}{}",
        monitor.command.exe.display(),
        monitor
            .skipped
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    let cfg = RuntimeConfig {
        run_dir: run_tmp.path().to_path_buf(),
        log_dir: root.join("logs"),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        cgroup_base: base.clone(),
        runtime: RuntimeBinary {
            kind: RuntimeKind::Runc,
            path: runc.clone(),
            root: root.join("runc"),
        },
        monitor_exe: monitor.command.exe,
        monitor_args: monitor.command.args,
        node_memory_bytes: 8 << 30,
    };
    let rt = Arc::new(PodRuntime::new(cfg, store).unwrap());
    let mut c = container();
    if std::env::args().any(|a| a == "--no-limits") {
        c.resources = ContainerResources::default();
    }

    // A template config.json for the raw baseline: herd's own bundle for
    // the same container, with the sandbox namespace paths removed (runc
    // creates fresh ones) and the sandbox files replaced by copies.
    let warm = pod("warm", &c);
    rt.run_pod_sandbox(&warm).unwrap();
    let rec = rt.run_container("warm", &c).unwrap();
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.bundle.join("config.json")).unwrap()).unwrap();
    let raw_files = root.join("raw-files");
    std::fs::create_dir_all(&raw_files).unwrap();
    for f in ["hosts", "hostname", "resolv.conf"] {
        std::fs::copy(run_tmp.path().join("pods/warm").join(f), raw_files.join(f)).unwrap();
    }
    rt.remove_pod_sandbox("warm").unwrap();

    // Interleave raw and herd runs so drift affects both alike.
    let mut raw = Vec::with_capacity(n);
    let mut herd = Vec::with_capacity(n);
    let mut phases: [Vec<Duration>; 3] = Default::default();
    for i in 0..n {
        raw.push(raw_run(&rt, &runc, &root, &base, &template, &raw_files, i));
        let [total, sandbox, create, start] = herd_run(&rt, &c, &format!("b{i}"));
        herd.push(total);
        phases[0].push(sandbox);
        phases[1].push(create);
        phases[2].push(start);
    }
    let r = stats(raw);
    let h = stats(herd);
    let [ps, pc, pt] = phases.map(stats);

    // Throughput, sequential and parallel.
    let seq_herd = throughput(&rt, &c, tp, 1, "s");
    let par_herd = throughput(&rt, &c, tp, threads, "p");
    let seq_raw = raw_throughput(&rt, &runc, &root, &base, &template, &raw_files, tp, 1, 0);
    let par_raw = raw_throughput(
        &rt, &runc, &root, &base, &template, &raw_files, tp, threads, 100_000,
    );

    let _ = rt.cgroups().remove_tree();
    println!(
        "pod start, {n} pods each, interleaved (runc {}):",
        runc_version(&runc)
    );
    println!();
    println!(
        "| path | median | p99 | sequential pods/s ({tp}) | parallel pods/s ({tp}, {threads} threads) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| raw `runc run --detach` | {:.1} ms | {:.1} ms | {seq_raw:.1} | {par_raw:.1} |",
        r.median, r.p99
    );
    println!(
        "| herd pod start (sandbox + monitor + container) | {:.1} ms | {:.1} ms | {seq_herd:.1} | {par_herd:.1} |",
        h.median, h.p99
    );
    println!();
    println!(
        "herd phases (median / p99): sandbox (cgroup, namespaces, files, monitor) {:.1} / {:.1} ms; \
         container create (rootfs mount, bundle) {:.1} / {:.1} ms; start (monitor + runc) {:.1} / {:.1} ms",
        ps.median, ps.p99, pc.median, pc.p99, pt.median, pt.p99
    );
    println!(
        "herd adds {:.1} ms to the median (goal: < 15 ms)",
        h.median - r.median
    );
}

fn runc_version(runc: &Path) -> String {
    let out = Command::new(runc).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Total, sandbox, container create, container start.
fn herd_run(rt: &PodRuntime, c: &ContainerConfig, uid: &str) -> [Duration; 4] {
    let p = pod(uid, c);
    let t0 = Instant::now();
    rt.run_pod_sandbox(&p).unwrap();
    let t1 = Instant::now();
    let rec = rt.create_container(uid, c).unwrap();
    let t2 = Instant::now();
    rt.start_container(&rec).unwrap();
    let t3 = Instant::now();
    rt.remove_pod_sandbox(uid).unwrap();
    [t3 - t0, t1 - t0, t2 - t1, t3 - t2]
}

fn throughput(
    rt: &Arc<PodRuntime>,
    c: &ContainerConfig,
    n: usize,
    threads: usize,
    tag: &str,
) -> f64 {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let rt = rt.clone();
            let c = c.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                for i in (t..n).step_by(threads) {
                    let uid = format!("{tag}{i}");
                    rt.run_pod_sandbox(&pod(&uid, &c)).unwrap();
                    rt.run_container(&uid, &c).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    for uid in rt.list_pods().unwrap() {
        rt.remove_pod_sandbox(&uid).unwrap();
    }
    rate
}

/// Prepares (untimed) a bundle for raw runc and returns its dir.
fn raw_bundle(
    rt: &PodRuntime,
    root: &Path,
    base: &str,
    template: &serde_json::Value,
    files: &Path,
    i: usize,
) -> (String, PathBuf) {
    let id = format!("raw-{i}");
    let bundle = root.join("raw").join(&id);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    rt.images()
        .native()
        .unwrap()
        .mount_rootfs(&id, IMAGE, &rootfs)
        .unwrap();
    let mut cfg = template.clone();
    cfg["root"]["path"] = serde_json::json!(rootfs);
    cfg["linux"]["cgroupsPath"] = serde_json::json!(format!("/{base}/raw/{id}"));
    if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        for n in ns.iter_mut() {
            if let Some(o) = n.as_object_mut() {
                o.remove("path");
            }
        }
    }
    if let Some(mounts) = cfg["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            let dest = m["destination"].as_str().unwrap_or("").to_string();
            let name = dest.trim_start_matches("/etc/");
            if matches!(name, "hosts" | "hostname" | "resolv.conf") {
                m["source"] = serde_json::json!(files.join(name));
            }
            if dest == "/dev/shm" {
                m["type"] = serde_json::json!("tmpfs");
                m["source"] = serde_json::json!("shm");
                m["options"] =
                    serde_json::json!(["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]);
            }
        }
    }
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    (id, bundle)
}

fn runc_detached(runc: &Path, state: &Path, id: &str, bundle: &Path) {
    let st = Command::new(runc)
        .arg("--root")
        .arg(state)
        .args(["run", "--detach", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "runc run {id} failed");
}

fn raw_cleanup(rt: &PodRuntime, runc: &Path, state: &Path, id: &str, bundle: &Path) {
    let _ = Command::new(runc)
        .arg("--root")
        .arg(state)
        .args(["delete", "--force", id])
        .status();
    rt.images().native().unwrap().unmount_rootfs(id).unwrap();
    let _ = std::fs::remove_dir_all(bundle);
}

fn raw_run(
    rt: &PodRuntime,
    runc: &Path,
    root: &Path,
    base: &str,
    template: &serde_json::Value,
    files: &Path,
    i: usize,
) -> Duration {
    let (id, bundle) = raw_bundle(rt, root, base, template, files, i);
    let state = root.join("raw-state");
    let t0 = Instant::now();
    runc_detached(runc, &state, &id, &bundle);
    let d = t0.elapsed();
    raw_cleanup(rt, runc, &state, &id, &bundle);
    d
}

#[allow(clippy::too_many_arguments)]
fn raw_throughput(
    rt: &Arc<PodRuntime>,
    runc: &Path,
    root: &Path,
    base: &str,
    template: &serde_json::Value,
    files: &Path,
    n: usize,
    threads: usize,
    offset: usize,
) -> f64 {
    let bundles: Vec<(String, PathBuf)> = (0..n)
        .map(|i| raw_bundle(rt, root, base, template, files, offset + i))
        .collect();
    let bundles = Arc::new(bundles);
    let state = root.join("raw-state");
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let bundles = bundles.clone();
            let runc = runc.to_path_buf();
            let state = state.clone();
            std::thread::spawn(move || {
                for i in (t..bundles.len()).step_by(threads) {
                    runc_detached(&runc, &state, &bundles[i].0, &bundles[i].1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    for (id, bundle) in bundles.iter() {
        raw_cleanup(rt, runc, &state, id, bundle);
    }
    rate
}
