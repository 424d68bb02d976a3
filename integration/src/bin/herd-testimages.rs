//! `herd-testimages OUTDIR` writes the standard test images into OUTDIR;
//! `herd-testimages --big OUT` writes the 100 MB benchmark image layout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use herd_integration::{
    BuiltImage, Compression, ImageOpts, Platform, write_big_image, write_docker_archive,
    write_oci_archive, write_oci_layout, write_tags_layout,
};

const REF: &str = "herd.test/busybox:latest";
const BIG_BYTES: u64 = 100 * 1024 * 1024;
const BIG_LAYERS: usize = 4;
const BIG_SEED: u64 = 42;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, out] if flag == "--big" => big(Path::new(out)),
        [out] if !out.starts_with('-') => standard(Path::new(out)),
        _ => {
            eprintln!("usage: herd-testimages OUTDIR | herd-testimages --big OUT");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd-testimages: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(path: &Path, image: &BuiltImage) {
    println!(
        "{}\t{}\t{}\t{} bytes",
        path.display(),
        image.ref_name,
        image.top.digest,
        image.total_size
    );
}

fn standard(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let gzip = ImageOpts::new(REF);
    let p = out.join("busybox-oci");
    report(&p, &write_oci_layout(&p, &gzip)?);
    let p = out.join("busybox.oci.tar");
    report(&p, &write_oci_archive(&p, &gzip)?);
    let p = out.join("busybox-zstd-oci");
    let zstd = ImageOpts {
        compression: Compression::Zstd,
        ..ImageOpts::new(REF)
    };
    report(&p, &write_oci_layout(&p, &zstd)?);
    let p = out.join("busybox.docker.tar");
    let docker = write_docker_archive(&p, &gzip)?;
    println!(
        "{}\t{}\tconfig {}",
        p.display(),
        docker.ref_name,
        docker.config_digest
    );
    let p = out.join("busybox-multiarch-oci");
    let multi = ImageOpts {
        platforms: vec![Platform::amd64(), Platform::arm64()],
        ..ImageOpts::new(REF)
    };
    report(&p, &write_oci_layout(&p, &multi)?);
    let p = out.join("busybox-tags-oci");
    let refs = ["herd.test/busybox:latest", "herd.test/busybox:v1"];
    for image in write_tags_layout(&p, &refs, &gzip)? {
        report(&p, &image);
    }
    Ok(())
}

fn big(out: &Path) -> Result<()> {
    let out = PathBuf::from(out);
    report(
        &out,
        &write_big_image(&out, BIG_BYTES, BIG_LAYERS, BIG_SEED)?,
    );
    Ok(())
}
