//! CNI ADD / DEL latency, same run, same machine: the `herd-cni` binary,
//! the reference `bridge` + `host-local` plugins, and the in-agent netlink
//! path (`herd_net::NodeNetwork`), each inside its own node netns created
//! here. Per iteration: create pod netns → ADD → DEL → delete pod netns;
//! ADD and DEL are timed separately (and DEL + netns deletion, the real
//! teardown cost). Prints a markdown table. Root only.
//!
//! Rows:
//! - `herd-cni (exec)`: the binary run directly (fork/exec, stdin, env),
//!   as a CNI runtime does; DEL gets `prevResult`.
//! - `herd-cni (exec, DEL without CNI_NETNS)`: the same, but DEL gets an
//!   empty `CNI_NETNS` (allowed by the spec), so the plugin leaves the veth
//!   for the netns deletion to reap: the fast teardown the issue asks for.
//! - `herd-cni (invoker)`: the same through `herd_cni::invoke::CniInvoker`
//!   (adds config/VERSION handling and the durable result cache).
//! - `bridge+host-local (exec)`: Debian's reference plugins, run the same
//!   way (bridge execs host-local itself).
//! - `in-agent netlink`: `NodeNetwork::add_pod` / `del_pod(.., None)`
//!   (the fast path: the netns deletion reaps the veth).
//!
//! State (IPAM files, the invoker's result cache) lives in a temp dir under
//! `$TMPDIR` (default /tmp). Both herd-cni's IPAM and the cache fsync, so on
//! a slow disk fsync latency shows up in ADD/DEL; `TMPDIR=/dev/shm` takes it
//! out (the cpu columns are unaffected either way).
//!
//! Usage: `cni_add_del [--herd-cni PATH] [--iterations N] [--warmup N]
//! [--reference-dir DIR]` (scripts/bench-net.sh builds herd-cni in release
//! and passes it). Without `--herd-cni`, the herd-cni rows are skipped.

use std::error::Error;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_cni::invoke::{Attachment, CniInvoker, InvokerConfig, NetworkConfigList};
use herd_net::{BridgeConfig, NetNs, NodeNetwork};
use serde_json::{Value, json};

type BoxResult<T> = Result<T, Box<dyn Error>>;

struct Args {
    herd_cni: Option<PathBuf>,
    reference_dir: PathBuf,
    iterations: usize,
    warmup: usize,
}

fn parse_args() -> BoxResult<Args> {
    let mut args = Args {
        herd_cni: std::env::var_os("HERD_CNI_BIN").map(PathBuf::from),
        reference_dir: PathBuf::from("/usr/lib/cni"),
        iterations: 100,
        warmup: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--herd-cni" => args.herd_cni = Some(PathBuf::from(value()?)),
            "--reference-dir" => args.reference_dir = PathBuf::from(value()?),
            "--iterations" => args.iterations = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            // cargo bench passes --bench; libtest-style filters are ignored.
            _ => {}
        }
    }
    if args.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    Ok(args)
}

/// Timings of one row.
#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    teardown: Vec<Duration>,
    add_cpu: Vec<Duration>,
    del_cpu: Vec<Duration>,
}

/// CPU time (user + system) used so far by this process and its reaped
/// children: per-operation deltas show the work done independent of how
/// busy the machine is (sleeps such as RCU waits are not in it).
fn cpu_now() -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage only writes into the struct it is given.
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            total += tv(ru.ru_utime) + tv(ru.ru_stime);
        }
    }
    total
}

/// What a row does for one pod.
trait Row {
    async fn add(&mut self, id: &str, pod: &NetNs) -> BoxResult<()>;
    async fn del(&mut self, id: &str, pod: &NetNs) -> BoxResult<()>;
}

/// Runs a plugin binary the way a CNI runtime does, inside `node`.
struct Exec {
    binary: PathBuf,
    cni_path: String,
    node: NetNs,
    conf: Value,
    prev: Option<Value>,
    /// DEL with `CNI_NETNS` empty (the spec allows it; the plugin then
    /// cannot and need not remove the pod's interface).
    del_without_netns: bool,
}

