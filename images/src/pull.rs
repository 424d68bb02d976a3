//! `herd image pull`: the OCI distribution API through `oci-client`.
//!
//! Manifests go through `pull_manifest_raw` (digest-checked by the client and
//! again here); blobs only through the streaming `pull_blob_stream`, written
//! chunk by chunk into the blob store while hashed, so memory stays flat
//! whatever the layer size. Layers download in parallel (bounded) and are
//! unpacked bottom-first as soon as each one and the one below it are in,
//! overlapping unpacking with the remaining downloads. A blob that exceeds
//! its announced size is cut off at once; one whose digest does not match
//! is discarded; the image is registered only when everything verified.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::blob::BlobError;
use crate::digest::Digest;
use crate::manifest::{self, Document, Platform};
use crate::metadata::{ImageRecord, LayerRecord};
use crate::store::{ImageError, ImageStore};

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// What was given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The registry refused the credentials (or demanded some).
    #[error("{reference}: registry {registry} denied access (check --username and the password)")]
    Unauthorized {
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
    },
    /// The image or tag does not exist.
    #[error("{reference}: not found in registry {registry}")]
    NotFound {
        /// The image.
        reference: String,
        /// The registry host.
        registry: String,
    },
    /// Any other registry or transport failure.
    #[error("{reference}: {op}: {source}")]
    Registry {
        /// The image.
        reference: String,
        /// What was being fetched.
        op: String,
        /// The client error.
        source: OciDistributionError,
    },
    /// A background task failed.
    #[error("pull task failed: {0}")]
    Task(String),
}

/// Registry credentials.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials (bearer tokens are still fetched anonymously).
    #[default]
    Anonymous,
    /// Username and password, used for basic auth or to obtain a bearer token.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Options for [`ImageStore::pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Platform to select from an index.
    pub platform: Platform,
    /// Talk plain HTTP (loopback or explicitly insecure registries).
    pub plain_http: bool,
    /// Accept invalid TLS certificates.
    pub insecure_tls: bool,
    /// Credentials.
    pub credentials: Credentials,
    /// Layers downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Unpack layers into snapshots (otherwise only fetch and verify).
    pub unpack: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            plain_http: false,
            insecure_tls: false,
            credentials: Credentials::Anonymous,
            max_concurrent_downloads: 3,
            unpack: true,
        }
    }
}

/// Progress of a pull, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The manifest is known.
    Resolved {
        /// Manifest digest.
        manifest: Digest,
        /// Layers (digest, size), bottom first.
        layers: Vec<(Digest, u64)>,
    },
    /// A layer is already in the store.
    LayerExists(Digest),
    /// Bytes of a layer arrived (cumulative).
    LayerProgress(Digest, u64),
    /// A layer is downloaded and verified.
    LayerDownloaded(Digest),
    /// A layer is unpacked.
    LayerUnpacked(Digest),
}

/// Receiver of [`PullEvent`]s.
pub type ProgressFn = Arc<dyn Fn(PullEvent) + Send + Sync>;

fn map_err(reference: &Reference, op: &str, e: OciDistributionError) -> PullError {
    let status = match &e {
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Some(401),
        OciDistributionError::ImageManifestNotFoundError(_) => Some(404),
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().find_map(|e| match e.code {
                oci_client::errors::OciErrorCode::Unauthorized
                | oci_client::errors::OciErrorCode::Denied => Some(401),
                oci_client::errors::OciErrorCode::ManifestUnknown
                | oci_client::errors::OciErrorCode::NameUnknown
                | oci_client::errors::OciErrorCode::BlobUnknown => Some(404),
                _ => None,
            })
        }
        _ => None,
    };
    let registry = reference.resolve_registry().to_owned();
    match status {
        Some(401 | 403) => PullError::Unauthorized {
            reference: reference.whole(),
            registry,
        },
        Some(404) => PullError::NotFound {
            reference: reference.whole(),
            registry,
        },
        _ => PullError::Registry {
            reference: reference.whole(),
            op: op.to_owned(),
            source: e,
        },
    }
}

