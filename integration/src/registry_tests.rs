//! Tests of the registry harness and pushes, with skopeo as an independent
//! client reading back what was pushed.

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::image_tests::skopeo;
use crate::oci::{MT_INDEX, sha256_digest};
use crate::*;

const REF: &str = "herd.test/busybox:latest";

#[test]
fn push_and_read_back_without_auth() -> Result<()> {
    let reg = Registry::start(RegistryOpts::default())?;
    let dir = tempfile::tempdir()?;
    let image = write_oci_layout(dir.path(), &ImageOpts::new(REF))?;
    let digest = reg.push_oci_layout(dir.path(), "herd/busybox", "latest")?;
    assert_eq!(digest, image.top.digest);
    // Pushing again skips existing blobs and is idempotent.
    assert_eq!(
        reg.push_oci_layout(dir.path(), "herd/busybox", "latest")?,
        digest
    );

    let m = reg.get_manifest("herd/busybox", "latest")?;
    assert_eq!(m.digest, image.manifest.digest);
    assert_eq!(sha256_digest(&m.bytes), image.manifest.digest);
    let config = reg.get_blob("herd/busybox", &image.manifest.config_digest)?;
    assert_eq!(sha256_digest(&config), image.manifest.config_digest);

    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/herd/busybox:latest", reg.addr()),
    ])?;
    assert_eq!(sha256_digest(&raw), image.manifest.digest);
    Ok(())
}

#[test]
fn basic_auth_is_enforced() -> Result<()> {
    let reg = Registry::start(RegistryOpts {
        basic_auth: Some(("herd".into(), "s3cret".into())),
        binary: None,
    })?;
    let anon = reg.request_anonymous(Method::GET, "/v2/").send()?;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let bad = reg
        .request_anonymous(Method::GET, "/v2/")
        .basic_auth("herd", Some("wrong"))
        .send()?;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let good = reg.request(Method::GET, "/v2/").send()?;
    assert_eq!(good.status(), StatusCode::OK);

    let dir = tempfile::tempdir()?;
    let image = write_oci_layout(dir.path(), &ImageOpts::new(REF))?;
    assert_eq!(
        reg.push_oci_layout(dir.path(), "herd/busybox", "latest")?,
        image.top.digest
    );
    let anon = reg
        .request_anonymous(Method::GET, "/v2/herd/busybox/manifests/latest")
        .send()?;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "herd:s3cret",
        "--raw",
        &format!("docker://{}/herd/busybox:latest", reg.addr()),
    ])?;
    assert_eq!(sha256_digest(&raw), image.top.digest);
    Ok(())
}

#[test]
fn multiarch_index_push() -> Result<()> {
    let reg = Registry::start(RegistryOpts::default())?;
    let dir = tempfile::tempdir()?;
    let opts = ImageOpts {
        platforms: vec![Platform::amd64(), Platform::arm64()],
        ..ImageOpts::new(REF)
    };
    let image = write_oci_layout(dir.path(), &opts)?;
    assert_eq!(
        reg.push_oci_layout(dir.path(), "herd/multi", "latest")?,
        image.top.digest
    );
    let m = reg.get_manifest("herd/multi", "latest")?;
    assert_eq!(m.content_type, MT_INDEX);
    assert_eq!(m.digest, image.top.digest);
    let arm = reg.get_manifest("herd/multi", &image.platforms[1].digest)?;
    assert_eq!(arm.digest, image.platforms[1].digest);
    Ok(())
}

#[test]
fn tags_layout_pushes_each_tag() -> Result<()> {
    let reg = Registry::start(RegistryOpts::default())?;
    let dir = tempfile::tempdir()?;
    let images = write_tags_layout(
        dir.path(),
        &["herd.test/busybox:latest", "herd.test/busybox:v1"],
        &ImageOpts::new(REF),
    )?;
    for image in &images {
        assert_eq!(
            reg.push_oci_layout(dir.path(), "herd/tags", &image.tag)?,
            image.top.digest
        );
        assert_eq!(
            reg.get_manifest("herd/tags", &image.tag)?.digest,
            image.top.digest
        );
    }
    Ok(())
}

#[test]
fn corrupt_images_are_served_as_pushed() -> Result<()> {
    let reg = Registry::start(RegistryOpts::default())?;
    let dir = tempfile::tempdir()?;
    let image = write_oci_layout(dir.path(), &ImageOpts::new(REF))?;
    let layer = &image.manifest.layers[0];
    for (tag, corruption) in [
        ("size", Corruption::LayerSizeMismatch),
        ("diffid", Corruption::DiffIdMismatch),
        ("notgzip", Corruption::LayerNotGzip),
    ] {
        let digest = reg.push_manifest_with_bad_layer(dir.path(), "herd/bad", tag, corruption)?;
        let m = reg.get_manifest("herd/bad", tag)?;
        assert_eq!(m.digest, digest);
        let manifest: Value = serde_json::from_slice(&m.bytes)?;
        let served = &manifest["layers"][0];
        match corruption {
            Corruption::LayerSizeMismatch => {
                assert_eq!(served["digest"], layer.digest.as_str());
                assert_eq!(served["size"], layer.size + 1);
            }
            Corruption::DiffIdMismatch => {
                let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
                let config: Value =
                    serde_json::from_slice(&reg.get_blob("herd/bad", config_digest)?)?;
                assert_ne!(config["rootfs"]["diff_ids"][0], layer.diff_id.as_str());
                assert_eq!(served["digest"], layer.digest.as_str());
            }
            Corruption::LayerNotGzip => {
                let blob =
                    reg.get_blob("herd/bad", served["digest"].as_str().unwrap_or_default())?;
                assert_ne!(blob.get(..2), Some(&[0x1f, 0x8b][..]));
            }
        }
    }
    Ok(())
}
