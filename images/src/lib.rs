//! herd-images: the node's image store.
//!
//! - [`blob`]: content-addressed, sha256-verified blobs with atomic writes.
//! - [`import`]: OCI layouts, OCI archives and docker-archives.
//! - [`pull`]: registry pulls (OCI distribution API) streamed to disk.
//! - [`tar`] and [`unpack`]: a bounded tar reader and a layer applier that
//!   cannot write outside its snapshot, with overlayfs whiteouts.
//! - [`rootfs`]: a container rootfs as an overlay of snapshots.
//! - [`gc`]: garbage collection and kubelet-style disk thresholds.

pub mod blob;
pub mod digest;
mod fsutil;
pub mod gc;
pub mod import;
pub mod manifest;
pub mod metadata;
pub mod pull;
pub mod rootfs;
pub mod store;
pub mod tar;
pub mod unpack;

pub use digest::Digest;
pub use import::ImportOptions;
pub use manifest::Platform;
pub use metadata::{ImageRecord, LayerRecord, MountRecord};
pub use pull::{Credentials, ProgressFn, PullEvent, PullOptions};
pub use store::{ImageError, ImageStore, normalize_reference};