fn descriptor(d: &Digest, size: u64, media_type: &str) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: d.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// Streams one blob into the store, verifying digest and size.
async fn fetch_blob(
    client: &Client,
    store: &ImageStore,
    reference: &Reference,
    d: &Digest,
    size: u64,
    media_type: &str,
    progress: &ProgressFn,
) -> Result<(), ImageError> {
    if store.blobs.contains(d, size) {
        return Ok(());
    }
    let mut stream = client
        .pull_blob_stream(reference, &descriptor(d, size, media_type))
        .await
        .map_err(|e| map_err(reference, &format!("fetch blob {d}"), e))?;
    let mut w = store.blobs.writer(Some((d.clone(), size)))?;
    let mut last = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| PullError::Registry {
            reference: reference.whole(),
            op: format!("fetch blob {d}"),
            source: OciDistributionError::IoError(e),
        })?;
        // Page-cache writes of one network chunk are short enough to do
        // inline on the runtime; hashing happens in the same pass.
        w.write_chunk(&chunk)?;
        if w.written() - last >= 256 * 1024 {
            last = w.written();
            progress(PullEvent::LayerProgress(d.clone(), last));
        }
    }
    progress(PullEvent::LayerProgress(d.clone(), w.written()));
    w.commit()?;
    Ok(())
}

impl ImageStore {
    /// Pulls `reference` and registers it under its normalized name.
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<ImageRecord, ImageError> {
        let parsed: Reference =
            reference
                .parse()
                .map_err(|e: oci_client::ParseError| PullError::BadReference {
                    reference: reference.into(),
                    reason: e.to_string(),
                })?;
        let _lock = self.writer_lock()?;
        let client = Client::new(ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: opts.insecure_tls,
            platform_resolver: None,
            max_concurrent_download: opts.max_concurrent_downloads.max(1),
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("herd/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        });
        let auth = match &opts.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        };
        client
            .auth(&parsed, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| map_err(&parsed, "authenticate", e))?;

        let (bytes, digest) = client
            .pull_manifest_raw(&parsed, &auth, manifest::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_err(&parsed, "fetch manifest", e))?;
        let (mut bytes, mut digest) = (
            bytes.to_vec(),
            self.check_manifest_digest(&bytes, &digest, &parsed)?,
        );
        let mut index = None;
        let mut media_type = None;
        let doc = match manifest::parse_document(&bytes, &digest, None)? {
            Document::Index(idx) => {
                let chosen = manifest::select_platform(&idx, &digest, &opts.platform)?;
                let chosen_digest = manifest::descriptor_digest(chosen)?;
                let mt = chosen.media_type().to_string();
                self.blobs.put(&bytes)?;
                index = Some(digest);
                let by_digest = parsed.clone_with_digest(chosen_digest.to_string());
                let (b, d) = client
                    .pull_manifest_raw(&by_digest, &auth, manifest::ACCEPTED_MANIFESTS)
                    .await
                    .map_err(|e| map_err(&parsed, "fetch platform manifest", e))?;
                digest = self.check_manifest_digest(&b, &d, &by_digest)?;
                if digest != chosen_digest {
                    return Err(BlobError::DigestMismatch {
                        expected: chosen_digest,
                        actual: digest,
                    }
                    .into());
                }
                bytes = b.to_vec();
                media_type = Some(mt);
                match manifest::parse_document(&bytes, &digest, media_type.as_deref())? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(crate::manifest::ManifestError::Malformed {
                            what: "index",
                            digest: digest.to_string(),
                            reason: "nested index inside an index".into(),
                        }
                        .into());
                    }
                }
            }
            Document::Manifest(m) => m,
        };
        let media_type = doc
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .or(media_type)
            .unwrap_or_else(|| manifest::OCI_MANIFEST.into());
        let layers: Vec<(Digest, u64, String)> = doc
            .layers()
            .iter()
            .map(|l| {
                Ok((
                    manifest::descriptor_digest(l)?,
                    l.size(),
                    l.media_type().to_string(),
                ))
            })
            .collect::<Result<_, ImageError>>()?;
        progress(PullEvent::Resolved {
            manifest: digest.clone(),
            layers: layers.iter().map(|(d, s, _)| (d.clone(), *s)).collect(),
        });

