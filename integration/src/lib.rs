//! Test fixtures for herd's integration tests: real, spec-correct image
//! artifacts and a local registry, built without the crates under test.
//!
//! - [`testimage`]: the busybox test image as an OCI layout (gzip, zstd or
//!   uncompressed; single- or multi-platform; several tags), plus arbitrary
//!   single-layer images for feeding hostile layers through import.
//! - [`archive`]: the same image as an `oci-archive` tar and in
//!   `docker save` format.
//! - [`bigimage`]: a large random image for benchmarks and a many-layer
//!   image for overlay limits.
//! - [`hostile`]: raw hostile tarballs (traversal, escapes, huge sizes).
//! - [`registry`], [`push`]: a throwaway `docker-registry` and pushes to it,
//!   including corrupt images.
//! - [`containerd`]: a throwaway containerd 1.6 daemon in a temp dir, with
//!   its own namespace, that cleans up after itself.
//! - [`verify`]: an independent layout checker built on `oci-spec`.
//!
//! Every blob written is stored under the sha256 of its bytes, every
//! descriptor carries the exact size, and every config's diff_ids are the
//! sha256 of the uncompressed layers; output is deterministic.

pub mod agent;
pub mod archive;
pub mod bigimage;
pub mod containerd;
pub mod etcd;
pub mod hostile;
pub mod oci;
pub mod push;
pub mod registry;
pub mod tarw;
pub mod testimage;
pub mod verify;

#[cfg(test)]
mod image_tests;
#[cfg(test)]
mod registry_tests;

pub use archive::{BuiltDockerArchive, tar_layout, write_docker_archive, write_oci_archive};
pub use bigimage::{write_big_image, write_deep_image};
pub use hostile::HostileTar;
pub use oci::{BuiltLayer, Compression, Descriptor, Platform};
pub use push::{Corruption, FetchedManifest};
pub use registry::{Registry, RegistryOpts};
pub use testimage::{
    BuiltImage, BuiltManifest, ImageOpts, write_image_with_layer, write_oci_layout,
    write_tags_layout,
};
pub use verify::{LayoutReport, verify_layout};

/// For tests that need root: true when running as root; otherwise prints
/// `SKIP <test>: needs root (<needs>)` and returns false, unless `CI` is set,
/// where a skipped root test is a failure (CI must run it).
pub fn root_or_skip(test: &str, needs: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root ({needs}), and CI must run it"
    );
    eprintln!("SKIP {test}: needs root ({needs})");
    false
}
