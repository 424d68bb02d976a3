//! herd-runtime: pod sandboxes, cgroup managers, OCI bundles, OCI runtime
//! drivers and the per-pod monitor.
//!
//! The model (`types`) is CRI-shaped: the agent's kubelet translates
//! Kubernetes pods into it. Every kernel-facing root (`/sys/fs/cgroup`, the
//! run dir, the log dir) is a parameter so several agents can share a host
//! and logic can be tested on temp dirs.

pub mod backend;
pub mod cgroups;
pub mod containerd;
pub mod native;
pub mod pod;
pub mod sandbox;
pub mod spec;
pub mod types;

// The monitor, the OCI runtime driver, CRI logs and the PID holder live in
// herd-monitor (a small crate for a small binary); their paths stay here.
pub use herd_monitor::{logs, monitor, oci, pidns};
