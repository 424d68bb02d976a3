//! `herd image …`: the image store from the command line.
//!
//! These commands work on the store directly (with file locks, so they are
//! safe next to a running agent); once the agent's API exists they keep
//! working offline, as `ctr` does next to containerd. With
//! `--containerd-address`, `import`, `pull`, `ls` and `rm` act on
//! containerd's store instead ([`super::image_containerd`]), with the same
//! output.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herd_images::{
    Credentials, Digest, ImageStore, ImportOptions, Platform, PullEvent, PullOptions,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::image_containerd::{self as store, ContainerdFlags};

/// `herd image`: the store to act on and what to do.
#[derive(Debug, Args)]
pub struct ImageCommand {
    #[command(flatten)]
    containerd: ContainerdFlags,
    #[command(subcommand)]
    command: ImageSubcommand,
}

/// Image commands.
#[derive(Debug, Subcommand)]
pub enum ImageSubcommand {
    /// Import an OCI image layout directory, OCI archive or docker-archive.
    Import {
        /// Path to the layout directory or archive (.tar, optionally gzipped).
        path: PathBuf,
        /// Platform to take from multi-platform images (default: this host's).
        #[arg(long)]
        platform: Option<Platform>,
        /// Repository for images the archive names only by tag.
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only print image names.
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table or json.
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Remove images (refused while a container uses them).
    #[command(alias = "remove")]
    Rm {
        /// Image names or IDs.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Free unreferenced blobs and snapshots; with --all, unused images too.
    Prune {
        /// Also remove every image no container uses.
        #[arg(short, long)]
        all: bool,
    },
    /// Mount a container rootfs (overlay of the image) at TARGET.
    Mount {
        /// Image name or ID.
        image: String,
        /// Where to mount.
        target: PathBuf,
        /// Container ID owning the rootfs.
        #[arg(long)]
        id: String,
    },
    /// Unmount and delete a container rootfs.
    Unmount {
        /// Container ID.
        id: String,
    },
}

/// `herd image pull` options.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/herd/busybox:latest.
    reference: String,
    /// Platform to pull from multi-platform images.
    #[arg(long)]
    platform: Option<Platform>,
    /// Use plain HTTP (for local registries).
    #[arg(long)]
    plain_http: bool,
    /// Accept invalid TLS certificates.
    #[arg(long)]
    insecure: bool,
    /// Registry user name.
    #[arg(long, short)]
    username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, conflicts_with = "password_file")]
    password_stdin: bool,
    /// Read the password from a file.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3)]
    max_concurrent_downloads: usize,
    /// Only fetch and verify; do not unpack layers.
    #[arg(long)]
    no_unpack: bool,
}

fn open(root: &Path) -> anyhow::Result<ImageStore> {
    let dir = root.join("images");
    ImageStore::open(&dir).with_context(|| format!("opening image store {}", dir.display()))
}

/// Why containerd has no `prune`, `mount` and `unmount`.
const NO_PRUNE: &str = "containerd garbage-collects its own content";
const NO_MOUNT: &str = "containerd mounts container root filesystems from its snapshotter";