impl Exec {
    fn run(&self, command: &str, id: &str, pod: &NetNs, stdin: &Value) -> BoxResult<Vec<u8>> {
        let raw = self.node.fd().as_raw_fd();
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env(
                "CNI_NETNS",
                if command == "DEL" && self.del_without_netns {
                    Path::new("")
                } else {
                    pod.path()
                },
            )
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec and only calls
        // setns(2) on `raw`, the node netns fd kept open by `self.node`.
        unsafe {
            cmd.pre_exec(move || {
                rustix::thread::move_into_link_name_space(
                    BorrowedFd::borrow_raw(raw),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn()?;
        if let Some(mut stdin_pipe) = child.stdin.take() {
            stdin_pipe.write_all(&serde_json::to_vec(stdin)?)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "{} {command}: {}: {}{}",
                self.binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out.stdout)
    }
}

impl Row for Exec {
    async fn add(&mut self, id: &str, pod: &NetNs) -> BoxResult<()> {
        let out = self.run("ADD", id, pod, &self.conf)?;
        self.prev = Some(serde_json::from_slice(&out)?);
        Ok(())
    }
    async fn del(&mut self, id: &str, pod: &NetNs) -> BoxResult<()> {
        let mut conf = self.conf.clone();
        if let (Some(prev), Value::Object(map)) = (self.prev.take(), &mut conf) {
            map.insert("prevResult".into(), prev);
        }
        self.run("DEL", id, pod, &conf)?;
        Ok(())
    }
}

struct Invoker {
    inv: CniInvoker,
    _node: NetNs,
}

impl Row for Invoker {
    async fn add(&mut self, id: &str, pod: &NetNs) -> BoxResult<()> {
        self.inv
            .add(&Attachment::new(id, Some(pod.path()), "eth0"))
            .await?;
        Ok(())
    }
    async fn del(&mut self, id: &str, pod: &NetNs) -> BoxResult<()> {
        self.inv
            .del(&Attachment::new(id, Some(pod.path()), "eth0"))
            .await?;
        Ok(())
    }
}

struct Agent {
    node: NodeNetwork,
}

impl Row for Agent {
    async fn add(&mut self, id: &str, pod: &NetNs) -> BoxResult<()> {
        self.node.add_pod(id, pod, "eth0").await?;
        Ok(())
    }
    async fn del(&mut self, id: &str, _pod: &NetNs) -> BoxResult<()> {
        // Fast path: the netns is deleted right after; the kernel reaps the veth.
        self.node.del_pod(id, "eth0", None).await?;
        Ok(())
    }
}

async fn measure(
    label: &str,
    row: &mut impl Row,
    ns_dir: &Path,
    args: &Args,
) -> BoxResult<Samples> {
    let mut s = Samples::default();
    for i in 0..args.warmup + args.iterations {
        let name = format!("bp{}-{i}", std::process::id());
        let id = format!("bench-{i}");
        let pod = NetNs::create(ns_dir, &name)?;
        let (c0, t0) = (cpu_now(), Instant::now());
        let added = row.add(&id, &pod).await;
        let (c1, t1) = (cpu_now(), Instant::now());
        let deleted = if added.is_ok() {
            row.del(&id, &pod).await
        } else {
            Ok(())
        };
        let (c2, t2) = (cpu_now(), Instant::now());
        drop(pod);
        let removed = NetNs::delete(ns_dir, &name);
        let t3 = Instant::now();
        added.map_err(|e| format!("{label}: ADD #{i}: {e}"))?;
        deleted.map_err(|e| format!("{label}: DEL #{i}: {e}"))?;
        removed?;
        if i >= args.warmup {
            s.add.push(t1 - t0);
            s.del.push(t2 - t1);
            s.teardown.push(t3 - t1);
            s.add_cpu.push(c1.saturating_sub(c0));
            s.del_cpu.push(c2.saturating_sub(c1));
        }
    }
    Ok(s)
}

fn stats(v: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    // Nearest-rank p99.
    let p99 = ms[(n * 99).div_ceil(100).max(1) - 1];
    (median, p99)
}

fn node_ns(dir: &Path, tag: &str) -> BoxResult<NetNs> {
    let ns = NetNs::create(dir, &format!("bn{}-{tag}", std::process::id()))?;
    Ok(ns)
}

async fn run(args: &Args, dir: &Path) -> BoxResult<Vec<(String, Samples)>> {
    let ns_dir = dir.join("netns");
    let mut rows = Vec::new();
    let ref_path = args.reference_dir.display().to_string();

    if let Some(bin) = &args.herd_cni {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "bench-herd", "type": "herd-cni",
            "bridge": "hbh0", "subnet": "10.220.0.0/16", "dataDir": dir.join("herd-exec"),
        });
        let mut row = Exec {
            binary: bin.clone(),
            cni_path: ref_path.clone(),
            node: node_ns(&ns_dir, "he")?,
            conf,
            prev: None,
            del_without_netns: false,
        };
        rows.push((
            "herd-cni (exec)".to_owned(),
            measure("herd-cni", &mut row, &ns_dir, args).await?,
        ));
        row.del_without_netns = true;
        row.node = node_ns(&ns_dir, "hn")?;
        if let Value::Object(conf) = &mut row.conf {
            conf.insert("bridge".into(), json!("hbn1"));
            conf.insert("dataDir".into(), json!(dir.join("herd-exec-nons")));
        }
        rows.push((
            "herd-cni (exec, DEL without CNI_NETNS)".to_owned(),
            measure("herd-cni-nons", &mut row, &ns_dir, args).await?,
        ));

        let node = node_ns(&ns_dir, "hi")?;
        let list = json!({"cniVersion": "1.0.0", "name": "bench-herd-inv", "plugins": [{
            "type": "herd-cni", "bridge": "hbi0", "subnet": "10.223.0.0/16", "dataDir": dir.join("herd-inv"),
        }]});
        let plugin_dir = bin
            .parent()
            .ok_or("--herd-cni has no parent dir")?
            .to_owned();
        let inv = CniInvoker::with_network(
            InvokerConfig {
                plugin_path: vec![plugin_dir, args.reference_dir.clone()],
                cache_dir: dir.join("cache"),
                host_netns: Some(node.path().to_owned()),
                ..InvokerConfig::default()
            },
            NetworkConfigList::from_value(Path::new("bench"), list)?,
        )?;
        let mut row = Invoker { inv, _node: node };
        rows.push((
            "herd-cni (invoker)".to_owned(),
            measure("invoker", &mut row, &ns_dir, args).await?,
        ));
    }

    let conf = json!({
        "cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": "hbr0",
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.221.0.0/16"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": dir.join("host-local")},
    });
    let mut row = Exec {
        binary: args.reference_dir.join("bridge"),
        cni_path: ref_path,
        node: node_ns(&ns_dir, "rf")?,
        conf,
        prev: None,
        del_without_netns: false,
    };
    rows.push((
        "bridge+host-local (exec)".to_owned(),
        measure("reference", &mut row, &ns_dir, args).await?,
    ));

    let cfg = BridgeConfig {
        name: "hbn0".into(),
        subnet: "10.222.0.0/16".parse()?,
        ..BridgeConfig::default()
    };
    let node = NodeNetwork::new(Some(node_ns(&ns_dir, "ag")?), cfg, &dir.join("agent")).await?;
    let mut row = Agent { node };
    rows.push((
        "in-agent netlink".to_owned(),
        measure("agent", &mut row, &ns_dir, args).await?,
    ));
    Ok(rows)
}

/// `/proc/loadavg`'s first three fields: a busy machine makes every row slower.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cleanup(ns_dir: &Path) {
    let pid = std::process::id();
    for tag in ["he", "hn", "hi", "rf", "ag"] {
        let _ = NetNs::delete(ns_dir, &format!("bn{pid}-{tag}"));
    }
    if let Ok(entries) = std::fs::read_dir(ns_dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("bp{pid}-"))
            {
                let _ = NetNs::delete_path(&e.path());
            }
        }
    }
    // NetNs::create made the directory a (shared) bind mount of itself.
    let _ = rustix::mount::unmount(ns_dir, rustix::mount::UnmountFlags::DETACH);
}

