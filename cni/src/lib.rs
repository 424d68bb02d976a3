//! herd-cni: CNI types, the `herd-cni` plugin and the CNI invoker.
//!
//! - [`types`]: configuration, configuration lists and results of every
//!   supported spec version (0.3.0 to 1.1.0), with conversion (no IO).
//! - [`error`]: [`CniError`] with the spec's codes and JSON form.
//! - [`version`]: [`CniVersion`] and what each version allows.
//! - [`plugin`]: the `herd-cni` plugin (bridge + veth on herd-net).
//! - [`invoke`]: running CNI plugins and conflists (the runtime side).

pub mod error;
pub mod invoke;
mod net_errors;
pub mod plugin;
pub mod types;
pub mod version;

pub use error::{CniError, ErrorCode};
pub use version::CniVersion;
