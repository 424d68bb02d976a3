//! The `herd` command line.

mod image;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// herd: a node agent that turns a handful of Linux hosts into a cluster.
#[derive(Debug, Parser)]
#[command(name = "herd", version, about)]
pub struct Cli {
    /// State directory; several nodes on one machine use different ones.
    #[arg(
        long,
        global = true,
        env = "HERD_ROOT_DIR",
        default_value = "/var/lib/herd"
    )]
    pub root_dir: PathBuf,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage images: import, pull, list, remove, prune.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// Sets up logging to stderr; `RUST_LOG` overrides the level.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Image(cmd) => image::run(&cli.root_dir, cmd),
    }
}
