//! `herd agent`: the daemon entry point as the CLI sees it.
//!
//! The daemon's wiring lives in [`crate::daemon`]; the lead points this
//! function at `daemon::run` once it exists.

use std::path::Path;

use crate::daemon::AgentArgs;

/// Runs the agent until it is stopped.
pub fn run(root_dir: &Path, args: AgentArgs) -> anyhow::Result<()> {
    crate::daemon::run(root_dir, args)
}