/// Runs one image command.
pub fn run(root: &Path, cmd: ImageCommand) -> anyhow::Result<()> {
    let flags = cmd.containerd;
    match cmd.command {
        ImageSubcommand::Import {
            path,
            platform,
            name,
        } => {
            let store = store::open(root, &flags)?;
            let opts = ImportOptions {
                platform,
                base_name: name,
            };
            for img in store.import(&path, &opts)? {
                println!("imported {} ({}, {})", img.name, img.manifest, img.platform);
            }
            Ok(())
        }
        ImageSubcommand::Pull(args) => pull(root, &flags, args),
        ImageSubcommand::Ls { quiet, output } => {
            let images = store::open(root, &flags)?.list()?;
            if quiet {
                for i in images {
                    println!("{}", i.name);
                }
            } else if output == "json" {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else if output == "table" {
                println!(
                    "{:<50} {:<14} {:<14} {:>10}",
                    "IMAGE", "IMAGE ID", "PLATFORM", "SIZE"
                );
                for i in images {
                    println!(
                        "{:<50} {:<14} {:<14} {:>10}",
                        i.name,
                        i.config.short(),
                        i.platform,
                        human(i.size())
                    );
                }
            } else {
                bail!("unknown output format {output:?} (use table or json)");
            }
            Ok(())
        }
        ImageSubcommand::Rm { images } => {
            let store = store::open(root, &flags)?;
            let mut failed = false;
            for name in images {
                match store.remove(&name) {
                    Ok(rec) => println!("removed {} ({})", rec.name, rec.manifest),
                    Err(e) => {
                        eprintln!("herd: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("some images were not removed");
            }
            Ok(())
        }
        ImageSubcommand::Prune { all } => {
            store::herd_only("prune", &flags, NO_PRUNE)?;
            let r = open(root)?.prune(all)?;
            for i in &r.images {
                println!("removed {i}");
            }
            println!(
                "freed {} ({} blobs, {} snapshots)",
                human(r.bytes),
                r.blobs,
                r.snapshots
            );
            Ok(())
        }
        ImageSubcommand::Mount { image, target, id } => {
            store::herd_only("mount", &flags, NO_MOUNT)?;
            let m = open(root)?.mount_rootfs(&id, &image, &target)?;
            println!("mounted {} at {}", m.image, m.target.display());
            Ok(())
        }
        ImageSubcommand::Unmount { id } => {
            store::herd_only("unmount", &flags, NO_MOUNT)?;
            open(root)?.unmount_rootfs(&id)?;
            println!("unmounted {id}");
            Ok(())
        }
    }
}

fn read_password(args: &PullArgs) -> anyhow::Result<Option<String>> {
    let raw = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading password from stdin")?;
        s
    } else if let Some(f) = &args.password_file {
        std::fs::read_to_string(f)
            .with_context(|| format!("reading password file {}", f.display()))?
    } else {
        return Ok(None);
    };
    Ok(Some(raw.trim_end_matches(['\n', '\r']).to_owned()))
}

fn pull(root: &Path, flags: &ContainerdFlags, args: PullArgs) -> anyhow::Result<()> {
    let credentials = match (&args.username, read_password(&args)?) {
        (Some(u), Some(p)) => Credentials::Basic {
            username: u.clone(),
            password: p,
        },
        (Some(_), None) => bail!("--username needs --password-stdin or --password-file"),
        (None, Some(_)) => bail!("a password was given without --username"),
        (None, None) => Credentials::Anonymous,
    };
    let opts = PullOptions {
        platform: args.platform.clone().unwrap_or_else(Platform::host),
        plain_http: args.plain_http,
        insecure_tls: args.insecure,
        credentials,
        max_concurrent_downloads: args.max_concurrent_downloads,
        unpack: !args.no_unpack,
    };
    // Before the async runtime: connecting to containerd blocks on a
    // runtime of its own.
    let store = store::open(root, flags)?;
    let progress = Progress::new(std::io::stderr().is_terminal());
    let sink = progress.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting async runtime")?;
    let rec =
        rt.block_on(store.pull(&args.reference, &opts, Arc::new(move |ev| sink.event(ev))))?;
    progress.finish();
    println!("pulled {} ({}, {})", rec.name, rec.manifest, rec.platform);
    Ok(())
}

/// Progress display: one bar per layer on a terminal, one line per finished
/// step otherwise (logs and CI stay readable).
#[derive(Clone)]
struct Progress {
    inner: Arc<Mutex<ProgressState>>,
}

struct ProgressState {
    tty: bool,
    multi: MultiProgress,
    bars: HashMap<Digest, ProgressBar>,
    sizes: HashMap<Digest, u64>,
}

impl Progress {
    fn new(tty: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ProgressState {
                tty,
                multi: MultiProgress::new(),
                bars: HashMap::new(),
                sizes: HashMap::new(),
            })),
        }
    }

    fn event(&self, ev: PullEvent) {
        let Ok(mut s) = self.inner.lock() else { return };
        match ev {
            PullEvent::Resolved { manifest, layers } => {
                if !s.tty {
                    eprintln!("resolved {manifest}: {} layers", layers.len());
                }
                for (d, size) in layers {
                    s.sizes.insert(d.clone(), size);
                    if s.tty {
                        let bar = s.multi.add(ProgressBar::new(size));
                        let style = ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                        bar.set_style(style.progress_chars("=> "));
                        bar.set_prefix(d.short().to_owned());
                        s.bars.insert(d, bar);
                    }
                }
            }
            PullEvent::LayerProgress(d, n) => {
                if let Some(b) = s.bars.get(&d) {
                    b.set_position(n);
                }
            }
            PullEvent::LayerExists(d) => {
                if let Some(b) = s.bars.get(&d) {
                    b.finish_with_message("already present");
                } else if !s.tty {
                    eprintln!("layer {} already present", d.short());
                }
            }
            PullEvent::LayerDownloaded(d) => {
                if let Some(b) = s.bars.get(&d) {
                    b.set_message("downloaded");
                } else if !s.tty {
                    eprintln!(
                        "layer {} downloaded ({})",
                        d.short(),
                        human(s.sizes.get(&d).copied().unwrap_or(0))
                    );
                }
            }
            PullEvent::LayerUnpacked(d) => {
                if let Some(b) = s.bars.get(&d) {
                    b.finish_with_message("unpacked");
                } else if !s.tty {
                    eprintln!("layer {} unpacked", d.short());
                }
            }
        }
    }

    fn finish(&self) {
        if let Ok(s) = self.inner.lock() {
            for b in s.bars.values() {
                if !b.is_finished() {
                    b.finish();
                }
            }
        }
    }
}

/// Sizes as `docker images` prints them.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}