fn main() -> BoxResult<()> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP cni_add_del: needs root (network namespaces)");
        return Ok(());
    }
    let args = parse_args()?;
    let dir = tempfile::Builder::new()
        .prefix("herd-bench-net")
        .tempdir()?;
    let load_before = loadavg();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(run(&args, dir.path()));
    drop(rt);
    cleanup(&dir.path().join("netns"));
    let rows = rows?;
    println!(
        "\nload average (1/5/15 min): {load_before} before, {} after; state under {}",
        loadavg(),
        std::env::temp_dir().display()
    );
    println!(
        "{} iterations per row (+{} warm-up), times in ms; teardown = DEL + pod netns deletion; \
         cpu = user+system time of the process tree\n",
        args.iterations, args.warmup
    );
    println!(
        "| path | ADD median | ADD p99 | DEL median | DEL p99 | teardown median | teardown p99 | ADD cpu median | DEL cpu median |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, s) in &rows {
        let (am, ap) = stats(&s.add);
        let (dm, dp) = stats(&s.del);
        let (tm, tp) = stats(&s.teardown);
        let (acm, _) = stats(&s.add_cpu);
        let (dcm, _) = stats(&s.del_cpu);
        println!(
            "| {label} | {am:.2} | {ap:.2} | {dm:.2} | {dp:.2} | {tm:.2} | {tp:.2} | {acm:.2} | {dcm:.2} |"
        );
    }
    Ok(())
}
