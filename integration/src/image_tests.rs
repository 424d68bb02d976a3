//! Tests of the image fixtures: every layout passes [`verify_layout`]
//! (digests, sizes, diff_ids, oci-spec parsing) and skopeo, an independent
//! OCI implementation, reads and copies every output.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::oci::{MT_INDEX, MT_MANIFEST, sha256_digest};
use crate::testimage::overlay_layer_tar;
use crate::verify::verify_layout;
use crate::*;

const REF: &str = "herd.test/busybox:latest";

pub(crate) fn skopeo(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!("skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-utf8 temp path")
}

fn tar_listing(bytes: &[u8]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("layer.tar");
    fs::write(&path, bytes)?;
    let out = Command::new("tar").arg("-tvf").arg(&path).output()?;
    ensure!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn gzip_layout_is_valid_deterministic_and_read_by_skopeo() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a");
    let image = write_oci_layout(&a, &ImageOpts::new(REF))?;
    let report = verify_layout(&a)?;
    assert_eq!(report.manifests, vec![image.manifest.digest.clone()]);
    assert_eq!(image.top.media_type, MT_MANIFEST);
    assert_eq!(image.tag, "latest");
    assert_eq!(image.manifest.layers.len(), 2);
    let blobs_total: u64 = report
        .blobs
        .iter()
        .map(|d| {
            fs::metadata(a.join("blobs/sha256").join(crate::oci::digest_hex(d))).map(|m| m.len())
        })
        .sum::<std::io::Result<u64>>()?;
    assert_eq!(image.total_size, blobs_total);

    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:latest", path_str(&a)?)])?;
    assert_eq!(sha256_digest(&raw), image.manifest.digest);
    let config = skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:latest", path_str(&a)?),
    ])?;
    let config: Value = serde_json::from_slice(&config)?;
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"][0], "sh");
    assert_eq!(
        config["rootfs"]["diff_ids"][1],
        image.manifest.layers[1].diff_id.as_str()
    );

    let index: Value = serde_json::from_slice(&fs::read(a.join("index.json"))?)?;
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "latest");
    assert_eq!(ann["io.containerd.image.name"], REF);

    let again = write_oci_layout(&dir.path().join("b"), &ImageOpts::new(REF))?;
    assert_eq!(again, image, "output must be deterministic");
    Ok(())
}

#[test]
fn zstd_and_uncompressed_layouts_copy_with_skopeo() -> Result<()> {
    for compression in [Compression::Zstd, Compression::None] {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src");
        let image = write_oci_layout(
            &src,
            &ImageOpts {
                compression,
                ..ImageOpts::new(REF)
            },
        )?;
        verify_layout(&src)?;
        assert!(
            image
                .manifest
                .layers
                .iter()
                .all(|l| l.media_type == compression.media_type())
        );
        let dst = dir.path().join("dst");
        // Without this flag skopeo gzips uncompressed layers for oci:.
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--dest-oci-accept-uncompressed-layers",
            &format!("oci:{}:latest", path_str(&src)?),
            &format!("oci:{}:latest", path_str(&dst)?),
        ])?;
        let raw = skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", path_str(&dst)?),
        ])?;
        assert_eq!(
            sha256_digest(&raw),
            image.manifest.digest,
            "{compression:?}: skopeo changed the manifest"
        );
    }
    Ok(())
}

#[test]
fn layers_hold_the_promised_entries() -> Result<()> {
    let base = tar_listing(&testimage::base_layer_tar(Path::new(
        testimage::DEFAULT_BUSYBOX,
    ))?)?;
    for needle in [
        "bin/sh -> busybox",
        "bin/httpd -> busybox",
        "drwxrwxrwt",
        "var/www/index.html",
        "etc/deleteme",
        "opaque/old.txt",
    ] {
        assert!(base.contains(needle), "base layer lacks {needle}:\n{base}");
    }
    assert!(base.contains("-rwxr-xr-x 0/0") && base.contains("bin/busybox"));
    let overlay_bytes = overlay_layer_tar()?;
    let overlay = tar_listing(&overlay_bytes)?;
    for needle in [
        "etc/.wh.deleteme",
        "opaque/.wh..wh..opq",
        "data/hardlink.txt link to data/file.txt",
        "data/link -> file.txt",
        "-rwsr-xr-x 0/0",
        "data/xattr.txt",
    ] {
        assert!(
            overlay.contains(needle),
            "overlay layer lacks {needle}:\n{overlay}"
        );
    }
    let pax = b"SCHILY.xattr.user.herd=test\n";
    assert!(overlay_bytes.windows(pax.len()).any(|w| w == pax));
    Ok(())
}