        // Config first (small): it carries the diff IDs needed to unpack.
        let config = manifest::descriptor_digest(doc.config())?;
        let config_size = doc.config().size();
        fetch_blob(
            &client,
            self,
            &parsed,
            &config,
            config_size,
            doc.config().media_type().as_ref(),
            &progress,
        )
        .await?;
        let cfg_bytes = self
            .blobs
            .read_verified(&config, manifest::MAX_CONFIG_SIZE)?;
        let info = manifest::parse_config(&cfg_bytes, &config, layers.len())?;
        let records: Vec<LayerRecord> = layers
            .iter()
            .zip(&info.diff_ids)
            .map(|((d, s, mt), diff)| LayerRecord {
                digest: d.clone(),
                size: *s,
                media_type: mt.clone(),
                diff_id: diff.clone(),
            })
            .collect();

        self.download_and_unpack(&client, &parsed, &records, opts, &progress)
            .await?;

        let manifest_digest = self.blobs.put(&bytes)?;
        let name = parsed.whole();
        let rec = self.record_from(
            |_, _| Ok(()),
            name,
            &manifest_digest,
            bytes.len() as u64,
            &media_type,
            index,
            &doc,
        )?;
        self.register(rec.clone())?;
        Ok(rec)
    }

    fn check_manifest_digest(
        &self,
        bytes: &[u8],
        reported: &str,
        reference: &Reference,
    ) -> Result<Digest, ImageError> {
        let actual = Digest::of(bytes);
        if let Some(pinned) = reference.digest() {
            let expected: Digest = pinned
                .parse()
                .map_err(crate::manifest::ManifestError::from)?;
            if expected != actual {
                return Err(BlobError::DigestMismatch { expected, actual }.into());
            }
        }
        if let Ok(r) = reported.parse::<Digest>()
            && r != actual
        {
            return Err(BlobError::DigestMismatch {
                expected: r,
                actual,
            }
            .into());
        }
        Ok(actual)
    }

    async fn download_and_unpack(
        &self,
        client: &Client,
        reference: &Reference,
        layers: &[LayerRecord],
        opts: &PullOptions,
        progress: &ProgressFn,
    ) -> Result<(), ImageError> {
        let mut downloads =
            futures_util::stream::iter(layers.iter().enumerate().map(|(i, l)| async move {
                if self.blobs.contains(&l.digest, l.size) {
                    progress(PullEvent::LayerExists(l.digest.clone()));
                } else {
                    fetch_blob(
                        client,
                        self,
                        reference,
                        &l.digest,
                        l.size,
                        &l.media_type,
                        progress,
                    )
                    .await?;
                    progress(PullEvent::LayerDownloaded(l.digest.clone()));
                }
                Ok::<usize, ImageError>(i)
            }))
            .buffer_unordered(opts.max_concurrent_downloads.max(1));

        let mut done = BTreeMap::new();
        let mut next_unpack = 0usize;
        let mut unpacking: Option<tokio::task::JoinHandle<Result<(), ImageError>>> = None;
        let mut downloads_left = layers.len();
        loop {
            // Start the next unpack when its layer is in and none is running.
            if opts.unpack
                && unpacking.is_none()
                && next_unpack < layers.len()
                && done.contains_key(&next_unpack)
            {
                let store = self.clone();
                let stack = layers[..=next_unpack].to_vec();
                let digest = layers[next_unpack].digest.clone();
                let progress = progress.clone();
                unpacking = Some(tokio::task::spawn_blocking(move || {
                    store.ensure_snapshots(&stack, &mut |_, _| {})?;
                    progress(PullEvent::LayerUnpacked(digest));
                    Ok(())
                }));
                next_unpack += 1;
            }
            if downloads_left == 0
                && (unpacking.is_none() && (!opts.unpack || next_unpack == layers.len()))
            {
                return Ok(());
            }
            tokio::select! {
                Some(res) = downloads.next(), if downloads_left > 0 => {
                    let i = res?;
                    done.insert(i, ());
                    downloads_left -= 1;
                }
                res = async { match unpacking.as_mut() { Some(h) => h.await, None => std::future::pending().await } }, if unpacking.is_some() => {
                    unpacking = None;
                    res.map_err(|e| PullError::Task(e.to_string()))??;
                }
            }
        }
    }
}
