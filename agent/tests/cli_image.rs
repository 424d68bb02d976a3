//! The `herd image` command line against real archives and a real local
//! registry (root: it mounts overlays; skipped with a message otherwise,
//! failing under CI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use herd_integration::{ImageOpts, Registry, RegistryOpts};

const REF: &str = "herd.test/busybox:latest";

fn herd(root: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "herd failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fail(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "herd should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn import_ls_mount_rm_prune_and_pull_with_password_stdin() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root, and CI must run it"
        );
        eprintln!("SKIP: needs root (overlay mounts)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let archive = dir.path().join("busybox.docker.tar");
    herd_integration::write_docker_archive(&archive, &ImageOpts::new(REF)).unwrap();

    let out = ok(&herd(
        &root,
        &["image", "import", archive.to_str().unwrap()],
        None,
    ));
    assert!(out.contains(&format!("imported {REF}")), "{out}");
    let ls = ok(&herd(&root, &["image", "ls"], None));
    assert!(ls.lines().next().unwrap().starts_with("IMAGE"), "{ls}");
    assert!(ls.contains(REF) && ls.contains("linux/amd64"), "{ls}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&herd(&root, &["image", "ls", "-o", "json"], None))).unwrap();
    assert_eq!(json[0]["name"], REF);

    let target = dir.path().join("rootfs");
    ok(&herd(
        &root,
        &[
            "image",
            "mount",
            REF,
            target.to_str().unwrap(),
            "--id",
            "c1",
        ],
        None,
    ));
    assert!(target.join("bin/busybox").is_file());
    let err = fail(&herd(&root, &["image", "rm", REF], None));
    assert!(err.contains("in use") && err.contains("c1"), "{err}");
    ok(&herd(&root, &["image", "unmount", "c1"], None));
    ok(&herd(&root, &["image", "rm", REF], None));
    let pruned = ok(&herd(&root, &["image", "prune"], None));
    assert!(pruned.contains("2 snapshots"), "{pruned}");

    // bad input: a file that is not an image, a missing path, an unknown image
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let err = fail(&herd(
        &root,
        &["image", "import", junk.to_str().unwrap()],
        None,
    ));
    assert!(err.contains("junk.tar"), "{err}");
    fail(&herd(
        &root,
        &["image", "import", "/nonexistent/image"],
        None,
    ));
    let err = fail(&herd(&root, &["image", "rm", "nope:latest"], None));
    assert!(err.contains("not found"), "{err}");
    let err = fail(&herd(
        &root,
        &["image", "pull", "127.0.0.1:1/x:y", "--username", "u"],
        None,
    ));
    assert!(err.contains("--password-stdin"), "{err}");

    // pull with basic auth, password on stdin
    let layout = dir.path().join("layout");
    herd_integration::write_oci_layout(&layout, &ImageOpts::new(REF)).unwrap();
    let reg = Registry::start(RegistryOpts {
        basic_auth: Some(("herd".into(), "pw".into())),
        binary: None,
    })
    .unwrap();
    reg.push_oci_layout(&layout, "cli/busybox", "latest")
        .unwrap();
    let r = format!("{}/cli/busybox:latest", reg.addr());
    let err = fail(&herd(
        &root,
        &[
            "image",
            "pull",
            "--plain-http",
            &r,
            "-u",
            "herd",
            "--password-stdin",
        ],
        Some("bad\n"),
    ));
    assert!(err.contains("denied"), "{err}");
    let out = herd(
        &root,
        &[
            "image",
            "pull",
            "--plain-http",
            &r,
            "-u",
            "herd",
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    ok(&out);
    // not a terminal: quiet progress lines, one per step
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resolved sha256:")
            && stderr.contains("downloaded")
            && stderr.contains("unpacked"),
        "{stderr}"
    );
    assert!(ok(&herd(&root, &["image", "ls", "-q"], None)).contains(&r));
}
