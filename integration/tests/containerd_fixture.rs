//! The containerd fixture itself: it starts, answers, survives a restart
//! with its tasks, and its drop leaves nothing behind (temp dir, shims,
//! runc state, cgroups).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use herd_integration::containerd::{Containerd, RUN_CONTAINERD, containerd_or_skip, mounts_under};
use herd_integration::{ImageOpts, write_oci_archive};

#[test]
fn fixture_start_restart_drop_leaves_nothing() {
    if !herd_integration::root_or_skip(
        "fixture_start_restart_drop_leaves_nothing",
        "runs containerd",
    ) || !containerd_or_skip("fixture_start_restart_drop_leaves_nothing")
    {
        return;
    }
    let t0 = Instant::now();
    let mut c = Containerd::start("fixture").unwrap();
    assert!(c.namespace.starts_with("herd-fixture-"), "{}", c.namespace);
    assert!(c.socket.starts_with(&c.dir));
    let startup = t0.elapsed();

    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("busybox.tar");
    write_oci_archive(&archive, &ImageOpts::new("herd.test/fixture:latest")).unwrap();
    c.ctr_ok(&["images", "import", archive.to_str().unwrap()])
        .unwrap();
    let images = c.ls("images").unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    let out = c
        .ctr_ok(&[
            "run",
            "--rm",
            &images[0],
            "hello",
            "/bin/echo",
            "hello-from-ctr",
        ])
        .unwrap();
    assert!(out.contains("hello-from-ctr"), "{out}");
    c.ctr_ok(&["run", "-d", &images[0], "sleeper", "/bin/sleep", "1000"])
        .unwrap();
    let shims = c.shims();
    assert_eq!(shims.len(), 1, "one shim for the sleeper: {shims:?}");
    assert!(
        !mounts_under(&c.dir).is_empty(),
        "the task's rootfs is mounted under the dir"
    );

    // containerd dies; the shim and its task stay; a restart finds the task.
    c.kill9();
    assert!(c.pid().is_none());
    assert!(
        Path::new(&format!("/proc/{}", shims[0])).exists(),
        "shim survives containerd"
    );
    c.restart().unwrap();
    let tasks = c.ctr_ok(&["tasks", "ls"]).unwrap();
    assert!(
        tasks.contains("sleeper") && tasks.contains("RUNNING"),
        "{tasks}"
    );
    c.stop();
    c.stop(); // idempotent
    c.restart().unwrap();

    let dir = c.dir.clone();
    let ns = c.namespace.clone();
    drop(c);
    assert!(!dir.exists(), "temp dir removed");
    assert!(mounts_under(&dir).is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{}", shims[0])).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !Path::new(&format!("/proc/{}", shims[0])).exists(),
        "shim killed"
    );
    assert!(!Path::new(RUN_CONTAINERD).join("runc").join(&ns).exists());
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        assert!(
            !ctl.path().join(&ns).exists(),
            "cgroup {} left",
            ctl.path().join(&ns).display()
        );
    }
    eprintln!(
        "containerd fixture: ready in {startup:?}, whole test {:?}",
        t0.elapsed()
    );
}
