//! A real `herd agent` for end-to-end tests: its own state, run, log and
//! manifest dirs, its own cgroup name, bridge and pod CIDR, running inside a
//! network namespace this fixture creates (loopback up), so the bridge and
//! every pod address live only there.
//!
//! The crate must not depend on the crates under test, so the fixture drives
//! the `herd` binary (its path is a parameter: `env!("CARGO_BIN_EXE_herd")`
//! in agent tests) and speaks HTTP/1.1 to `<root>/agent.sock` itself.
//!
//! Guarantees: [`Drop`] SIGTERMs the agent (SIGKILL after 10 s), then
//! removes by exact name whatever remains: runc containers of the agent's
//! runc roots, monitor processes whose command line names the run dir,
//! mounts under the fixture's dirs, the cgroup `<cgroup_name>` in every
//! controller hierarchy, the network namespace (unless the caller passed
//! one in [`AgentOpts::netns`]) and the dirs. Names are
//! unique per process and fixture (pid + counter).
//!
//! With [`AgentOpts::containerd`] the pods run as containerd tasks: their
//! processes die with the cgroup above; the containers, tasks, snapshots
//! and images stay in containerd's namespace, for the containerd fixture
//! (owned by the caller) to remove.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ImageOpts;

pub mod cluster;
mod host;
mod http;
mod objects;

use host::{cgroup_dirs, create_netns, remove_cgroup_tree, remove_netns, runc_roots, sigkill};
pub use host::{mounts_under, pids_with_cmdline};
use http::Chunked;
pub use objects::{condition, container_status, pod, sh_container, sleeper_deployment, tail};

/// The image every agent gets imported.
pub const IMAGE: &str = "herd.test/busybox:latest";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Extra `herd agent` flags (e.g. `["--backoff-base", "1s"]`).
#[derive(Clone, Debug, Default)]
pub struct AgentOpts {
    pub args: Vec<String>,
    /// Run inside this existing netns (the caller creates and removes it)
    /// instead of a new one.
    pub netns: Option<PathBuf>,
    /// Return from [`Agent::start`] once spawned, without waiting for
    /// `/readyz` (see [`Agent::wait_ready`]).
    pub no_wait: bool,
    /// Run pods on containerd (`--runtime containerd`) and keep images in
    /// its store; the caller owns that containerd (e.g. the
    /// `herd_integration::containerd` fixture) and keeps it alive longer
    /// than the agent.
    pub containerd: Option<ContainerdTarget>,
}

/// A running containerd the agent and `herd image` talk to.
#[derive(Clone, Debug)]
pub struct ContainerdTarget {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace for the agent's images and containers.
    pub namespace: String,
}

impl AgentOpts {
    /// Adds `--flag value`.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
}

/// Output of a CLI run.
#[derive(Clone, Debug)]
pub struct CliOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One running agent and everything it owns.
#[derive(Debug)]
pub struct Agent {
    herd: PathBuf,
    pub name: String,
    base: PathBuf,
    run: PathBuf,
    netns: PathBuf,
    netns_fd: Option<OwnedFd>,
    pub cgroup_name: String,
    pub bridge: String,
    pub pod_cidr: String,
    pub node_name: String,
    opts: AgentOpts,
    child: Option<Child>,
    own_netns: bool,
}

