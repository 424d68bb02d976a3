//! herd-runtime: pod sandboxes, cgroup managers, OCI bundles, OCI runtime
//! drivers and the per-pod monitor.
//!
//! Not built yet: this crate exists so the workspace has its fixed shape
//! (see the architecture document); the pod runtime issue fills it.
