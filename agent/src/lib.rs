//! herd-agent: the node agent and the `herd` command line.
//!
//! Today this holds the CLI for the image store; the agent's subsystems
//! (API, store, cluster, scheduler, controllers, kubelet) arrive with their
//! issues, one folder each.

pub mod cli;
