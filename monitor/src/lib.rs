//! herd-monitor: the per-pod monitor and what it needs, kept apart from
//! the rest of the runtime so its binary stays small.
//!
//! - [`monitor`]: the monitor process (child subreaper, stdio, CRI logs,
//!   exit records) and the agent's client for it.
//! - [`oci`]: the OCI runtime CLI driver (runc, crun, youki).
//! - [`logs`]: CRI-format log writing, rotation and reading.
//! - [`pidns`]: the PID 1 holder of a shared PID namespace.
//!
//! One process per pod runs this code: the `herd-monitor` binary (built
//! static, about 1.5 MB RSS) when it is installed next to `herd`, or
//! `herd monitor` (the agent's own binary re-executed) otherwise.

pub mod logs;
pub mod monitor;
pub mod oci;
pub mod pidns;
