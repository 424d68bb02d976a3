//! End-to-end tests of the image store: real archives built from Debian's
//! busybox-static, real overlayfs mounts, a real `docker-registry` on
//! 127.0.0.1. Needs root (mknod, trusted xattrs, mount); without root each
//! test says so and is skipped, except under CI (`CI` set), where that is a
//! failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use herd_images::gc::{DiskUsage, GcPolicy};
use herd_images::{Credentials, ImageError, ImageStore, ImportOptions, PullOptions};
use herd_integration::{Compression, Corruption, ImageOpts, Registry, RegistryOpts, hostile};

const REF: &str = "herd.test/busybox:latest";

fn root_or_skip(test: &str) -> bool {
    herd_integration::root_or_skip(test, "mount, mknod, trusted xattrs")
}

struct Env {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        Self { dir, store }
    }
    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (id, _) in self.store.mounts().unwrap_or_default() {
            let _ = self.store.unmount_rootfs(&id);
        }
    }
}

/// Mounts `image`, checks the busybox test image's content, including that
/// layer 2's whiteouts hide layer 1's files in the merged view.
fn check_rootfs(env: &Env, image: &str, id: &str) {
    let target = env.path(&format!("rootfs-{id}"));
    env.store.mount_rootfs(id, image, &target).unwrap();
    assert_eq!(
        fs::read_to_string(target.join("var/www/index.html")).unwrap(),
        "hello from herd\n"
    );
    assert!(
        fs::symlink_metadata(target.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(target.join("bin/busybox").is_file());
    // whiteout: etc/deleteme is in layer 1 and deleted by layer 2
    assert!(
        env.store
            .snapshot_stack(&env.store.mounts().unwrap()[0].1.top.clone().unwrap())
            .unwrap()
            .iter()
            .any(|s| s.join("etc/deleteme").exists()),
        "lower layer must still hold the file"
    );
    assert!(
        !target.join("etc/deleteme").exists(),
        "whiteout must hide etc/deleteme"
    );
    // opaque dir: old.txt from layer 1 hidden, new.txt from layer 2 visible
    assert!(!target.join("opaque/old.txt").exists());
    assert!(target.join("opaque/new.txt").exists());
    // hard link, symlink, setuid, xattr, sticky /tmp
    let a = fs::metadata(target.join("data/file.txt")).unwrap();
    let b = fs::metadata(target.join("data/hardlink.txt")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        fs::read_link(target.join("data/link")).unwrap(),
        Path::new("file.txt")
    );
    assert_eq!(
        fs::metadata(target.join("data/suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(target.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    let x = rustix::fs::getxattr(
        target.join("data/xattr.txt").as_path(),
        "user.herd",
        &mut [0u8; 16],
    )
    .unwrap();
    assert_eq!(x, 4);
    // the container's writes go to its upper dir, never to the snapshot
    fs::write(target.join("etc/new-file"), b"x").unwrap();
    for s in env
        .store
        .snapshot_stack(&env.store.mounts().unwrap()[0].1.top.clone().unwrap())
        .unwrap()
    {
        assert!(!s.join("etc/new-file").exists());
    }
    env.store.unmount_rootfs(id).unwrap();
    assert!(!is_mountpoint(&target));
}

fn is_mountpoint(p: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

#[test]
fn imports_oci_layout_archive_zstd_and_docker_archive() {
    if !root_or_skip("imports_oci_layout_archive_zstd_and_docker_archive") {
        return;
    }
    let env = Env::new();
    let opts = ImageOpts::new(REF);
    type Build<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Build)> = vec![
        (
            "layout",
            Box::new(|p: &Path| drop(herd_integration::write_oci_layout(p, &opts).unwrap())),
        ),
        (
            "oci-archive.tar",
            Box::new(|p: &Path| drop(herd_integration::write_oci_archive(p, &opts).unwrap())),
        ),
        (
            "zstd-layout",
            Box::new(|p: &Path| {
                let mut o = ImageOpts::new(REF);
                o.compression = Compression::Zstd;
                drop(herd_integration::write_oci_layout(p, &o).unwrap())
            }),
        ),
        (
            "docker.tar",
            Box::new(|p: &Path| drop(herd_integration::write_docker_archive(p, &opts).unwrap())),
        ),
    ];
    for (name, build) in cases {
        let src = env.path(name);
        build(&src);
        let imported = env
            .store
            .import(&src, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(imported.len(), 1, "{name}");
        assert_eq!(imported[0].name, REF);
        assert_eq!(imported[0].platform, "linux/amd64");
        assert_eq!(imported[0].layers.len(), 2);
        check_rootfs(&env, REF, &format!("c-{}", name.replace('.', "-")));
        // every blob the image names is in the store and verifies
        let rec = env.store.resolve(REF).unwrap();
        for d in rec.blobs() {
            env.store.blobs().read_verified(d, 1 << 30).unwrap();
        }
    }
    // same uncompressed layers whatever the compression: snapshots are shared
    let n_snapshots = fs::read_dir(env.store.root().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(n_snapshots, 2);
}

#[test]
fn imports_all_tags_and_selects_platform() {
    if !root_or_skip("imports_all_tags_and_selects_platform") {
        return;
    }
    let env = Env::new();
    let tags = env.path("tags");
    herd_integration::write_tags_layout(
        &tags,
        &["herd.test/busybox:latest", "herd.test/busybox:v1"],
        &ImageOpts::new(REF),
    )
    .unwrap();
    let got = env.store.import(&tags, &ImportOptions::default()).unwrap();
    let mut names: Vec<_> = got.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["herd.test/busybox:latest", "herd.test/busybox:v1"]);

    let multi = env.path("multi");
    let mut o = ImageOpts::new("herd.test/multi:latest");
    o.platforms = vec![
        herd_integration::Platform::amd64(),
        herd_integration::Platform::arm64(),
    ];
    herd_integration::write_oci_layout(&multi, &o).unwrap();
    let host = env.store.import(&multi, &ImportOptions::default()).unwrap();
    assert_eq!(host[0].platform, "linux/amd64");
    assert!(host[0].index.is_some());
    let arm = env
        .store
        .import(
            &multi,
            &ImportOptions {
                platform: Some("linux/arm64".parse().unwrap()),
                base_name: None,
            },
        )
        .unwrap();
    assert!(
        arm[0].platform.starts_with("linux/arm64"),
        "{}",
        arm[0].platform
    );
    let err = env
        .store
        .import(
            &multi,
            &ImportOptions {
                platform: Some("linux/s390x".parse().unwrap()),
                base_name: None,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("linux/s390x"), "{err}");
}

#[test]
fn pulls_from_registry_with_and_without_basic_auth() {
    if !root_or_skip("pulls_from_registry_with_and_without_basic_auth") {
        return;
    }
    let env = Env::new();
    let layout = env.path("layout");
    herd_integration::write_oci_layout(&layout, &ImageOpts::new(REF)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let progress: herd_images::ProgressFn = std::sync::Arc::new(|_| {});

    // anonymous
    let reg = Registry::start(RegistryOpts::default()).unwrap();
    reg.push_oci_layout(&layout, "herd/busybox", "latest")
        .unwrap();
    let opts = PullOptions {
        plain_http: true,
        ..PullOptions::default()
    };
    let r = format!("{}/herd/busybox:latest", reg.addr());
    let rec = rt
        .block_on(env.store.pull(&r, &opts, progress.clone()))
        .unwrap();
    assert_eq!(rec.name, r);
    check_rootfs(&env, &r, "pulled");
    // pulling again downloads nothing new and gives the same image
    let again = rt
        .block_on(env.store.pull(&r, &opts, progress.clone()))
        .unwrap();
    assert_eq!(again.manifest, rec.manifest);
    // by digest
    let by_digest = format!("{}/herd/busybox@{}", reg.addr(), rec.manifest);
    rt.block_on(env.store.pull(&by_digest, &opts, progress.clone()))
        .unwrap();
    // a tag that does not exist
    let missing = rt
        .block_on(env.store.pull(
            &format!("{}/herd/busybox:nope", reg.addr()),
            &opts,
            progress.clone(),
        ))
        .unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
    drop(reg);

    // basic auth (htpasswd)
    let reg = Registry::start(RegistryOpts {
        basic_auth: Some(("herd".into(), "s3cret".into())),
        binary: None,
    })
    .unwrap();
    reg.push_oci_layout(&layout, "private/busybox", "latest")
        .unwrap();
    let r = format!("{}/private/busybox:latest", reg.addr());
    for creds in [
        Credentials::Anonymous,
        Credentials::Basic {
            username: "herd".into(),
            password: "wrong".into(),
        },
    ] {
        let o = PullOptions {
            plain_http: true,
            credentials: creds,
            ..PullOptions::default()
        };
        let err = rt
            .block_on(env.store.pull(&r, &o, progress.clone()))
            .unwrap_err();
        assert!(err.to_string().contains("denied access"), "{err}");
        assert!(
            env.store.resolve(&r).is_err(),
            "nothing registered after a refused pull"
        );
    }
    let o = PullOptions {
        plain_http: true,
        credentials: Credentials::Basic {
            username: "herd".into(),
            password: "s3cret".into(),
        },
        ..PullOptions::default()
    };
    rt.block_on(env.store.pull(&r, &o, progress)).unwrap();
    assert_eq!(env.store.resolve(&r).unwrap().manifest, rec.manifest);
}

#[test]
fn corrupt_manifests_are_refused_and_leave_nothing_referenced() {
    if !root_or_skip("corrupt_manifests_are_refused_and_leave_nothing_referenced") {
        return;
    }
    let env = Env::new();
    let layout = env.path("layout");
    herd_integration::write_oci_layout(&layout, &ImageOpts::new(REF)).unwrap();
    let reg = Registry::start(RegistryOpts::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = PullOptions {
        plain_http: true,
        ..PullOptions::default()
    };
    for (i, c) in [
        Corruption::LayerSizeMismatch,
        Corruption::DiffIdMismatch,
        Corruption::LayerNotGzip,
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("bad/img{i}");
        reg.push_manifest_with_bad_layer(&layout, &repo, "latest", c)
            .unwrap();
        let r = format!("{}/{repo}:latest", reg.addr());
        let err = rt
            .block_on(env.store.pull(&r, &opts, std::sync::Arc::new(|_| {})))
            .unwrap_err();
        let msg = err.to_string();
        match c {
            Corruption::LayerSizeMismatch => assert!(msg.contains("bytes"), "{c:?}: {msg}"),
            Corruption::DiffIdMismatch => assert!(
                matches!(err, ImageError::DiffIdMismatch { .. }),
                "{c:?}: {msg}"
            ),
            Corruption::LayerNotGzip => assert!(
                matches!(
                    err,
                    ImageError::Unpack { .. } | ImageError::DiffIdMismatch { .. }
                ),
                "{c:?}: {msg}"
            ),
        }
        assert!(
            env.store.list().unwrap().is_empty(),
            "{c:?}: nothing may be registered"
        );
    }
    // nothing is referenced: GC leaves an empty store
    env.store.collect_garbage().unwrap();
    assert!(env.store.blobs().list().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(env.store.root().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn hostile_layers_are_rejected_naming_the_entry() {
    if !root_or_skip("hostile_layers_are_rejected_naming_the_entry") {
        return;
    }
    let env = Env::new();
    let canary = env.path("outside");
    fs::create_dir_all(&canary).unwrap();
    for (name, h) in hostile::all() {
        let layout = env.path(&format!("hostile-{name}"));
        herd_integration::write_image_with_layer(
            &layout,
            &format!("herd.test/{}:latest", name.replace('_', "-")),
            &h.bytes,
            Compression::Gzip,
        )
        .unwrap();
        let res = env.store.import(&layout, &ImportOptions::default());
        if name == "char_device" {
            // Device nodes are legal in layers (docker and containerd accept
            // them); the device cgroup, not the unpacker, guards them.
            let rec = res.unwrap().remove(0);
            let stack = env
                .store
                .snapshot_stack(rec.chain_ids().last().unwrap())
                .unwrap();
            assert!(
                fs::symlink_metadata(stack[0].join("dev-mem"))
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
            env.store.remove(&rec.name).unwrap();
            continue;
        }
        let err = res.expect_err(name);
        let msg = err.to_string();
        assert!(
            msg.contains(&h.culprit),
            "{name}: error {msg:?} does not name {:?}",
            h.culprit
        );
        assert!(
            env.store.list().unwrap().is_empty(),
            "{name}: nothing registered"
        );
    }
    // nothing escaped: no file named evil anywhere outside the snapshots
    for p in ["evil", "outside/evil", "images/evil"] {
        assert!(!env.path(p).exists(), "{p} was written");
    }
    assert!(!Path::new("/evil").exists() && !Path::new("/etc/evil").exists());
    env.store.collect_garbage().unwrap();
    assert_eq!(
        fs::read_dir(env.store.root().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn image_in_use_cannot_be_removed_and_gc_respects_leases() {
    if !root_or_skip("image_in_use_cannot_be_removed_and_gc_respects_leases") {
        return;
    }
    let env = Env::new();
    let layout = env.path("layout");
    herd_integration::write_oci_layout(&layout, &ImageOpts::new(REF)).unwrap();
    env.store
        .import(&layout, &ImportOptions::default())
        .unwrap();
    let target = env.path("rootfs");
    env.store.mount_rootfs("ctr1", REF, &target).unwrap();
    let err = env.store.remove(REF).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("ctr1"));
    // prune --all keeps the image in use, GC keeps its snapshots
    let report = env.store.prune(true).unwrap();
    assert!(report.images.is_empty());
    assert!(target.join("bin/busybox").is_file());
    env.store.unmount_rootfs("ctr1").unwrap();
    env.store.remove(REF).unwrap();
    let report = env.store.prune(false).unwrap();
    assert_eq!(report.snapshots, 2);
    assert!(env.store.blobs().list().unwrap().is_empty());
}

#[test]
fn crash_leftovers_are_collected() {
    if !root_or_skip("crash_leftovers_are_collected") {
        return;
    }
    let env = Env::new();
    // a half-written blob, a half-unpacked snapshot, an orphan rootfs dir
    fs::write(
        env.store.blobs().ingest_dir().join("tmp-deadbeef"),
        b"partial",
    )
    .unwrap();
    fs::create_dir_all(env.store.root().join("snapshots/tmp-0123/fs/etc")).unwrap();
    fs::create_dir_all(env.store.root().join("mounts/ghost/upper")).unwrap();
    // a blob whose content does not match its name is never served
    let d = herd_images::Digest::of(b"real");
    fs::write(env.store.blobs().path(&d), b"fake").unwrap();
    assert!(env.store.blobs().read_verified(&d, 100).is_err());
    env.store.collect_garbage().unwrap();
    assert_eq!(
        fs::read_dir(env.store.blobs().ingest_dir())
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(env.store.root().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(env.store.root().join("mounts"))
            .unwrap()
            .count(),
        0
    );
    assert!(env.store.blobs().list().unwrap().is_empty());
}

#[test]
fn deep_image_mounts_past_the_mount_option_limit() {
    if !root_or_skip("deep_image_mounts_past_the_mount_option_limit") {
        return;
    }
    let env = Env::new();
    let layout = env.path("deep");
    let built = herd_integration::write_deep_image(&layout, 150).unwrap();
    env.store
        .import(&layout, &ImportOptions::default())
        .unwrap();
    let target = env.path("rootfs");
    env.store
        .mount_rootfs("deep", &built.ref_name, &target)
        .unwrap();
    assert!(target.join("layer1").exists() && target.join("layer150").exists());
    env.store.unmount_rootfs("deep").unwrap();
}

#[test]
fn threshold_gc_removes_least_recently_used_unused_images() {
    if !root_or_skip("threshold_gc_removes_least_recently_used_unused_images") {
        return;
    }
    let env = Env::new();
    let tags = env.path("tags");
    herd_integration::write_tags_layout(
        &tags,
        &["herd.test/a:1", "herd.test/b:2"],
        &ImageOpts::new(REF),
    )
    .unwrap();
    env.store.import(&tags, &ImportOptions::default()).unwrap();
    let policy = GcPolicy {
        min_age: std::time::Duration::ZERO,
        ..GcPolicy::default()
    };
    // under the high threshold: nothing happens
    let low = || {
        Ok(DiskUsage {
            capacity: 100,
            available: 50,
        })
    };
    assert!(
        env.store
            .gc_by_threshold(&policy, &low)
            .unwrap()
            .images
            .is_empty()
    );
    // over it: unused images go; one in use stays
    env.store
        .mount_rootfs("keep", "herd.test/a:1", &env.path("rootfs"))
        .unwrap();
    let high = || {
        Ok(DiskUsage {
            capacity: 100,
            available: 5,
        })
    };
    let report = env.store.gc_by_threshold(&policy, &high).unwrap();
    assert_eq!(report.images, ["herd.test/b:2"]);
    assert!(env.store.resolve("herd.test/a:1").is_ok());
    env.store.unmount_rootfs("keep").unwrap();
}

#[test]
fn import_refuses_a_layer_whose_bytes_do_not_match_its_digest() {
    if !root_or_skip("import_refuses_a_layer_whose_bytes_do_not_match_its_digest") {
        return;
    }
    let env = Env::new();
    let layout = env.path("layout");
    let built = herd_integration::write_oci_layout(&layout, &ImageOpts::new(REF)).unwrap();
    // same size, different bytes: only the digest can tell
    let layer = &built.manifest.layers[1];
    let path = layout
        .join("blobs/sha256")
        .join(layer.digest.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let archive = env.path("corrupt.oci.tar");
    herd_integration::tar_layout(&layout, &archive).unwrap();
    for src in [&layout, &archive] {
        let err = env
            .store
            .import(src, &ImportOptions::default())
            .unwrap_err();
        assert!(
            err.to_string().contains(&layer.digest) && err.to_string().contains("content digest"),
            "{err}"
        );
        assert!(env.store.list().unwrap().is_empty());
    }
    env.store.collect_garbage().unwrap();
    assert!(
        !env.store
            .blobs()
            .path(&layer.digest.parse().unwrap())
            .exists()
    );
}
