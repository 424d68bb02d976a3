//! `herd image --containerd-address …` against a real containerd 1.6
//! started by the test (`herd_integration::containerd`), the real `herd`
//! binary, real archives and a real local registry: import, ls (table,
//! json, quiet), rm and pull act on containerd's store (checked with `ctr`
//! too); prune is refused; a missing socket and a foreign namespace give
//! readable errors and a non-zero exit. Root (containerd mounts
//! snapshots); skipped with a message otherwise, failing under CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use herd_integration::containerd::{Containerd, containerd_or_skip};
use herd_integration::{ImageOpts, Registry, RegistryOpts};

const REF: &str = "herd.test/busybox:latest";

/// `herd --root-dir ROOT image --containerd-address S --containerd-namespace
/// N ARGS…`.
fn herd(root: &Path, ctrd: &Containerd, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("--root-dir")
        .arg(root)
        .arg("image")
        .arg("--containerd-address")
        .arg(&ctrd.socket)
        .args(["--containerd-namespace", &ctrd.namespace])
        .args(args)
        .env_remove("HERD_CONTAINERD_ADDRESS")
        .env_remove("HERD_CONTAINERD_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
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

fn skip(test: &str) -> bool {
    !herd_integration::root_or_skip(test, "containerd mounts snapshots")
        || !containerd_or_skip(test)
}

#[test]
fn import_ls_rm_and_pull_act_on_containerds_store() {
    if skip("import_ls_rm_and_pull_act_on_containerds_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let ctrd = Containerd::start("cli-image").unwrap();
    let layout = dir.path().join("layout");
    herd_integration::write_oci_layout(&layout, &ImageOpts::new(REF)).unwrap();

    let out = ok(&herd(&root, &ctrd, &["import", layout.to_str().unwrap()]));
    assert!(out.contains(&format!("imported {REF}")), "{out}");
    // containerd itself has it, and herd's own store does not.
    assert!(ctrd.ls("images").unwrap().contains(&REF.to_string()));
    assert!(!root.join("images").exists());

    let ls = ok(&herd(&root, &ctrd, &["ls"]));
    let mut lines = ls.lines();
    assert!(lines.next().unwrap().starts_with("IMAGE"), "{ls}");
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with(REF) && row.contains("linux/amd64"), "{ls}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&herd(&root, &ctrd, &["ls", "-o", "json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["name"], REF);
    assert!(
        json[0]["manifest"].as_str().unwrap().starts_with("sha256:"),
        "{json}"
    );
    // The flags also come from the environment.
    let quiet = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("--root-dir")
        .arg(&root)
        .args(["image", "ls", "-q"])
        .env("HERD_CONTAINERD_ADDRESS", &ctrd.socket)
        .env("HERD_CONTAINERD_NAMESPACE", &ctrd.namespace)
        .output()
        .unwrap();
    assert_eq!(ok(&quiet).trim(), REF);

    let err = fail(&herd(&root, &ctrd, &["prune"]));
    assert!(
        err.contains("not available with --containerd-address"),
        "{err}"
    );
    let err = fail(&herd(&root, &ctrd, &["rm", "nope:latest"]));
    assert!(err.contains("not found"), "{err}");

    let out = ok(&herd(&root, &ctrd, &["rm", REF]));
    assert!(out.contains(&format!("removed {REF}")), "{out}");
    assert_eq!(ok(&herd(&root, &ctrd, &["ls", "-q"])).trim(), "");
    assert!(!ctrd.ls("images").unwrap().contains(&REF.to_string()));

    // pull from a local registry into containerd
    let reg = Registry::start(RegistryOpts::default()).unwrap();
    reg.push_oci_layout(&layout, "cli/busybox", "latest")
        .unwrap();
    let r = format!("{}/cli/busybox:latest", reg.addr());
    let out = herd(&root, &ctrd, &["pull", "--plain-http", &r]);
    assert!(ok(&out).contains(&format!("pulled {r}")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resolved sha256:"), "{stderr}");
    assert!(ok(&herd(&root, &ctrd, &["ls", "-q"])).contains(&r));
    assert!(ctrd.ls("images").unwrap().contains(&r));
}

#[test]
fn missing_socket_and_foreign_namespace_are_clear_errors() {
    if skip("missing_socket_and_foreign_namespace_are_clear_errors") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let missing = dir.path().join("no-containerd.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("--root-dir")
        .arg(&root)
        .args(["image", "ls", "--containerd-address"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = fail(&out);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));

    // Another client's images in the namespace, without herd's label.
    let ctrd = Containerd::start("cli-foreign").unwrap();
    let archive = dir.path().join("busybox.docker.tar");
    herd_integration::write_docker_archive(&archive, &ImageOpts::new(REF)).unwrap();
    ctrd.ctr_ok(&["images", "import", archive.to_str().unwrap()])
        .unwrap();
    let out = herd(&root, &ctrd, &["ls"]);
    let err = fail(&out);
    assert!(
        err.contains(&ctrd.namespace) && err.contains("in use by another client"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    // A namespace of its own works next to it.
    let own = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("--root-dir")
        .arg(&root)
        .arg("image")
        .arg("--containerd-address")
        .arg(&ctrd.socket)
        .args([
            "--containerd-namespace",
            &format!("{}-herd", ctrd.namespace),
        ])
        .args(["ls", "-q"])
        .output()
        .unwrap();
    assert_eq!(ok(&own).trim(), "");
}