impl Agent {
    /// Creates the dirs and the netns, imports the test image, starts
    /// `herd agent` and waits (30 s) until `/readyz` answers `ok`.
    pub fn start(herd: impl AsRef<Path>, test: &str, opts: AgentOpts) -> Result<Agent> {
        let herd = herd.as_ref();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let name = format!("{tag}-{pid}-{n}");
        let base = std::env::temp_dir().join(format!("herd-e2e-{name}"));
        // The run dir is tmpfs, as /run/herd is in production.
        let run = PathBuf::from("/dev/shm").join(format!("herd-e2e-run-{name}"));
        let mut agent = Agent {
            herd: herd.to_path_buf(),
            base: base.clone(),
            run: run.clone(),
            netns: opts.netns.clone().unwrap_or_else(|| run.join("netns")),
            netns_fd: None,
            own_netns: opts.netns.is_none(),
            cgroup_name: format!("herd-t{pid}-{n}"),
            bridge: format!("hb{}x{n}", pid % 100_000),
            pod_cidr: format!("10.{}.{}.0/24", 100 + pid % 100, n % 256),
            node_name: format!("node-{n}"),
            name,
            opts,
            child: None,
        };
        for d in [&base, &run] {
            if d.exists() {
                bail!("{} exists already", d.display());
            }
        }
        for d in [
            agent.root(),
            agent.log_dir(),
            agent.manifests_dir(),
            run.clone(),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        agent.netns_fd = Some(if agent.own_netns {
            create_netns(&agent.netns)?
        } else {
            std::fs::File::open(&agent.netns)
                .with_context(|| format!("open netns {}", agent.netns.display()))?
                .into()
        });
        let layout = base.join("layout");
        crate::write_oci_layout(&layout, &ImageOpts::new(IMAGE))?;
        let mut import = agent.cli_image_args();
        import.extend(["import".to_string(), layout.to_string_lossy().into_owned()]);
        let import: Vec<&str> = import.iter().map(String::as_str).collect();
        let out = agent.cli(&import)?;
        if out.status != 0 {
            bail!("image import failed: {}", out.stderr);
        }
        agent.spawn()?;
        if !agent.opts.no_wait {
            agent.wait_ready(Duration::from_secs(30))?;
        }
        Ok(agent)
    }

    /// `--root-dir`.
    pub fn root(&self) -> PathBuf {
        self.base.join("root")
    }
    /// `--log-dir`.
    pub fn log_dir(&self) -> PathBuf {
        self.base.join("logs")
    }
    /// `--manifests` (static pods).
    pub fn manifests_dir(&self) -> PathBuf {
        self.base.join("manifests")
    }
    /// `--run-dir` (tmpfs).
    pub fn run_dir(&self) -> PathBuf {
        self.run.join("run")
    }
    /// The netns file the agent runs in.
    pub fn netns(&self) -> &Path {
        &self.netns
    }
    /// The agent's stdout+stderr so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.base.join("agent.log")).unwrap_or_default()
    }
    /// `herd image` with the flags that reach the agent's image store:
    /// `["image"]`, or with `--containerd-address S --containerd-namespace
    /// N` when the agent runs on containerd. Append the subcommand.
    pub fn cli_image_args(&self) -> Vec<String> {
        let mut args = vec!["image".to_string()];
        if let Some(c) = &self.opts.containerd {
            args.extend(containerd_flags(c));
        }
        args
    }
    /// The agent's pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("agent.log"))?;
        let mut cmd = Command::new(&self.herd);
        cmd.arg("--root-dir")
            .arg(self.root())
            .arg("-v")
            .arg("agent")
            .args(["--node-name", &self.node_name])
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--log-dir")
            .arg(self.log_dir())
            .args(["--cgroup-name", &self.cgroup_name])
            .arg("--manifests")
            .arg(self.manifests_dir())
            .args(if self.opts.args.iter().any(|a| a == "--listen") {
                &[][..]
            } else {
                // Inside the agent's own netns: reachable by kubectl run
                // there ([`Agent::kubectl`]) and by the other nodes.
                &["--listen", "0.0.0.0:6443"][..]
            })
            .args(["--pod-cidr", &self.pod_cidr])
            .args(["--bridge", &self.bridge])
            .args(self.opts.containerd.iter().flat_map(|c| {
                let mut a = vec!["--runtime".to_string(), "containerd".to_string()];
                a.extend(containerd_flags(c));
                a
            }))
            .args(&self.opts.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let fd = self
            .netns_fd
            .as_ref()
            .context("netns not open")?
            .try_clone()?;
        // SAFETY: the closure only calls setns(2), which is async-signal-safe,
        // on an fd owned by the closure; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(std::io::Error::from)
            });
        }
        self.child = Some(cmd.spawn().context("spawn herd agent")?);
        Ok(())
    }

    /// Waits until `/readyz` answers `ok`; errors (with the log) if the
    /// agent exits first or after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(st) = child.try_wait()?
            {
                bail!("herd agent exited with {st}:\n{}", self.agent_log());
            }
            if let Ok((200, body)) = self.http("GET", "/readyz", None)
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("agent not ready after {timeout:?}:\n{}", self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the agent (its pods and monitors keep running).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERMs the agent and waits (up to `timeout`) for it to exit.
    pub fn stop(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st.code());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("agent ignored SIGTERM for {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent again over the same dirs (after [`Agent::kill9`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// Starts the agent again over the same dirs without waiting for
    /// readiness (after [`Agent::kill9`] or [`Agent::stop`]).
    pub fn respawn(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Waits (up to `timeout`) for the agent to exit by itself; its exit
    /// code (`-1` when killed by a signal), or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Ok(None);
            };
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(Some(st.code().unwrap_or(-1)));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `herd --root-dir ROOT ARGS…` (stdin closed).
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        self.cli_stdin(args, None)
    }

    /// Runs the CLI with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<CliOutput> {
        let mut cmd = Command::new(&self.herd);
        cmd.arg("--root-dir").arg(self.root()).args(args);
        run_with_stdin(cmd, stdin)
    }

    /// The kubeconfig `herd kubeconfig` printed for this agent (made on
    /// first use), pointing at `https://127.0.0.1:6443` in its netns.
    pub fn kubeconfig(&self) -> Result<PathBuf> {
        let path = self.base.join("kubeconfig");
        if !path.exists() {
            let out = self.cli(&["kubeconfig", "--server-url", "https://127.0.0.1:6443"])?;
            if out.status != 0 {
                bail!("herd kubeconfig failed: {}", out.stderr);
            }
            std::fs::write(&path, out.stdout)?;
        }
        Ok(path)
    }

    /// The real `kubectl` with this agent's kubeconfig, run inside the
    /// agent's netns (`nsenter --net`), `stdin` piped in.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<CliOutput> {
        let child = self.kubectl_command(args)?;
        run_with_stdin(child, stdin)
    }

    /// The `kubectl` command of [`Agent::kubectl`], for callers that stream
    /// its output (`-w`, `logs -f`, `port-forward`).
    pub fn kubectl_command(&self, args: &[&str]) -> Result<Command> {
        let kubeconfig = self.kubeconfig()?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.base.join("kube-cache"))
            .args(args)
            .env("NO_COLOR", "1");
        Ok(cmd)
    }

    /// `herd apply -f -` with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> Result<CliOutput> {
        self.cli_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// `herd exec POD [-c C] -- CMD…`.
    pub fn exec(&self, pod: &str, container: Option<&str>, cmd: &[&str]) -> Result<CliOutput> {
        let mut args = vec!["exec", pod];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        args.push("--");
        args.extend(cmd);
        self.cli(&args)
    }

    /// One HTTP/1.1 request over the unix socket; returns status and body.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let body = body.map(|v| v.to_string());
        let (status, mut reader) =
            self.request(method, path, body.as_deref(), "application/json")?;
        let mut text = String::new();
        reader.read_to_string(&mut text)?;
        Ok((status, text))
    }

    /// Sends a request and returns the status and a reader of the (de-chunked)
    /// body, for streams such as watches and `follow` logs.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: &str,
    ) -> Result<(u16, Box<dyn BufRead + Send>)> {
        let sock = self.root().join("agent.sock");
        let mut s =
            UnixStream::connect(&sock).with_context(|| format!("connect {}", sock.display()))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut chunked, mut length) = (false, None);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap_or((&line, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<u64>().ok();
            }
        }
        let reader: Box<dyn BufRead + Send> = if chunked {
            Box::new(BufReader::new(Chunked {
                inner: r,
                left: 0,
                done: false,
            }))
        } else if let Some(n) = length {
            Box::new(BufReader::new(r.take(n)))
        } else {
            Box::new(r)
        };
        Ok((status, reader))
    }

    /// POSTs a JSON object to its collection (namespace `default` unless
    /// the object says otherwise); errors unless 201/200.
    pub fn create(&self, obj: &Value) -> Result<Value> {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let plural = match obj["kind"].as_str() {
            Some("Pod") => "pods",
            Some("ConfigMap") => "configmaps",
            Some("Secret") => "secrets",
            other => bail!("create: unsupported kind {other:?}"),
        };
        let (status, body) = self.http(
            "POST",
            &format!("/api/v1/namespaces/{ns}/{plural}"),
            Some(obj),
        )?;
        if status != 201 && status != 200 {
            bail!("create {plural}: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// GET a pod in `default`; `None` when absent.
    pub fn get_pod(&self, name: &str) -> Result<Option<Value>> {
        let (status, body) = self.http(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        )?;
        match status {
            200 => Ok(Some(serde_json::from_str(&body)?)),
            404 => Ok(None),
            _ => bail!("get pod {name}: {status} {body}"),
        }
    }

    /// DELETE a pod in `default`, with an optional grace period.
    pub fn delete_pod(&self, name: &str, grace: Option<u32>) -> Result<u16> {
        let q = grace
            .map(|g| format!("?gracePeriodSeconds={g}"))
            .unwrap_or_default();
        let (status, body) = self.http(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}{q}"),
            None,
        )?;
        if status != 200 && status != 202 {
            bail!("delete pod {name}: {status} {body}");
        }
        Ok(status)
    }

    /// Polls the pod (every 50 ms) until `cond` holds; errors after
    /// `timeout` with the last pod seen and the agent's log tail.
    pub fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(p) = self.get_pod(name)? {
                if cond(&p) {
                    return Ok(p);
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {name}: condition not met after {timeout:?}; last seen:\n{}\nagent log tail:\n{}",
                    last.map(|p| serde_json::to_string_pretty(&p["status"]).unwrap_or_default())
                        .unwrap_or_else(|| "absent".into()),
                    tail(&self.agent_log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pod's log for `container` (`previous` attempt if asked), via
    /// `GET …/log`.
    pub fn logs(&self, pod: &str, container: &str, previous: bool) -> Result<String> {
        let (status, body) = self.http(
            "GET",
            &format!(
                "/api/v1/namespaces/default/pods/{pod}/log?container={container}&previous={previous}"
            ),
            None,
        )?;
        if status != 200 {
            bail!("logs {pod}/{container}: {status} {body}");
        }
        Ok(body)
    }

    /// Polls the log of `container` until it contains `needle`.
    pub fn wait_log(
        &self,
        pod: &str,
        container: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.logs(pod, container, false).unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "log of {pod}/{container} lacks {needle:?} after {timeout:?}: {text:?}\nagent log tail:\n{}",
                    tail(&self.agent_log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the pod is gone from the API.
    pub fn wait_gone(&self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.get_pod(name)?.is_some() {
            if Instant::now() > deadline {
                bail!(
                    "pod {name} still present after {timeout:?}\nagent log tail:\n{}",
                    tail(&self.agent_log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} log tail ---\n{}",
                self.name,
                tail(&self.agent_log(), 60)
            );
        }
        if self.stop(Duration::from_secs(10)).is_err() {
            eprintln!("agent {}: SIGTERM ignored, killed", self.name);
        }
        let run = self.run.to_string_lossy().into_owned();
        for root in runc_roots(&[
            self.run_dir(),
            self.run_dir().join("runtime"),
            self.root(),
            self.run.clone(),
        ]) {
            let out = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output();
            let ids = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for pid in pids_with_cmdline(&["monitor", &run]) {
            sigkill(pid);
        }
        let cgroup_root = Path::new("/sys/fs/cgroup");
        for d in cgroup_dirs(cgroup_root, &self.cgroup_name) {
            remove_cgroup_tree(&d);
        }
        for _ in 0..3 {
            let mounts = mounts_under(&[&self.base, &self.run]);
            if mounts.is_empty() {
                break;
            }
            for m in mounts {
                let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
            }
        }
        self.netns_fd = None;
        if self.own_netns {
            remove_netns(&self.netns);
        }
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `--containerd-address S --containerd-namespace N`.
fn containerd_flags(c: &ContainerdTarget) -> [String; 4] {
    [
        "--containerd-address".to_string(),
        c.socket.to_string_lossy().into_owned(),
        "--containerd-namespace".to_string(),
        c.namespace.clone(),
    ]
}

/// Runs `cmd` to the end with `stdin` piped in, capturing its output.
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Result<CliOutput> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(CliOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
