//! `herd datastore export` / `import`: a cluster's whole state as a JSON
//! Lines file, to move it between the embedded store and etcd (format and
//! guarantees in [`crate::store::migrate`]).
//!
//! With `--datastore etcd://...` the command talks to etcd itself; without
//! it, to the running local agent over its root-only unix socket
//! (`/herd/v1/datastore/{export,import}`, whatever store that agent has:
//! single-node, Raft or etcd).
//!
//! - `export` writes to stdout or, with `-o FILE`, to a file created with
//!   mode 0600 (written beside it and renamed into place once complete and
//!   verified, so a failed export never leaves a short file). The file holds
//!   Secrets in plain text: a warning says so on stderr. What the agent
//!   sent is checked against its header before it is written out.
//! - `import` reads a file (`-f FILE`, stdin by default) and validates it
//!   whole before anything is sent or written; counts per resource are
//!   printed.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyper::Method;

use super::client::{ApiClient, ClientError};
use crate::store::etcd::{DatastoreArgs, EtcdStore};
use crate::store::migrate::{self, ExportOptions, ImportOptions, Summary};

/// `herd datastore` subcommands.
#[derive(Debug, Subcommand)]
pub enum DatastoreCommand {
    /// Write every object of the datastore as JSON Lines (Secrets in plain
    /// text).
    Export(ExportArgs),
    /// Create the objects of an export file in the datastore.
    Import(ImportArgs),
}

/// `herd datastore export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE (created with mode 0600) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Leave Events out.
    #[arg(long)]
    pub skip_events: bool,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
}

/// `herd datastore import` flags.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export to read (`-` or absent: stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Replace objects that already exist (else the import refuses them
    /// all, listed, and writes nothing).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
}

/// Runs a `herd datastore` command.
pub fn run(root_dir: &Path, server: Option<&str>, cmd: DatastoreCommand) -> anyhow::Result<()> {
    match cmd {
        DatastoreCommand::Export(a) => export(root_dir, server, a),
        DatastoreCommand::Import(a) => import(root_dir, server, a),
    }
}

fn connect_etcd(args: &DatastoreArgs) -> anyhow::Result<Option<EtcdStore>> {
    let Some(cfg) = args.etcd().map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    // The error names the endpoints.
    Ok(Some(EtcdStore::connect(cfg)?))
}

/// The agent's client and a runtime to drive it (the etcd path must not
/// run inside one: `EtcdStore` owns its own).
fn agent_client(
    root_dir: &Path,
    server: Option<&str>,
) -> anyhow::Result<(ApiClient, tokio::runtime::Runtime)> {
    let client = ApiClient::from_flags(root_dir, server)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok((client, rt))
}

/// `Error from server (Reason): …` for the agent's answers, the error
/// itself otherwise (`main` prefixes `herd: `).
fn api_error(e: ClientError) -> anyhow::Error {
    match e.api() {
        Some(_) => anyhow::Error::msg(super::client_error_message(&e)),
        None => anyhow::Error::new(e),
    }
}

fn export(root_dir: &Path, server: Option<&str>, args: ExportArgs) -> anyhow::Result<()> {
    let opts = ExportOptions {
        skip_events: args.skip_events,
    };
    let (bytes, summary) = match connect_etcd(&args.datastore)? {
        Some(store) => {
            let snap = migrate::snapshot(&store, &opts)?;
            let mut bytes = Vec::new();
            snap.write_to(&mut bytes)?;
            (bytes, snap.summary())
        }
        None => {
            let (client, rt) = agent_client(root_dir, server)?;
            let path = if opts.skip_events {
                "/herd/v1/datastore/export?skipEvents=true"
            } else {
                "/herd/v1/datastore/export"
            };
            let bytes = rt.block_on(fetch(&client, path)).map_err(api_error)?;
            let file = migrate::read(&mut &bytes[..])
                .context("the agent's export is incomplete or invalid")?;
            (bytes, file.summary())
        }
    };
    let secrets = summary.counts.get("secrets").copied().unwrap_or(0);
    let place = match &args.output {
        Some(path) => {
            write_private(path, &bytes)?;
            path.display().to_string()
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
            "stdout".to_string()
        }
    };
    if secrets > 0 {
        eprintln!(
            "warning: the export holds {secrets} Secrets in plain text; keep {place} private"
        );
    }
    eprintln!(
        "exported {} objects at resourceVersion {} to {place}",
        summary.total(),
        summary.resource_version
    );
    for l in summary.lines() {
        eprintln!("  {l}");
    }
    Ok(())
}

/// The whole export from the agent; an interrupted stream is an error.
async fn fetch(client: &ApiClient, path: &str) -> Result<Vec<u8>, ClientError> {
    let bytes = client.request_bytes(Method::GET, path, None).await?;
    Ok(bytes.to_vec())
}

/// Writes `bytes` to `path` with mode 0600: into a new file beside it,
/// synced, then renamed over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask may only remove bits; make sure of 0600 anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn import(root_dir: &Path, server: Option<&str>, args: ImportArgs) -> anyhow::Result<()> {
    let (bytes, source) = match args.file.as_deref() {
        None => (read_stdin()?, "stdin".to_string()),
        Some(p) if p == Path::new("-") => (read_stdin()?, "stdin".to_string()),
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
    };
    let file = migrate::read(&mut &bytes[..]).with_context(|| source.clone())?;
    let opts = ImportOptions {
        overwrite: args.overwrite,
    };
    let summary = match connect_etcd(&args.datastore)? {
        Some(store) => migrate::apply(&store, &file, &opts)?,
        None => {
            drop(file);
            let (client, rt) = agent_client(root_dir, server)?;
            let path = if opts.overwrite {
                "/herd/v1/datastore/import?overwrite=true"
            } else {
                "/herd/v1/datastore/import"
            };
            let answer = rt
                .block_on(client.request_bytes(Method::POST, path, Some(bytes)))
                .map_err(api_error)?;
            serde_json::from_slice::<Summary>(&answer)
                .context("decoding the agent's import summary")?
        }
    };
    print_import(&summary, &source);
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("reading stdin")?;
    if bytes.is_empty() {
        bail!("stdin is empty: pass an export with -f FILE or on stdin");
    }
    Ok(bytes)
}

fn print_import(summary: &Summary, source: &str) {
    for l in summary.lines() {
        println!("{l}");
    }
    let replaced: u64 = summary.replaced.values().sum();
    println!(
        "imported {} objects from {source} ({replaced} replaced), resourceVersion {}",
        summary.total(),
        summary.resource_version
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_file_replaces_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.jsonl");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"new\n"[..]));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
