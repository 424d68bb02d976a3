//! `PodRuntime::exec_streaming` with real runc and the test busybox image:
//! stdin → cat → stdout, a tty (`tty` prints /dev/pts/N), exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_images::{ImageStore, ImportOptions};
use herd_integration::ImageOpts;
use herd_runtime::oci::{RuntimeBinary, RuntimeKind};
use herd_runtime::pod::{ContainerRecord, ContainerState, PodRuntime, RuntimeConfig};
use herd_runtime::types::{
    ContainerConfig, ContainerResources, LogLimits, NamespaceOptions, PodSandboxConfig,
    SecurityContext,
};

const IMAGE: &str = "herd.test/busybox:latest";

struct Env {
    _tmp: tempfile::TempDir,
    rt: PodRuntime,
}

impl Env {
    fn new(name: &str) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("herd-exec-{name}-"))
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        let layout = root.join("layout");
        herd_integration::write_oci_layout(&layout, &ImageOpts::new(IMAGE)).unwrap();
        let store = ImageStore::open(&root.join("images")).unwrap();
        store.import(&layout, &ImportOptions::default()).unwrap();
        let cfg = config(&root, &format!("herd-exec-{}-{name}", std::process::id()));
        let rt = PodRuntime::new(cfg, store).unwrap();
        Env { _tmp: tmp, rt }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(pods) = self.rt.list_pods() {
            for uid in pods {
                let _ = self.rt.remove_pod_sandbox(&uid);
            }
        }
        let _ = self.rt.cgroups().remove_tree();
    }
}

fn config(root: &Path, base: &str) -> RuntimeConfig {
    RuntimeConfig {
        run_dir: root.join("run"),
        log_dir: root.join("logs"),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        cgroup_base: base.to_string(),
        runtime: RuntimeBinary {
            kind: RuntimeKind::Runc,
            path: PathBuf::from("/usr/sbin/runc"),
            root: root.join("runc"),
        },
        monitor_exe: PathBuf::from(env!("CARGO_BIN_EXE_herd-monitor-test")),
        monitor_args: vec![],
        node_memory_bytes: 8 << 30,
    }
}

fn start(env: &Env, uid: &str) -> ContainerRecord {
    let c = ContainerConfig {
        name: "main".into(),
        attempt: 0,
        image: IMAGE.to_string(),
        command: vec!["sh".into(), "-c".into(), "exec sleep 3600".into()],
        args: vec![],
        working_dir: None,
        env: vec![],
        mounts: vec![],
        resources: ContainerResources::default(),
        security: SecurityContext::default(),
        tty: false,
        stdin: false,
        log: LogLimits::default(),
    };
    let p = PodSandboxConfig {
        init_containers: vec![],
        uid: uid.to_string(),
        name: format!("pod-{uid}"),
        namespace: "default".to_string(),
        hostname: format!("pod-{uid}"),
        namespaces: NamespaceOptions::default(),
        containers: vec![c.resources],
        pids_limit: Some(256),
        shm_size_bytes: 16 << 20,
        dns: Default::default(),
        host_aliases: vec![],
        sysctls: Default::default(),
        pod_ip: None,
    };
    env.rt.run_pod_sandbox(&p).unwrap();
    let rec = env.rt.run_container(uid, &c).unwrap();
    let s = env.rt.wait_started(&rec, Duration::from_secs(10)).unwrap();
    assert!(matches!(s, ContainerState::Running { .. }), "{s:?}");
    rec
}

fn read_all(r: Option<Box<dyn Read + Send>>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

#[test]
fn stdin_cat_tty_and_exit_codes() {
    if !herd_integration::root_or_skip("exec_stream", "runc, cgroups, mounts") {
        return;
    }
    let env = Env::new("s");
    let rec = start(&env, "exec-stream-1");

    // Pipes: stdin → cat → stdout, EOF on dropping stdin.
    let mut s = env
        .rt
        .exec_streaming(&rec, vec!["cat".into()], false, true)
        .unwrap();
    let out = read_all(s.stdout.take());
    let err = read_all(s.stderr.take());
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"hello through cat\n").unwrap();
    drop(stdin);
    assert_eq!(s.wait().unwrap(), 0);
    assert_eq!(out.join().unwrap(), b"hello through cat\n");
    assert_eq!(err.join().unwrap(), b"");

    // Exit code and stderr.
    let mut s = env
        .rt
        .exec_streaming(
            &rec,
            vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            false,
            false,
        )
        .unwrap();
    assert!(s.stdin.is_none());
    let err = read_all(s.stderr.take());
    let out = read_all(s.stdout.take());
    assert_eq!(s.wait().unwrap(), 3);
    assert_eq!(err.join().unwrap(), b"oops\n");
    assert_eq!(out.join().unwrap(), b"");

    // A tty: one stream, a pts device, resize works.
    let mut s = env
        .rt
        .exec_streaming(&rec, vec!["tty".into()], true, false)
        .unwrap();
    assert!(s.stderr.is_none());
    let resizer = s.take_resizer().unwrap();
    let _ = resizer.resize(100, 40);
    let out = read_all(s.stdout.take());
    assert_eq!(s.wait().unwrap(), 0);
    let text = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    assert!(text.trim().starts_with("/dev/pts/"), "{text:?}");

    // A tty with stdin: the terminal echoes and the shell sees the size.
    let mut s = env
        .rt
        .exec_streaming(&rec, vec!["sh".into()], true, true)
        .unwrap();
    let out = read_all(s.stdout.take());
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"echo marker-$((6*7)); exit 4\n").unwrap();
    let code = s.wait().unwrap();
    drop(stdin);
    assert_eq!(code, 4);
    let text = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    assert!(text.contains("marker-42"), "{text:?}");

    // A missing binary: runc reports it, no hang.
    let s = env
        .rt
        .exec_streaming(&rec, vec!["/no/such/binary".into()], false, false)
        .unwrap();
    assert_ne!(s.wait().unwrap(), 0);
}