#[test]
fn multiarch_layout_has_nested_index_with_platforms() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    let opts = ImageOpts {
        platforms: vec![Platform::amd64(), Platform::arm64()],
        ..ImageOpts::new(REF)
    };
    let image = write_oci_layout(&src, &opts)?;
    let report = verify_layout(&src)?;
    assert_eq!(report.indexes, vec![image.top.digest.clone()]);
    assert_eq!(report.manifests.len(), 2);
    assert_eq!(image.top.media_type, MT_INDEX);
    assert_ne!(
        image.platforms[0].config_digest,
        image.platforms[1].config_digest
    );
    assert_eq!(image.platforms[0].layers, image.platforms[1].layers);

    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:latest", path_str(&src)?),
    ])?;
    assert_eq!(sha256_digest(&raw), image.top.digest);
    let index: Value = serde_json::from_slice(&raw)?;
    assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(index["manifests"][1]["platform"]["variant"], "v8");
    let dst = dir.path().join("dst");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--all",
        &format!("oci:{}:latest", path_str(&src)?),
        &format!("oci:{}:latest", path_str(&dst)?),
    ])?;
    let arm = skopeo(&[
        "--override-arch",
        "arm64",
        "inspect",
        "--config",
        &format!("oci:{}:latest", path_str(&dst)?),
    ])?;
    let arm: Value = serde_json::from_slice(&arm)?;
    assert_eq!(arm["architecture"], "arm64");
    Ok(())
}

#[test]
fn oci_archive_is_read_by_skopeo() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("busybox.oci.tar");
    let image = write_oci_archive(&archive, &ImageOpts::new(REF))?;
    let dst = dir.path().join("dst");
    skopeo(&[
        "copy",
        "--preserve-digests",
        &format!("oci-archive:{}:latest", path_str(&archive)?),
        &format!("oci:{}:latest", path_str(&dst)?),
    ])?;
    verify_layout(&dst)?;
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:latest", path_str(&dst)?),
    ])?;
    assert_eq!(sha256_digest(&raw), image.manifest.digest);
    Ok(())
}

#[test]
fn docker_archive_is_read_by_skopeo_and_keeps_the_image_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("busybox.docker.tar");
    let built = write_docker_archive(&archive, &ImageOpts::new(REF))?;
    let listing = tar_listing(&fs::read(&archive)?)?;
    assert!(
        listing.trim_end().ends_with("manifest.json"),
        "manifest.json must be last:\n{listing}"
    );
    for p in built.layer_paths.iter().chain([&built.config_path]) {
        assert!(listing.contains(p.as_str()), "{p} missing");
    }

    let oci = write_oci_layout(&dir.path().join("oci"), &ImageOpts::new(REF))?;
    assert_eq!(
        built.config_digest, oci.manifest.config_digest,
        "same config bytes in both formats"
    );
    assert_eq!(built.diff_ids, oci.manifest.diff_ids());

    let dst = dir.path().join("dst");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", path_str(&archive)?),
        &format!("oci:{}:latest", path_str(&dst)?),
    ])?;
    verify_layout(&dst)?;
    let config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        &format!("oci:{}:latest", path_str(&dst)?),
    ])?;
    let config: Value = serde_json::from_slice(&config)?;
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(built.diff_ids)
    );
    Ok(())
}

#[test]
fn tags_layout_has_two_distinct_tagged_images() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let refs = ["herd.test/busybox:latest", "herd.test/busybox:v1"];
    let images = write_tags_layout(dir.path(), &refs, &ImageOpts::new(REF))?;
    let report = verify_layout(dir.path())?;
    assert_eq!(report.manifests.len(), 2);
    assert_ne!(images[0].top.digest, images[1].top.digest);
    for image in &images {
        let raw = skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:{}", path_str(dir.path())?, image.tag),
        ])?;
        assert_eq!(sha256_digest(&raw), image.top.digest);
    }
    Ok(())
}

#[test]
fn hostile_layers_wrap_into_valid_images() -> Result<()> {
    for (name, t) in hostile::all() {
        let dir = tempfile::tempdir()?;
        let image = write_image_with_layer(
            dir.path(),
            "herd.test/hostile:latest",
            &t.bytes,
            Compression::Gzip,
        )?;
        verify_layout(dir.path()).with_context(|| name.to_string())?;
        assert_eq!(
            image.manifest.layers[0].diff_id,
            sha256_digest(&t.bytes),
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn deep_image_has_requested_layer_count() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let image = write_deep_image(dir.path(), 150)?;
    assert_eq!(image.manifest.layers.len(), 150);
    verify_layout(dir.path())?;
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:latest", path_str(dir.path())?),
    ])?;
    assert_eq!(sha256_digest(&raw), image.manifest.digest);
    Ok(())
}

#[test]
fn big_image_is_deterministic_and_incompressible() -> Result<()> {
    let total = 6 * 1024 * 1024 + 7;
    let dir = tempfile::tempdir()?;
    let a = write_big_image(&dir.path().join("a"), total, 3, 7)?;
    let b = write_big_image(&dir.path().join("b"), total, 3, 7)?;
    let c = write_big_image(&dir.path().join("c"), total, 3, 8)?;
    assert_eq!(a, b);
    assert_ne!(a.manifest.digest, c.manifest.digest);
    verify_layout(&dir.path().join("a"))?;
    let blob_bytes: u64 = a.manifest.layers.iter().map(|l| l.size).sum();
    assert!(
        blob_bytes >= total,
        "random data compressed to {blob_bytes} < {total}"
    );
    Ok(())
}
