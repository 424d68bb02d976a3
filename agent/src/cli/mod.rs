//! The `herd` command line.
//!
//! `herd image …` works on the image store directly; `herd agent` runs the
//! daemon; `apply`, `get`, `describe`, `logs`, `exec` and `delete` are
//! clients of the agent's Kubernetes-shaped API ([`client::ApiClient`])
//! and follow kubectl's flags, output, messages and exit codes: API errors
//! print as `Error from server (Reason): message` and exit 1, `exec` exits
//! with the remote command's exit code.

mod agent;
pub mod apply;
pub mod channel;
pub mod client;
#[cfg(test)]
mod client_tests;
mod conn;
pub mod datastore;
pub mod delete;
pub mod describe;
pub mod describe_kinds;
pub mod describe_pod;
pub mod duration;
pub mod exec;
pub mod get;
mod image;
mod image_containerd;
pub mod kubeconfig;
pub mod logs;
pub mod params;
pub mod printers;
pub mod printers_kinds;
#[cfg(test)]
mod printers_tests;
pub mod scale;
mod streams;
pub mod tabwriter;
mod terminal;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use client::{ApiClient, ClientError};

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
    /// The agent's API as http://HOST:PORT (default: the unix socket
    /// <root-dir>/agent.sock).
    #[arg(long, global = true, env = "HERD_SERVER")]
    pub server: Option<String>,
    /// The namespace (default: `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
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
    Image(image::ImageCommand),
    /// Run the node agent (the daemon).
    Agent(Box<crate::daemon::AgentArgs>),
    /// Create or update objects from manifests (-f FILE|DIR|-).
    Apply(apply::ApplyArgs),
    /// List objects as a table, YAML, JSON or names.
    Get(get::GetArgs),
    /// Show an object in detail, with its events.
    Describe(describe::DescribeArgs),
    /// Print a container's log.
    Logs(logs::LogsArgs),
    /// Run a command in a container.
    Exec(exec::ExecArgs),
    /// Delete objects by name, by manifest or all of a kind.
    Delete(delete::DeleteArgs),
    /// Set the replicas of a Deployment or ReplicaSet.
    Scale(scale::ScaleArgs),
    /// Print a kubeconfig for kubectl (a client certificate or a token).
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Export or import the whole datastore (embedded store or etcd).
    #[command(subcommand)]
    Datastore(datastore::DatastoreCommand),
}

/// Sets up logging to stderr; `RUST_LOG` overrides the level.
pub fn init_logging(verbose: u8) {
    // openraft logs every election step at info: one level quieter.
    let level = match verbose {
        0 => "warn,openraft=error",
        1 => "info,openraft=warn",
        2 => "debug,openraft=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What API commands share: the client and the namespace.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub client: ApiClient,
    /// `-n`, or `default`.
    pub namespace: String,
    /// Whether `-n` was given (apply refuses objects of another namespace
    /// only then, as kubectl does).
    pub namespace_explicit: bool,
}

/// A command that failed after printing its own messages; the process
/// exits with `code`.
#[derive(Debug, thiserror::Error)]
#[error("exit status {code}")]
pub struct Exit {
    pub code: i32,
}

/// Runs a parsed command line. API commands print kubectl-style errors
/// and end the process with their exit code themselves.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Image(cmd) => image::run(&cli.root_dir, cmd),
        Command::Agent(args) => agent::run(&cli.root_dir, *args),
        Command::Datastore(cmd) => datastore::run(&cli.root_dir, cli.server.as_deref(), cmd),
        command => {
            let code =
                run_api_command(&cli.root_dir, cli.server.as_deref(), cli.namespace, command);
            let _ = std::io::stdout().flush();
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

/// Runs one API command and returns its exit code (errors are printed).
pub fn run_api_command(
    root_dir: &Path,
    server: Option<&str>,
    namespace: Option<String>,
    command: Command,
) -> i32 {
    let client = match ApiClient::from_flags(root_dir, server) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let ctx = Ctx {
        client,
        namespace_explicit: namespace.is_some(),
        namespace: namespace.unwrap_or_else(|| "default".into()),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        match command {
            Command::Apply(a) => apply::run(&ctx, a).await,
            Command::Get(a) => get::run(&ctx, a).await,
            Command::Describe(a) => describe::run(&ctx, a).await,
            Command::Logs(a) => logs::run(&ctx, a).await,
            Command::Exec(a) => exec::run(&ctx, a).await,
            Command::Delete(a) => delete::run(&ctx, a).await,
            Command::Scale(a) => scale::run(&ctx, a).await,
            Command::Kubeconfig(a) => kubeconfig::run(&ctx, a).await,
            Command::Image(_) | Command::Agent(_) | Command::Datastore(_) => Ok(()),
        }
    });
    // Exec's stdin reader may still block on the terminal: do not wait.
    rt.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<Exit>() {
                return exit.code;
            }
            eprintln!("{}", error_message(&e));
            1
        }
    }
}

/// kubectl's `StandardErrorMessage` for a client error.
pub fn client_error_message(e: &ClientError) -> String {
    match e.api() {
        Some(f) => {
            if f.error.reason == crate::api::error::Reason::Invalid && !f.causes.is_empty() {
                let head = match (&f.error.kind, &f.error.name) {
                    (Some(k), Some(n)) => format!("The {k} \"{n}\" is invalid"),
                    _ => "The request is invalid".to_string(),
                };
                let causes: Vec<String> = f
                    .causes
                    .iter()
                    .map(|(field, msg)| {
                        if field.is_empty() {
                            msg.clone()
                        } else {
                            format!("{field}: {msg}")
                        }
                    })
                    .collect();
                if causes.len() == 1 {
                    format!("{head}: {}", causes[0])
                } else {
                    let list: Vec<String> = causes.iter().map(|c| format!("* {c}")).collect();
                    format!("{head}: \n{}", list.join("\n"))
                }
            } else {
                format!(
                    "Error from server ({}): {}",
                    f.error.reason.as_str(),
                    f.error.message
                )
            }
        }
        None => format!("error: {e}"),
    }
}

/// The message printed for a failed command.
pub fn error_message(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(c) => client_error_message(c),
        None => format!("error: {e:#}"),
    }
}
