//! herd-proto: `.proto` files and generated gRPC code for node-to-node RPC.
//!
//! The `.proto` sources live in `proto/herd/v1/`; `build.rs` compiles them
//! with protox (no `protoc` needed) and tonic-prost-build. Generated code is
//! the only place in the workspace where lints are relaxed.

/// Package `herd.v1`: the `Join` and `Peer` services and their messages.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations,
    missing_docs
)]
pub mod v1 {
    tonic::include_proto!("herd.v1");
}

/// Largest message either side sends or accepts (snapshot chunks, joins).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
