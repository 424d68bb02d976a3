//! `ContainerdImages` against a real containerd 1.6 (Debian's), started by
//! each test under its own temp dir and namespace
//! (`herd_integration::containerd::Containerd`), with images built by the
//! project and checked with `ctr`, containerd's own client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_images::{ImageError, ImportOptions, PullEvent, PullOptions};
use herd_integration::containerd::{Containerd, containerd_or_skip};
use herd_integration::{
    Compression, ImageOpts, Platform, Registry, RegistryOpts, hostile, write_docker_archive,
    write_oci_archive, write_oci_layout,
};
use herd_runtime::containerd::images::ContainerdImages;
use herd_runtime::containerd::{Client, ContainerdConfig, ContainerdError};

struct Env {
    images: ContainerdImages,
    tmp: tempfile::TempDir,
    // Last: dropped after the client's users.
    ctrd: Containerd,
}

impl Env {
    /// None (skipped) without root or containerd.
    fn new(test: &str) -> Option<Env> {
        if !herd_integration::root_or_skip(test, "runs containerd") || !containerd_or_skip(test) {
            return None;
        }
        let ctrd = Containerd::start(test).unwrap();
        let client = Client::connect(ContainerdConfig::new(&ctrd.socket, &ctrd.namespace))
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", ctrd.log_tail(3000)));
        let tmp = tempfile::tempdir().unwrap();
        let images = ContainerdImages::new(client, &tmp.path().join("staging")).unwrap();
        Some(Env { images, tmp, ctrd })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn assert_staging_empty(&self) {
        let s = self.images.staging();
        assert!(s.list().unwrap().is_empty(), "staging images left");
        assert!(s.blobs().list().unwrap().is_empty(), "staging blobs left");
        let snaps: Vec<_> = std::fs::read_dir(s.root().join("snapshots"))
            .unwrap()
            .collect();
        assert!(snaps.is_empty(), "staging snapshots left: {snaps:?}");
    }

    /// Runs containerd's garbage collector now: deleting a lease with
    /// `--sync` waits for a collection.
    fn force_gc(&self) {
        let out = self.ctrd.ctr_ok(&["leases", "create"]).unwrap();
        let id = out.split_whitespace().next().unwrap().to_string();
        self.ctrd
            .ctr_ok(&["leases", "delete", "--sync", &id])
            .unwrap();
    }

    /// Polls `ctr <what> ls -q` until `pred` holds (10 s).
    fn wait_ls(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.ctrd.ls(what).unwrap();
            if pred(&v) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn gzip(src: &Path, dst: &Path) {
    let out = std::process::Command::new("gzip")
        .arg("-c")
        .arg(src)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(dst, out.stdout).unwrap();
}

#[test]
fn imports_layout_docker_and_gzip_archives() {
    let Some(env) = Env::new("ctrd-import") else {
        return;
    };
    let layout = env.path("layout");
    let built = write_oci_layout(&layout, &ImageOpts::new("herd.test/layout:latest")).unwrap();
    let docker = env.path("docker.tar");
    write_docker_archive(&docker, &ImageOpts::new("herd.test/docker:v1")).unwrap();
    let oci_tar = env.path("oci.tar");
    let mut plain_opts = ImageOpts::new("herd.test/gz:latest");
    plain_opts.compression = Compression::None;
    write_oci_archive(&oci_tar, &plain_opts).unwrap();
    let gz = env.path("oci.tar.gz");
    gzip(&oci_tar, &gz);

    let t = Instant::now();
    let mut names = vec![];
    for p in [&layout, &docker, &gz] {
        let recs = env.images.import(p, &ImportOptions::default()).unwrap();
        assert_eq!(recs.len(), 1, "{}: {recs:?}", p.display());
        names.push(recs[0].name.clone());
        env.assert_staging_empty();
    }
    let cold = t.elapsed();
    assert_eq!(
        names,
        [
            "herd.test/layout:latest",
            "herd.test/docker:v1",
            "herd.test/gz:latest"
        ]
    );
    let mut ctr_names = env.ctrd.ls("images").unwrap();
    ctr_names.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(ctr_names, want, "ctr images ls");
    assert_eq!(
        env.images
            .labels(&names[0])
            .unwrap()
            .get("herd.io/owner")
            .map(String::as_str),
        Some("herd")
    );

    // The unpacked snapshot is there under the top chain ID, and ctr runs
    // the image from it.
    let rec = env.images.resolve(&names[0]).unwrap();
    assert_eq!(rec.manifest.to_string(), built.manifest.digest);
    assert_eq!(rec.config.to_string(), built.manifest.config_digest);
    let top = env.images.ensure_unpacked(&rec).unwrap();
    assert_eq!(top, rec.chain_ids().last().unwrap().to_string());
    assert!(env.ctrd.ls("snapshots").unwrap().contains(&top));
    let out = env
        .ctrd
        .ctr_ok(&[
            "run",
            "--rm",
            &names[0],
            "run-once",
            "/bin/echo",
            "hello-ctrd",
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", env.ctrd.log_tail(3000)));
    assert!(out.contains("hello-ctrd"), "{out}");

    // Re-import: same records, no new content, fast.
    let content = env.ctrd.ls("content").unwrap();
    let t = Instant::now();
    let again = env
        .images
        .import(&layout, &ImportOptions::default())
        .unwrap();
    let warm = t.elapsed();
    assert_eq!(again[0].manifest, rec.manifest);
    assert_eq!(env.ctrd.ls("content").unwrap(), content);
    env.assert_staging_empty();
    eprintln!("3 cold imports {cold:?}, re-import {warm:?}");

    // list / resolve / image_config
    let list = env.images.list().unwrap();
    assert_eq!(
        list.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        want
    );
    assert!(list.iter().all(|r| r.platform == "linux/amd64"));
    let by_id = env.images.resolve(&rec.config.hex()[..12]).unwrap();
    assert_eq!(by_id.config, rec.config);
    let by_digest = env.images.resolve(&rec.manifest.to_string()).unwrap();
    assert_eq!(by_digest.manifest, rec.manifest);
    assert!(matches!(
        env.images.resolve("herd.test/nope:latest"),
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(
        env.images.resolve("ffffffffffff"),
        Err(ImageError::NotFound(_))
    ));
    let (crec, cfg) = env.images.image_config(&names[1]).unwrap();
    assert_eq!(crec.name, names[1]);
    let want_cfg: oci_spec::image::ImageConfiguration = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(built.manifest.config_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let (_, layout_cfg) = env.images.image_config(&names[0]).unwrap();
    assert_eq!(layout_cfg, want_cfg);
    assert!(cfg.config().is_some(), "docker config has a config section");
}

#[test]
fn imports_zstd_layers_and_multi_platform_indexes() {
    let Some(env) = Env::new("ctrd-formats") else {
        return;
    };
    let zstd = env.path("zstd");
    let mut opts = ImageOpts::new("herd.test/zstd:latest");
    opts.compression = Compression::Zstd;
    write_oci_layout(&zstd, &opts).unwrap();
    let multi = env.path("multi");
    let mut opts = ImageOpts::new("herd.test/multi:latest");
    opts.platforms = vec![Platform::arm64(), Platform::amd64()];
    let built = write_oci_layout(&multi, &opts).unwrap();

    let z = env
        .images
        .import(&zstd, &ImportOptions::default())
        .unwrap()
        .remove(0);
    assert!(
        z.layers.iter().all(|l| l.media_type.ends_with("+zstd")),
        "{:?}",
        z.layers
    );
    let out = env
        .ctrd
        .ctr_ok(&["run", "--rm", &z.name, "zstd-run", "/bin/echo", "zstd-ok"])
        .unwrap();
    assert!(out.contains("zstd-ok"), "{out}");

    // The host's manifest of the index becomes the image's target.
    let m = env
        .images
        .import(&multi, &ImportOptions::default())
        .unwrap()
        .remove(0);
    assert_eq!(m.platform, "linux/amd64");
    assert_eq!(m.manifest.to_string(), built.platforms[1].digest);
    assert_eq!(env.images.resolve(&m.name).unwrap().manifest, m.manifest);
    env.assert_staging_empty();
}

#[test]
fn concurrent_imports_share_the_staging_store() {
    let Some(env) = Env::new("ctrd-concurrent") else {
        return;
    };
    let layouts: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = env.path(&format!("layout{i}"));
            let mut opts = ImageOpts::new(&format!("herd.test/c{i}:latest"));
            // Different layer bytes per image: nothing shared but the names.
            opts.compression = [Compression::Gzip, Compression::None, Compression::Zstd][i];
            write_oci_layout(&p, &opts).unwrap();
            p
        })
        .collect();
    // A second instance on the same staging root shares the use count.
    let other = ContainerdImages::new(env.images.client().clone(), &env.path("staging")).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = layouts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let images = if i == 1 { &other } else { &env.images };
                s.spawn(move || images.import(p, &ImportOptions::default()).unwrap())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().len(), 1);
        }
    });
    assert_eq!(env.images.list().unwrap().len(), 3);
    env.assert_staging_empty();
}

#[test]
fn remove_is_refused_in_use_then_content_is_collected() {
    let Some(env) = Env::new("ctrd-remove") else {
        return;
    };
    let layout = env.path("layout");
    write_oci_layout(&layout, &ImageOpts::new("herd.test/rm:latest")).unwrap();
    let rec = env
        .images
        .import(&layout, &ImportOptions::default())
        .unwrap()
        .remove(0);
    env.ctrd
        .ctr_ok(&["containers", "create", &rec.name, "user1"])
        .unwrap();
    match env.images.remove(&rec.name) {
        Err(ImageError::InUse { containers, .. }) => assert_eq!(containers, "user1"),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_eq!(
        env.ctrd.ls("images").unwrap(),
        std::slice::from_ref(&rec.name)
    );
    env.ctrd.ctr_ok(&["containers", "rm", "user1"]).unwrap();

    let removed = env.images.remove(&rec.name).unwrap();
    assert_eq!(removed.manifest, rec.manifest);
    assert!(env.images.list().unwrap().is_empty());
    assert!(matches!(
        env.images.remove(&rec.name),
        Err(ImageError::NotFound(_))
    ));
    // containerd's collector frees content and snapshots.
    env.force_gc();
    let content = env.wait_ls("content", |v| v.is_empty());
    assert!(content.is_empty(), "content left: {content:?}");
    let snaps = env.wait_ls("snapshots", |v| v.is_empty());
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
}

#[test]
fn ensure_unpacked_restores_removed_snapshots() {
    let Some(env) = Env::new("ctrd-unpack") else {
        return;
    };
    let layout = env.path("layout");
    write_oci_layout(&layout, &ImageOpts::new("herd.test/unpack:latest")).unwrap();
    let rec = env
        .images
        .import(&layout, &ImportOptions::default())
        .unwrap()
        .remove(0);
    let chains: Vec<String> = rec.chain_ids().iter().map(ToString::to_string).collect();
    assert!(chains.len() >= 2, "the test image has two layers");
    // Top only, then the whole stack.
    env.ctrd
        .ctr_ok(&["snapshots", "rm", chains.last().unwrap()])
        .unwrap();
    assert!(
        !env.ctrd
            .ls("snapshots")
            .unwrap()
            .contains(chains.last().unwrap())
    );
    assert_eq!(
        &env.images.ensure_unpacked(&rec).unwrap(),
        chains.last().unwrap()
    );
    // Removing the top leaves the rest unreferenced: containerd's collector
    // may take them first.
    for c in chains.iter().rev() {
        let out = env.ctrd.ctr(&["snapshots", "rm", c]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() || err.contains("not found"), "{err}");
    }
    let left = env.wait_ls("snapshots", |v| v.is_empty());
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        &env.images.ensure_unpacked(&rec).unwrap(),
        chains.last().unwrap()
    );
    let snaps = env.ctrd.ls("snapshots").unwrap();
    for c in &chains {
        assert!(snaps.contains(c), "{c} not in {snaps:?}");
    }
    // Still runnable.
    let out = env
        .ctrd
        .ctr_ok(&[
            "run",
            "--rm",
            &rec.name,
            "after-unpack",
            "/bin/echo",
            "ok-again",
        ])
        .unwrap();
    assert!(out.contains("ok-again"), "{out}");
}

#[test]
fn hostile_layers_are_refused_and_leave_nothing() {
    let Some(env) = Env::new("ctrd-hostile") else {
        return;
    };
    for (name, h) in hostile::all() {
        if name == "char_device" {
            continue; // legal in layers (see the image store tests)
        }
        let layout = env.path(&format!("hostile-{name}"));
        herd_integration::write_image_with_layer(
            &layout,
            &format!("herd.test/{}:latest", name.replace('_', "-")),
            &h.bytes,
            Compression::Gzip,
        )
        .unwrap();
        let err = env
            .images
            .import(&layout, &ImportOptions::default())
            .expect_err(name);
        eprintln!("{name}: refused: {err}");
        env.assert_staging_empty();
    }
    assert!(env.ctrd.ls("images").unwrap().is_empty());
    assert!(env.ctrd.ls("content").unwrap().is_empty());
    assert!(env.ctrd.ls("snapshots").unwrap().is_empty());
}

#[test]
fn pulls_from_a_local_registry_and_skips_known_manifests() {
    let Some(env) = Env::new("ctrd-pull") else {
        return;
    };
    let layout = env.path("layout");
    write_oci_layout(&layout, &ImageOpts::new("herd.test/pull:latest")).unwrap();
    let reg = Registry::start(RegistryOpts::default()).unwrap();
    reg.push_oci_layout(&layout, "herd/busybox", "latest")
        .unwrap();
    let reference = format!("{}/herd/busybox:latest", reg.addr());
    let opts = PullOptions {
        plain_http: true,
        ..PullOptions::default()
    };
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let ev = events.clone();
    let progress: herd_images::ProgressFn = Arc::new(move |e: PullEvent| {
        let tag = match e {
            PullEvent::Resolved { .. } => "resolved",
            PullEvent::LayerExists(_) => "exists",
            PullEvent::LayerProgress(..) => "progress",
            PullEvent::LayerDownloaded(_) => "downloaded",
            PullEvent::LayerUnpacked(_) => "unpacked",
        };
        ev.lock().unwrap().push(tag.into());
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rec = rt
        .block_on(env.images.pull(&reference, &opts, progress.clone()))
        .unwrap();
    assert_eq!(rec.name, reference);
    assert!(events.lock().unwrap().iter().any(|e| e == "downloaded"));
    assert_eq!(
        env.ctrd.ls("images").unwrap(),
        std::slice::from_ref(&reference)
    );
    env.assert_staging_empty();
    let out = env
        .ctrd
        .ctr_ok(&[
            "run",
            "--rm",
            &reference,
            "pulled",
            "/bin/echo",
            "pulled-ok",
        ])
        .unwrap();
    assert!(out.contains("pulled-ok"), "{out}");

    // Again: the registry's manifest is the one containerd has; nothing moves.
    events.lock().unwrap().clear();
    let again = rt
        .block_on(env.images.pull(&reference, &opts, progress.clone()))
        .unwrap();
    assert_eq!(again.manifest, rec.manifest);
    assert_eq!(*events.lock().unwrap(), ["resolved"]);
    env.assert_staging_empty();

    // A missing tag stays a pull error, and leaves nothing staged.
    let missing = rt
        .block_on(env.images.pull(
            &format!("{}/herd/busybox:nope", reg.addr()),
            &opts,
            progress,
        ))
        .unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
    env.assert_staging_empty();
}

#[test]
fn connect_errors_are_clear() {
    let Some(env) = Env::new("ctrd-connect") else {
        return;
    };
    let missing = env.path("nope.sock");
    match Client::connect(ContainerdConfig::new(&missing, "herd-x")) {
        Err(ContainerdError::SocketMissing(p)) => assert_eq!(p, missing),
        other => panic!("expected SocketMissing, got {other:?}"),
    }
    // A namespace another client filled (here: ctr importing an image).
    let foreign = format!("{}-foreign", env.ctrd.namespace);
    let archive = env.path("busybox.tar");
    write_oci_archive(&archive, &ImageOpts::new("herd.test/foreign:latest")).unwrap();
    let out = std::process::Command::new(herd_integration::containerd::CTR)
        .arg("-a")
        .arg(&env.ctrd.socket)
        .args(["-n", &foreign, "images", "import", "--no-unpack"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match Client::connect(ContainerdConfig::new(&env.ctrd.socket, foreign.as_str())) {
        Err(e @ ContainerdError::ForeignNamespace { .. }) => {
            assert!(e.to_string().contains(&foreign), "{e}");
        }
        other => panic!("expected ForeignNamespace, got {other:?}"),
    }
    // herd's own namespace connects again (it carries herd's label).
    Client::connect(ContainerdConfig::new(
        &env.ctrd.socket,
        env.ctrd.namespace.as_str(),
    ))
    .unwrap();
}

#[test]
fn fresh_namespace_is_claimed() {
    let test = "fresh_namespace_is_claimed";
    if !herd_integration::root_or_skip(test, "runs containerd") || !containerd_or_skip(test) {
        return;
    }
    let ctrd = Containerd::start("ctrd-fresh").unwrap();
    let client = Client::connect(ContainerdConfig::new(&ctrd.socket, ctrd.namespace.as_str()))
        .unwrap_or_else(|e| panic!("connect to a fresh namespace: {e}"));
    assert_eq!(client.namespace(), ctrd.namespace);
    let ls = ctrd.ctr_ok(&["namespaces", "ls"]).unwrap();
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&ctrd.namespace) && l.contains("herd.io/owner=herd")),
        "{ls}"
    );
}
