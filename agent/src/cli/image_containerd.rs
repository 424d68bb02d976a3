//! Which image store `herd image` acts on: herd's own (`<root-dir>/images`)
//! or, with `--containerd-address`, containerd's content store and
//! snapshotter in herd's containerd namespace.
//!
//! Both stores ([`Images`], as the pod runtime uses them) take the same
//! archives and references and return the same records, so `import`, `pull`, `ls` and `rm` print the same
//! output on either. Commands that only make sense on herd's store
//! (`prune`, `mount`, `unmount`) are refused with containerd before any
//! connection is made. Connection failures (socket missing, containerd
//! older than 1.6, a namespace another client uses) are reported as
//! [`herd_runtime::containerd::ContainerdError`] says them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use herd_images::ImageStore;
use herd_runtime::backend::Images;
use herd_runtime::containerd::images::ContainerdImages;
use herd_runtime::containerd::{Client, ContainerdConfig};

/// `herd image` flags choosing containerd's store.
#[derive(Debug, Clone, Args)]
pub struct ContainerdFlags {
    /// Act on containerd's image store through this socket (e.g.
    /// /run/containerd/containerd.sock) instead of herd's own.
    #[arg(long, global = true, env = "HERD_CONTAINERD_ADDRESS")]
    pub containerd_address: Option<PathBuf>,
    /// containerd namespace of herd's images (with --containerd-address).
    #[arg(
        long,
        global = true,
        env = "HERD_CONTAINERD_NAMESPACE",
        default_value = "herd"
    )]
    pub containerd_namespace: String,
}

/// Opens herd's store under `root`, or connects to containerd when `flags`
/// name a socket (staging dir `<root>/containerd-staging`).
pub fn open(root: &Path, flags: &ContainerdFlags) -> anyhow::Result<Images> {
    let Some(address) = &flags.containerd_address else {
        let dir = root.join("images");
        let store = ImageStore::open(&dir)
            .with_context(|| format!("opening image store {}", dir.display()))?;
        return Ok(Images::Native(store));
    };
    let client = Client::connect(ContainerdConfig::new(
        address,
        flags.containerd_namespace.as_str(),
    ))?;
    let staging = root.join("containerd-staging");
    let images = ContainerdImages::new(client, &staging)
        .with_context(|| format!("opening the containerd staging store {}", staging.display()))?;
    Ok(Images::Containerd(images))
}

/// Refuses `command` unless `flags` choose herd's own store.
pub fn herd_only(command: &str, flags: &ContainerdFlags, why: &str) -> anyhow::Result<()> {
    if flags.containerd_address.is_some() {
        bail!("image {command} is not available with --containerd-address: {why}");
    }
    Ok(())
}
