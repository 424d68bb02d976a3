//! Image import and pull benchmark: herd against `skopeo copy` in one run.
//!
//! Builds the 100 MiB / 4-layer random image once (OCI layout plus an OCI
//! archive of it), pushes it to a throwaway local registry and then, for
//! `HERD_BENCH_ITERS` iterations (default 5), times each operation with a
//! fresh empty destination and records the child's peak RSS from
//! `wait4(2)`:
//!
//! - import of the layout directory (herd unpacks; skopeo copies to a layout),
//! - import of the OCI archive (same),
//! - pull with `--no-unpack` against `skopeo copy docker://… oci:…` (both
//!   only fetch and verify),
//! - pull with unpack (herd only).
//!
//! The page cache is not dropped, so every source is read warm; the table
//! says so. Within an iteration the tool that goes first alternates. The
//! herd binary is `HERD_BIN`, by default `<workspace>/target/release/herd`.
//! Results are printed as Markdown and written to
//! `<workspace>/target/bench-images.md`. All network traffic is to
//! 127.0.0.1.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use herd_integration::{Registry, RegistryOpts, tar_layout, write_big_image};

const MIB: u64 = 1024 * 1024;
const IMAGE_DATA_BYTES: u64 = 100 * MIB;
const LAYERS: usize = 4;
const SEED: u64 = 42;
const DEFAULT_ITERS: usize = 5;
const REPO: &str = "herd/big";
const TAG: &str = "latest";
/// The goal for herd's peak RSS during a pull: 40 MB.
const RSS_GOAL_BYTES: f64 = 40e6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Herd,
    Skopeo,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Herd => "herd",
            Tool::Skopeo => "skopeo",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ImportLayout,
    ImportArchive,
    PullNoUnpack,
    PullUnpack,
}

impl Op {
    const ALL: [Op; 4] = [
        Op::ImportLayout,
        Op::ImportArchive,
        Op::PullNoUnpack,
        Op::PullUnpack,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::ImportLayout => "import OCI layout",
            Op::ImportArchive => "import OCI archive",
            Op::PullNoUnpack => "pull, fetch+verify only",
            Op::PullUnpack => "pull + unpack",
        }
    }

    fn tools(self) -> &'static [Tool] {
        match self {
            Op::PullUnpack => &[Tool::Herd],
            _ => &[Tool::Herd, Tool::Skopeo],
        }
    }
}

/// Inputs shared by every run.
#[derive(Debug)]
struct Sources {
    herd: PathBuf,
    layout: PathBuf,
    archive: PathBuf,
    /// `127.0.0.1:<port>/herd/big:latest`.
    remote: String,
}

impl Sources {
    /// The command for `op` by `tool`, writing into the empty dir `dest`.
    fn command(&self, op: Op, tool: Tool, dest: &Path) -> Command {
        let mut cmd = match tool {
            Tool::Herd => {
                let mut c = Command::new(&self.herd);
                c.arg("--root-dir").arg(dest).arg("image");
                match op {
                    Op::ImportLayout => c.arg("import").arg(&self.layout),
                    Op::ImportArchive => c.arg("import").arg(&self.archive),
                    Op::PullNoUnpack => c
                        .args(["pull", "--plain-http", "--no-unpack"])
                        .arg(&self.remote),
                    Op::PullUnpack => c.args(["pull", "--plain-http"]).arg(&self.remote),
                };
                c
            }
            Tool::Skopeo => {
                let mut c = Command::new("skopeo");
                c.args(["--insecure-policy", "copy"]);
                let src = match op {
                    Op::ImportLayout => format!("oci:{}:{TAG}", self.layout.display()),
                    Op::ImportArchive => format!("oci-archive:{}", self.archive.display()),
                    Op::PullNoUnpack | Op::PullUnpack => {
                        c.arg("--src-tls-verify=false");
                        format!("docker://{}", self.remote)
                    }
                };
                c.arg(src).arg(format!("oci:{}:{TAG}", dest.display()));
                c
            }
        };
        // Registry traffic stays on loopback whatever the environment says.
        cmd.env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1");
        cmd
    }
}

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    secs: f64,
    rss_kib: u64,
}

#[derive(Debug)]
struct Series {
    op: Op,
    tool: Tool,
    samples: Vec<Sample>,
}

