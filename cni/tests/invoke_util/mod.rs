//! Shared helpers of the invoker tests: root guard, named netns with Drop
//! cleanup, running code inside a netns, script plugins.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "network namespaces, bridges, iptables")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique name: `<prefix><pid % 100000>x<counter>` (<= 15 bytes for prefixes <= 4).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace (`ip netns add`), deleted by name on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that entered this netns.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.run_detached(f).join().unwrap()
    }

    /// Starts `f` on a thread that entered this netns.
    pub fn run_detached<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            f()
        })
    }

    /// `ip -n <ns> <args>` output (iproute2 as an independent view, tests only).
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ok(Command::new("ip").args(&full))
    }

    /// Runs a command inside the netns (`ip netns exec`).
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        run_ok(Command::new("ip").args(&full))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes an executable `/bin/sh` script plugin named `name` into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Polls `f` until it is true or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A recording script plugin: answers VERSION with `versions`, saves every
/// call's stdin and environment as `<calls>/<NNN>-<name>-<COMMAND>.{json,env}`,
/// and prints `{"cniVersion":..,"interfaces":[{"name":<name>}]}` on ADD.
pub fn recorder(bin: &Path, calls: &Path, name: &str, versions: &str) -> PathBuf {
    fs::create_dir_all(calls).unwrap();
    let calls = calls.display();
    script(
        bin,
        name,
        &format!(
            r#"n=$(ls {calls} | grep -c json)
f={calls}/$(printf %03d "$n")-{name}-$CNI_COMMAND
cat > "$f.json"
tr '\0' '\n' < /proc/$$/environ > "$f.env"
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":{versions}}}' ;;
ADD) echo '{{"cniVersion":"1.1.0","interfaces":[{{"name":"{name}"}}],"ips":[]}}' ;;
esac"#
        ),
    )
}

/// The calls a recorder saw, in order: (file stem, stdin JSON, env lines).
pub fn calls(dir: &Path) -> Vec<(String, serde_json::Value, Vec<String>)> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|stem| {
            let json = fs::read(dir.join(format!("{stem}.json"))).unwrap();
            let env = fs::read_to_string(dir.join(format!("{stem}.env"))).unwrap();
            let json = if json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&json).unwrap()
            };
            (stem, json, env.lines().map(str::to_owned).collect())
        })
        .collect()
}

/// Just the `<name>-<COMMAND>` part of each call, in order.
pub fn call_names(dir: &Path) -> Vec<String> {
    calls(dir)
        .into_iter()
        .map(|(stem, _, _)| stem[4..].to_owned())
        .collect()
}
