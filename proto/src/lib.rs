//! herd-proto: `.proto` files and generated gRPC code for node-to-node RPC.
//!
//! Not built yet: this crate exists so the workspace has its fixed shape
//! (see the architecture document); the cluster issue fills it.
