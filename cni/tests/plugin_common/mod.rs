//! Shared helpers for the herd-cni binary tests: run the real binary (in a
//! chosen network namespace), create and delete test namespaces by exact
//! name, run code inside a namespace.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "network namespaces, netlink")
}

/// One plugin run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "plugin failed: {self:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        self
    }

    /// Exit 1, parseable error JSON with `code`, no panic; returns the JSON.
    pub fn err(&self, code: u64) -> Value {
        assert!(!self.stderr.contains("panicked"), "panic: {self:?}");
        assert_eq!(self.code, Some(1), "expected exit 1: {self:?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "{self:?}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        assert!(v["cniVersion"].is_string(), "{self:?}");
        v
    }
}

/// Run the herd-cni binary with exactly `env` (plus PATH), `stdin`, inside
/// the network namespace at `netns` when given.
pub fn run_plugin(env: &[(&str, &str)], stdin: &str, netns: Option<&Path>) -> Run {
    run_exe(Path::new(env!("CARGO_BIN_EXE_herd-cni")), env, stdin, netns)
}

/// Run any CNI plugin executable the same way (reference plugins too).
pub fn run_exe(exe: &Path, env: &[(&str, &str)], stdin: &str, netns: Option<&Path>) -> Run {
    let mut cmd = Command::new(exe);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let ns_file = netns.map(|p| std::fs::File::open(p).unwrap());
    if let Some(f) = &ns_file {
        let fd = f.as_raw_fd();
        // SAFETY: setns is async-signal-safe; fd stays open in the parent
        // until spawn returns, so it is valid in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `<prefix><pid % 100000>x<counter>` (≤ 15 bytes).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A network namespace made with `ip netns add`, deleted by name on drop.
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl TestNs {
    pub fn new(prefix: &str) -> TestNs {
        let name = unique(prefix);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        let ns = TestNs {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// `ip -n <ns> ...` (tests only), panics on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let f_ns = std::fs::File::open(&path).unwrap();
            // SAFETY: plain syscall on a valid fd; affects only this thread.
            let rc = unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {}", path.display());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Environment for a verb against a pod.
pub fn pod_env<'a>(
    cmd: &'a str,
    id: &'a str,
    netns: &'a str,
    ifname: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    if !netns.is_empty() {
        v.push(("CNI_NETNS", netns));
    }
    v
}