fn main() -> Result<()> {
    let iters = match std::env::var("HERD_BENCH_ITERS") {
        Ok(v) => v
            .parse::<usize>()
            .with_context(|| format!("HERD_BENCH_ITERS={v:?} is not a count"))?
            .max(1),
        Err(_) => DEFAULT_ITERS,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("integration crate has no parent dir")?
        .to_path_buf();
    let herd = std::env::var_os("HERD_BIN")
        .map_or_else(|| workspace.join("target/release/herd"), PathBuf::from);
    if !herd.is_file() {
        bail!(
            "herd binary {} not found; run `cargo build --release -p herd-agent` or set HERD_BIN",
            herd.display()
        );
    }

    let work = tempfile::tempdir().context("creating bench temp dir")?;
    let layout = work.path().join("layout");
    let archive = work.path().join("big.oci.tar");
    eprintln!("building {LAYERS}-layer image of {IMAGE_DATA_BYTES} random bytes");
    let image = write_big_image(&layout, IMAGE_DATA_BYTES, LAYERS, SEED)?;
    tar_layout(&layout, &archive)?;
    let registry = Registry::start(RegistryOpts {
        basic_auth: None,
        binary: None,
    })?;
    registry.push_oci_layout(&layout, REPO, TAG)?;
    let sources = Sources {
        herd,
        layout,
        archive,
        remote: format!("{}/{REPO}:{TAG}", registry.addr()),
    };
    let runs = work.path().join("runs");
    fs::create_dir(&runs).context("creating runs dir")?;

    let mut series: Vec<Series> = Op::ALL
        .iter()
        .flat_map(|&op| {
            op.tools().iter().map(move |&tool| Series {
                op,
                tool,
                samples: Vec::new(),
            })
        })
        .collect();
    for i in 0..iters {
        eprintln!("iteration {}/{iters}", i + 1);
        for op in Op::ALL {
            let mut order = op.tools().to_vec();
            if i % 2 == 1 {
                order.reverse();
            }
            for tool in order {
                let sample = run_once(&sources, op, tool, &runs)?;
                if let Some(s) = series.iter_mut().find(|s| s.op == op && s.tool == tool) {
                    s.samples.push(sample);
                }
            }
        }
    }

    let report = render(&series, image.total_size, iters, &sources.herd)?;
    println!("{report}");
    let out = workspace.join("target").join("bench-images.md");
    fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    drop(registry);
    work.close().context("removing bench temp dir")
}

/// Runs `op` by `tool` into a fresh directory under `runs`, removed
/// afterwards (not timed).
fn run_once(sources: &Sources, op: Op, tool: Tool, runs: &Path) -> Result<Sample> {
    let dest = tempfile::tempdir_in(runs).context("creating destination dir")?;
    let target = dest.path().join("dest");
    let log_path = dest.path().join("log");
    let log = File::create(&log_path).context("creating log file")?;
    let mut cmd = sources.command(op, tool, &target);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating log file")?)
        .stderr(log);
    let result = timed(&mut cmd);
    let sample = match result {
        Ok(s) => s,
        Err(e) => {
            let output = fs::read_to_string(&log_path).unwrap_or_default();
            bail!("{} {}: {e:#}\n{output}", tool.name(), op.label());
        }
    };
    dest.close().context("removing destination dir")?;
    Ok(sample)
}

/// Spawns `cmd`, reaps it with `wait4` and returns the wall-clock time from
/// spawn to exit and the child's peak RSS.
fn timed(cmd: &mut Command) -> Result<Sample> {
    let start = Instant::now();
    let child = cmd.spawn().context("spawning")?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers; all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped (the `Child` handle
        // is never waited on); `status` and `usage` are live, writable locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("exited with wait status {status:#x}");
    }
    // Linux reports ru_maxrss in KiB.
    let rss_kib = u64::try_from(usage.ru_maxrss).unwrap_or_default();
    Ok(Sample { secs, rss_kib })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / MIB as f64
}

fn render(series: &[Series], image_bytes: u64, iters: usize, herd: &Path) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "# herd image benchmark\n")?;
    writeln!(
        out,
        "Image: {:.1} MiB in {LAYERS} gzip layers ({} MiB of incompressible file data); \
         {iters} iterations, fresh empty destination each run, warm page cache (not dropped). \
         Machine: {} CPUs ({}), kernel {}. {}; {}. \
         MiB/s = image bytes / median wall time. herd pull uses its default \
         --max-concurrent-downloads.\n",
        mib(image_bytes as f64),
        IMAGE_DATA_BYTES / MIB,
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model(),
        read_trimmed("/proc/sys/kernel/osrelease"),
        version(Command::new(herd).arg("--version")),
        version(Command::new("skopeo").arg("--version")),
    )?;
    writeln!(
        out,
        "| operation | tool | median s | MiB/s | time vs skopeo | median peak RSS MiB | max peak RSS MiB |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
    let mut herd_max_rss = 0.0_f64;
    for s in series {
        let secs = median(s.samples.iter().map(|x| x.secs).collect());
        let rss: Vec<f64> = s
            .samples
            .iter()
            .map(|x| x.rss_kib as f64 / 1024.0)
            .collect();
        let rss_max = rss.iter().copied().fold(0.0, f64::max);
        if s.tool == Tool::Herd {
            herd_max_rss = herd_max_rss.max(rss_max);
        }
        let vs = match s.tool {
            Tool::Herd => series
                .iter()
                .find(|o| o.op == s.op && o.tool == Tool::Skopeo)
                .map(|o| median(o.samples.iter().map(|x| x.secs).collect()))
                .map_or_else(|| "–".to_string(), |sk| format!("{:.2}×", secs / sk)),
            Tool::Skopeo => "1.00×".to_string(),
        };
        writeln!(
            out,
            "| {} | {} | {secs:.3} | {:.1} | {vs} | {:.1} | {:.1} |",
            s.op.label(),
            s.tool.name(),
            mib(image_bytes as f64) / secs,
            median(rss),
            rss_max,
        )?;
    }
    let verdict = if herd_max_rss < mib(RSS_GOAL_BYTES) {
        "met"
    } else {
        "NOT met"
    };
    writeln!(
        out,
        "\nherd peak RSS, max over all runs: {herd_max_rss:.1} MiB \
         (goal < 40 MB = {:.1} MiB: {verdict}).",
        mib(RSS_GOAL_BYTES)
    )?;
    Ok(out)
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

fn cpu_model() -> String {
    read_trimmed("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".into(), |(_, m)| m.trim().to_string())
}

fn version(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown version".into(), |s| s.trim().to_string())
}
