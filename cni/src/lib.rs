//! herd-cni: CNI types, the `herd-cni` plugin and the CNI invoker.
//!
//! Not built yet: this crate exists so the workspace has its fixed shape
//! (see the architecture document); the pod networking issue fills it.
